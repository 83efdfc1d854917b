"""Drift guard: the fake GoCD keeps GoCD's documented API contract, checked with raw HTTP requests.

Sources: https://api.gocd.org/current/#api-versions (Accept versions, 404 on a wrong one),
https://api.gocd.org/current/#authentication (bearer token, basic auth),
https://api.gocd.org/current/#scheduling-pipelines (202; environment_variables, materials),
https://api.gocd.org/current/#get-pipeline-status, #pause-a-pipeline, #unpause-a-pipeline,
https://api.gocd.org/current/#get-pipeline-history, #get-pipeline-instance (instance shape),
https://api.gocd.org/current/#run-stage (v2), and GoCD's server source (github.com/gocd/gocd) for
the exact messages: HaltApiMessages (415, 400), ScheduleOptionsBuilder (404 and 422 on schedule),
PipelinePauseChecker and PipelineTriggerService (409 paused, 409 already triggered),
AuthenticationController and the access-denied renderers (401).
These tests do not use mlflow_ext's client, so a convenience in one cannot hide behind the other.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from typing import Any

import pytest

from tests.support.fake_gocd import FakeGoCD

TOKEN = "tok-3f9a1c"
V1 = "application/vnd.go.cd.v1+json"
V2 = "application/vnd.go.cd.v2+json"
FINGERPRINT = "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"
WRONG_URL = "The url you are trying to reach appears to be incorrect."


@pytest.fixture
def gocd():
    with FakeGoCD(tokens={TOKEN: "bridge"}, users={"alice": "s3cret-pw"}) as fake:
        fake.add_pipeline("iris-release", variables=["MODEL", "SECRET"], materials=[FINGERPRINT])
        fake.add_pipeline("other", stages=["build", "deploy", "smoke"], manual=["deploy"])
        yield fake


def call(
    fake: FakeGoCD,
    method: str,
    path: str,
    accept: str | None = V1,
    auth: str | None = f"bearer {TOKEN}",
    body: Any = None,
    content_type: str | None = "application/json",
    confirm: bool = False,
) -> tuple[int, Any]:
    """One raw request: exactly the headers given, nothing added."""
    headers = {}
    if accept:
        headers["Accept"] = accept
    if auth:
        headers["Authorization"] = auth
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if content_type:
            headers["Content-Type"] = content_type
    if confirm:
        headers["X-GoCD-Confirm"] = "true"
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def schedule(fake: FakeGoCD, pipeline: str = "iris-release", **body: Any) -> tuple[int, Any]:
    return call(fake, "POST", f"/go/api/pipelines/{pipeline}/schedule", body=body)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- versions, content type, confirmation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "accept"),
    [
        ("POST", "/go/api/pipelines/iris-release/schedule", None),
        ("POST", "/go/api/pipelines/iris-release/schedule", "application/json"),
        ("POST", "/go/api/pipelines/iris-release/schedule", V2),
        ("GET", "/go/api/pipelines/iris-release/status", "application/vnd.go.cd.v3+json"),
        ("GET", "/go/api/pipelines/iris-release/history", None),
        ("POST", "/go/api/stages/other/1/deploy/run", V1),
        ("GET", "/go/api/pipelines/iris-release/schedule", V1),
        ("GET", "/go/api/no-such-thing", V1),
    ],
)
def test_wrong_accept_version_method_or_path_is_not_found(gocd, method, path, accept):
    body = {} if method == "POST" else None
    assert call(gocd, method, path, accept=accept, body=body) == (404, {"message": WRONG_URL})
    assert gocd.schedules() == []


def test_answers_carry_the_versioned_media_type(gocd):
    connection = http.client.HTTPConnection("127.0.0.1", gocd.port, timeout=5)
    headers = {"Accept": V1, "Authorization": f"bearer {TOKEN}"}
    connection.request("GET", "/go/api/pipelines/iris-release/status", headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.getheader("Content-Type") == f"{V1}; charset=utf-8"


def test_the_unversioned_media_type_means_latest(gocd):
    assert (
        call(gocd, "GET", "/go/api/pipelines/iris-release/status", accept="application/vnd.go.cd+json")[0]
        == 200
    )


def test_a_body_must_be_declared_json(gocd):
    path = "/go/api/pipelines/iris-release/schedule"
    expected = (415, {"message": "You must specify a 'Content-Type' of 'application/json'"})
    assert call(gocd, "POST", path, body={}, content_type="text/plain") == expected
    assert call(gocd, "POST", path, body={}, content_type=None) == expected
    assert call(gocd, "POST", path, body={}, content_type="application/json; charset=utf-8")[0] == 202


def test_a_post_without_body_must_confirm(gocd):
    path = "/go/api/pipelines/iris-release/schedule"
    expected = (400, {"message": "Missing required header 'X-GoCD-Confirm' with value 'true'"})
    assert call(gocd, "POST", path) == expected
    assert gocd.schedules() == []
    assert call(gocd, "POST", path, confirm=True) == (
        202,
        {"message": "Request to schedule pipeline iris-release accepted"},
    )


def test_malformed_json_is_a_bad_request(gocd):
    status, body = call(gocd, "POST", "/go/api/pipelines/iris-release/schedule", body=b"{not json")
    assert status == 400 and body["message"]


# -- authentication --------------------------------------------------------------------------------


NOT_AUTHORIZED = "You are not authorized to access this resource!"
BAD_CREDENTIALS = (
    "Invalid credentials. Either your username and password are incorrect, or there is a problem with your"
    " browser cookies. Please check with your administrator."
)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, NOT_AUTHORIZED),
        ("bearer wrong-token", NOT_AUTHORIZED),  # an unknown token counts as no credentials
        (f"token {TOKEN}", NOT_AUTHORIZED),
        (basic("alice", "wrong"), BAD_CREDENTIALS),
        (basic("mallory", "s3cret-pw"), BAD_CREDENTIALS),
        ("Basic %%%", BAD_CREDENTIALS),
    ],
)
def test_missing_or_invalid_credentials_are_unauthorized(gocd, auth, message):
    assert schedule(gocd)[0] == 202
    path = "/go/api/pipelines/iris-release/schedule"
    assert call(gocd, "POST", path, auth=auth, body={}) == (401, {"message": message})
    assert len(gocd.schedules()) == 1  # only the authenticated one above


def test_bearer_and_basic_users_become_the_approver(gocd):
    assert schedule(gocd)[0] == 202
    assert (
        call(
            gocd, "POST", "/go/api/pipelines/iris-release/schedule", auth=basic("alice", "s3cret-pw"), body={}
        )[0]
        == 202
    )
    assert [s.approver for s in gocd.schedules()] == ["bridge", "alice"]


def test_without_any_credentials_configured_security_is_off():
    with FakeGoCD() as fake:
        fake.add_pipeline("p")
        assert call(fake, "POST", "/go/api/pipelines/p/schedule", auth=None, body={})[0] == 202
        assert fake.schedules()[0].approver == "anonymous"


# -- scheduling ------------------------------------------------------------------------------------


def test_schedule_accepts_declared_variables_including_secure_ones(gocd):
    variables = [
        {"name": "MODEL", "value": "iris", "secure": False},
        {"name": "SECRET", "value": "x", "secure": True},
    ]
    status, body = schedule(gocd, environment_variables=variables, update_materials_before_scheduling=True)
    assert (status, body) == (202, {"message": "Request to schedule pipeline iris-release accepted"})
    [accepted] = gocd.schedules()
    assert (accepted.pipeline, accepted.counter, accepted.approver) == ("iris-release", 1, "bridge")
    assert accepted.variables == {"MODEL": "iris", "SECRET": "x"}
    assert accepted.secure == {"SECRET"}


def test_unknown_pipeline_is_not_found(gocd):
    assert schedule(gocd, "nope") == (404, {"message": "Pipeline 'nope' not found."})
    assert call(gocd, "POST", "/go/api/pipelines/nope/unpause", confirm=True) == (
        404,
        {"message": "Pipeline 'nope' not found."},
    )
    for path in (
        "/go/api/pipelines/nope/status",
        "/go/api/pipelines/nope/history",
        "/go/api/pipelines/nope/1",
    ):
        assert call(gocd, "GET", path) == (404, {"message": "Pipeline with name 'nope' was not found!"})


def test_pipeline_names_are_case_insensitive(gocd):
    assert schedule(gocd, "IRIS-Release")[0] == 202
    assert gocd.schedules()[0].pipeline == "iris-release"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {
                "environment_variables": [
                    {"name": "MODEL", "value": "a"},
                    {"name": "UNDECLARED", "value": "b"},
                ]
            },
            "Variable 'UNDECLARED' has not been configured for pipeline 'iris-release'",
        ),
        (
            {"environment_variables": [{"name": "NOPE", "value": "b", "secure": True}]},
            "Variable 'NOPE' has not been configured for pipeline 'iris-release'",
        ),
        (
            {"materials": [{"fingerprint": "0" * 64, "revision": "abc"}]},
            f"Pipeline 'iris-release' does not contain the following material(s): [{'0' * 64}].",
        ),
        (
            {"materials": [{"fingerprint": FINGERPRINT, "revision": " "}]},
            f"Material [{FINGERPRINT}] has empty revision",
        ),
    ],
)
def test_unprocessable_schedules_record_nothing(gocd, body, detail):
    assert schedule(gocd, **body) == (
        422,
        {"message": f"Request to schedule pipeline rejected {{ {detail} }}"},
    )
    assert gocd.schedules() == []
    assert schedule(gocd)[0] == 202
    assert gocd.schedules()[0].counter == 1  # a rejected trigger takes no counter


def test_a_variable_declared_later_is_accepted_and_counters_continue(gocd):
    body = {"environment_variables": [{"name": "NEW", "value": "1"}]}
    assert schedule(gocd)[0] == 202
    assert schedule(gocd, **body)[0] == 422
    gocd.add_pipeline("iris-release", variables=["MODEL", "SECRET", "NEW"], materials=[FINGERPRINT])
    assert schedule(gocd, **body)[0] == 202
    assert [(s.counter, s.variables) for s in gocd.schedules()] == [(1, {}), (2, {"NEW": "1"})]


def test_paused_pipeline_conflicts(gocd):
    gocd.pause("iris-release", cause="freeze")
    message = "Failed to trigger pipeline [iris-release] { Pipeline iris-release is paused }"
    assert schedule(gocd) == (409, {"message": message})
    assert gocd.schedules() == []


def test_a_queued_trigger_conflicts_until_gocd_has_created_its_instance():
    with FakeGoCD(trigger_seconds=0.4) as fake:
        fake.add_pipeline("p")
        fake.add_pipeline("q")
        path = "/go/api/pipelines/{}/schedule"
        assert call(fake, "POST", path.format("p"), body={})[0] == 202
        assert call(fake, "POST", path.format("p"), body={}) == (
            409,
            {"message": "Failed to trigger pipeline: p { Pipeline already triggered }"},
        )
        assert call(fake, "POST", path.format("q"), body={})[0] == 202  # other pipelines are not blocked
        assert call(fake, "GET", "/go/api/pipelines/p/history")[1]["pipelines"] == []
        assert call(fake, "GET", "/go/api/pipelines/p/1")[0] == 404
        fake.wait_for_schedules(1, "p")
        time.sleep(0.5)
        assert [i["counter"] for i in call(fake, "GET", "/go/api/pipelines/p/history")[1]["pipelines"]] == [1]
        assert call(fake, "POST", path.format("p"), body={})[0] == 202
        assert [s.counter for s in fake.schedules("p")] == [1, 2]


def test_counters_increase_per_pipeline(gocd):
    for pipeline in ("iris-release", "other", "iris-release"):
        assert schedule(gocd, pipeline)[0] == 202
    assert [(s.pipeline, s.counter) for s in gocd.schedules()] == [
        ("iris-release", 1),
        ("other", 1),
        ("iris-release", 2),
    ]


def test_concurrent_triggers_get_distinct_counters(gocd):
    threads = [threading.Thread(target=schedule, args=(gocd,)) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.counter for s in gocd.schedules()) == list(range(1, 31))


# -- history, instance, status ---------------------------------------------------------------------


def test_history_is_newest_first_in_gocd_instance_shape(gocd):
    schedule(gocd)
    schedule(gocd, materials=[{"fingerprint": FINGERPRINT, "revision": "1058e75b"}])
    status, body = call(gocd, "GET", "/go/api/pipelines/iris-release/history")
    assert status == 200
    newest, oldest = body["pipelines"]
    assert (newest["counter"], oldest["counter"]) == (2, 1)
    assert set(newest) >= {
        "name",
        "counter",
        "label",
        "natural_order",
        "scheduled_date",
        "build_cause",
        "stages",
    }
    assert (newest["name"], newest["label"], newest["natural_order"]) == ("iris-release", "2", 2.0)
    assert newest["scheduled_date"] >= oldest["scheduled_date"] > 1_600_000_000_000  # milliseconds
    cause = newest["build_cause"]
    assert (cause["trigger_message"], cause["trigger_forced"], cause["approver"]) == (
        "Forced by bridge",
        True,
        "bridge",
    )
    [material] = cause["material_revisions"]
    assert material["material"]["fingerprint"] == FINGERPRINT
    assert material["modifications"][0]["revision"] == "1058e75b"
    assert [stage["name"] for stage in newest["stages"]] == ["default"]


def test_history_pages(gocd):
    for _ in range(12):
        schedule(gocd)
    status, body = call(gocd, "GET", "/go/api/pipelines/iris-release/history?page_size=10")
    assert status == 200 and [i["counter"] for i in body["pipelines"]] == list(range(12, 2, -1))
    assert body["_links"]["next"]["href"].endswith("/go/api/pipelines/iris-release/history?after=3")
    status, body = call(gocd, "GET", "/go/api/pipelines/iris-release/history?after=3")
    assert [i["counter"] for i in body["pipelines"]] == [2, 1]


@pytest.mark.parametrize("size", ["9", "101", "ten"])
def test_history_page_size_is_bounded(gocd, size):
    status, body = call(gocd, "GET", f"/go/api/pipelines/iris-release/history?page_size={size}")
    assert status == 422 and "between 10 and 100" in body["message"]


def test_instance_by_counter(gocd):
    schedule(gocd)
    status, body = call(gocd, "GET", "/go/api/pipelines/iris-release/1")
    assert status == 200 and body["counter"] == 1 and body["build_cause"]["approver"] == "bridge"
    assert call(gocd, "GET", "/go/api/pipelines/iris-release/2") == (
        404,
        {"message": "Pipeline instance 'iris-release/2' was not found!"},
    )


def test_status_pause_and_unpause(gocd):
    path = "/go/api/pipelines/iris-release"
    assert call(gocd, "GET", f"{path}/status") == (
        200,
        {"paused": False, "paused_cause": "", "paused_by": "", "locked": False, "schedulable": True},
    )
    assert call(gocd, "POST", f"{path}/pause", body={"pause_cause": "freeze"}) == (
        200,
        {"message": "Pipeline 'iris-release' paused successfully."},
    )
    assert call(gocd, "GET", f"{path}/status")[1] == {
        "paused": True,
        "paused_cause": "freeze",
        "paused_by": "bridge",
        "locked": False,
        "schedulable": False,
    }
    assert call(gocd, "POST", f"{path}/pause", body={"pause_cause": "again"})[0] == 409
    assert call(gocd, "POST", f"{path}/unpause")[0] == 400  # no body, no confirmation
    assert call(gocd, "POST", f"{path}/unpause", confirm=True) == (
        200,
        {"message": "Pipeline 'iris-release' unpaused successfully."},
    )
    assert call(gocd, "POST", f"{path}/unpause", confirm=True)[0] == 409


# -- stages ----------------------------------------------------------------------------------------


def test_manual_stage_waits_until_run(gocd):
    schedule(gocd, "other")
    stages = {s["name"]: s for s in call(gocd, "GET", "/go/api/pipelines/other/1")[1]["stages"]}
    assert (
        stages["build"]["scheduled"]
        and not stages["deploy"]["scheduled"]
        and not stages["smoke"]["scheduled"]
    )
    assert stages["deploy"]["approval_type"] == "manual"
    path = "/go/api/stages/other/1/deploy/run"
    assert call(gocd, "POST", path, accept=V2)[0] == 400  # a body-less POST must confirm here too
    assert call(gocd, "POST", path, accept=V2, confirm=True) == (
        202,
        {"message": "Request to schedule stage other/1/deploy accepted"},
    )
    stages = {s["name"]: s for s in call(gocd, "GET", "/go/api/pipelines/other/1")[1]["stages"]}
    assert stages["deploy"]["scheduled"] and stages["deploy"]["approved_by"] == "bridge"
    assert stages["smoke"]["scheduled"]


@pytest.mark.parametrize("path", ["/go/api/stages/other/2/deploy/run", "/go/api/stages/other/1/nope/run"])
def test_running_an_unknown_stage_or_instance_is_not_found(gocd, path):
    schedule(gocd, "other")
    status, body = call(gocd, "POST", path, accept=V2, confirm=True)
    assert status == 404 and "was not found" in body["message"]


# -- test controls ---------------------------------------------------------------------------------


def test_fail_next_answers_5xx_then_recovers(gocd):
    gocd.fail_next(2, status=502)
    assert schedule(gocd)[0] == 502
    assert schedule(gocd)[0] == 502
    assert schedule(gocd)[0] == 202
    assert len(gocd.schedules()) == 1


def test_go_down_refuses_connections_and_come_back_keeps_port_and_state(gocd):
    schedule(gocd)
    port = gocd.port
    gocd.go_down()
    with pytest.raises(ConnectionRefusedError):
        schedule(gocd)
    gocd.come_back()
    assert gocd.port == port
    assert schedule(gocd)[0] == 202
    assert [s.counter for s in gocd.schedules()] == [1, 2]


def test_go_down_also_cuts_keep_alive_connections(gocd):
    connection = http.client.HTTPConnection("127.0.0.1", gocd.port, timeout=5)
    headers = {"Accept": V1, "Authorization": f"bearer {TOKEN}"}
    connection.request("GET", "/go/api/pipelines/iris-release/status", headers=headers)
    assert connection.getresponse().read()
    assert gocd.open_connections() == 1
    gocd.go_down()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("GET", "/go/api/pipelines/iris-release/status", headers=headers)
        connection.getresponse()
    connection.close()


def test_held_schedule_is_recorded_before_it_is_answered(gocd):
    gocd.hold_schedules()
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(schedule(gocd)))
    thread.start()
    assert [s.counter for s in gocd.wait_for_schedules(1)] == [1]
    thread.join(timeout=0.3)
    assert thread.is_alive() and answers == []
    gocd.release_schedules()
    thread.join(timeout=5)
    assert answers == [(202, {"message": "Request to schedule pipeline iris-release accepted"})]
