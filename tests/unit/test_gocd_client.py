"""The GoCD client against the contract-faithful fake: what it sends, and how each failure comes out."""

from __future__ import annotations

import threading

import pytest

from mlflow_ext.clients.gocd import GoCDClient
from mlflow_ext.errors import ConfigError, GoCDRejected, GoCDUnavailable
from tests.support.fake_gocd import FakeGoCD

TOKEN = "tok-a8d1e07c5b"
PASSWORD = "pw-93c1f0e4aa"
VARIABLES = {"MLFLOW_MODEL_NAME": "iris", "MLFLOW_MODEL_VERSION": "3"}
GATED = "iris-release-production"


@pytest.fixture
def gocd():
    with FakeGoCD(tokens={TOKEN: "bridge"}, users={"alice": PASSWORD}) as fake:
        fake.add_pipeline("iris-release", variables=[*VARIABLES, "DEPLOY_KEY"], stages=["evaluate", "deploy"])
        fake.add_pipeline(GATED, stages=["evaluate", "deploy"], manual=["deploy"])
        yield fake


@pytest.fixture
def client(gocd):
    with GoCDClient(gocd.url, token=TOKEN, timeout=5) as client:
        yield client


def assert_secret_free(error: BaseException) -> None:
    for text in (str(error), repr(error), repr(error.args)):
        assert TOKEN not in text and PASSWORD not in text


# -- success ---------------------------------------------------------------------------------------


def test_schedule_passes_variables_and_returns_gocds_message(gocd, client):
    assert client.schedule("iris-release", VARIABLES) == "Request to schedule pipeline iris-release accepted"
    [accepted] = gocd.schedules()
    assert (accepted.pipeline, accepted.counter, accepted.approver) == ("iris-release", 1, "bridge")
    assert accepted.variables == VARIABLES and accepted.secure == frozenset()


def test_secure_variables_are_marked_secure(gocd, client):
    client.schedule("iris-release", {**VARIABLES, "DEPLOY_KEY": "k"}, secure={"DEPLOY_KEY"})
    assert gocd.schedules()[0].secure == {"DEPLOY_KEY"}


def test_history_and_instance_read_what_was_scheduled(client):
    client.schedule("iris-release", VARIABLES)
    client.schedule("iris-release", VARIABLES)
    history = client.history("iris-release")
    assert [i["counter"] for i in history] == [2, 1]
    instance = client.instance("iris-release", 2)
    assert (
        instance["build_cause"]["approver"] == "bridge" and instance["build_cause"]["trigger_forced"] is True
    )
    assert instance["scheduled_date"] == history[0]["scheduled_date"]


def test_pause_status_and_unpause(client):
    assert client.status("iris-release")["schedulable"] is True
    assert client.pause("iris-release", "model freeze") == "Pipeline 'iris-release' paused successfully."
    status = client.status("iris-release")
    assert (status["paused"], status["paused_cause"], status["paused_by"]) == (True, "model freeze", "bridge")
    assert client.unpause("iris-release") == "Pipeline 'iris-release' unpaused successfully."
    assert client.status("iris-release")["paused"] is False


def test_run_stage_approves_a_manual_gate(client):
    client.schedule(GATED, {})
    assert client.run_stage(GATED, 1, "deploy") == f"Request to schedule stage {GATED}/1/deploy accepted"
    deploy = client.instance(GATED, 1)["stages"][1]
    assert deploy["scheduled"] is True and deploy["approved_by"] == "bridge"


def test_one_keep_alive_connection_serves_many_calls(gocd, client):
    for _ in range(5):
        client.status("iris-release")
    assert gocd.open_connections() == 1


@pytest.mark.parametrize("suffix", ["", "/", "/go", "/go/"])
def test_base_url_with_or_without_go(gocd, suffix):
    with GoCDClient(gocd.url + suffix, token=TOKEN) as client:
        assert client.status("iris-release")["paused"] is False
        assert (
            client.instance_url("iris-release", 4)
            == f"{gocd.url}/go/pipelines/value_stream_map/iris-release/4"
        )


def test_basic_auth(gocd):
    with GoCDClient(gocd.url, username="alice", password=PASSWORD) as client:
        client.schedule("iris-release", VARIABLES)
    assert gocd.schedules()[0].approver == "alice"


def test_basic_auth_needs_a_password(gocd):
    with pytest.raises(ConfigError):
        GoCDClient(gocd.url, username="alice")


@pytest.mark.parametrize("url", ["", "gocd.example.com:8154/go", "ftp://gocd"])
def test_the_url_needs_a_scheme(url):
    with pytest.raises(ConfigError):
        GoCDClient(url, token=TOKEN)


# -- rejected: 4xx, with GoCD's message ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"token": "not-the-token"}, 401, "You are not authorized to access this resource!"),
        ({"username": "alice", "password": "wrong"}, 401, "Invalid credentials. Either your username"),
        ({}, 401, "You are not authorized to access this resource!"),
    ],
)
def test_bad_credentials_are_rejected(gocd, kwargs, status, message):
    with GoCDClient(gocd.url, **kwargs) as client, pytest.raises(GoCDRejected) as error:
        client.schedule("iris-release", VARIABLES)
    assert (error.value.status, error.value.pipeline) == (status, "iris-release")
    assert error.value.message.startswith(message)
    assert_secret_free(error.value)


def test_unknown_pipeline_is_rejected_with_404(client):
    with pytest.raises(GoCDRejected) as error:
        client.schedule("nope", VARIABLES)
    assert (error.value.status, error.value.pipeline) == (404, "nope")
    assert error.value.message == "Pipeline 'nope' not found."
    assert "GoCD answered 404 for pipeline nope" in str(error.value)


def test_paused_pipeline_is_rejected_with_409(gocd, client):
    gocd.pause("iris-release", cause="freeze")
    with pytest.raises(GoCDRejected) as error:
        client.schedule("iris-release", VARIABLES)
    assert error.value.status == 409
    assert (
        error.value.message == "Failed to trigger pipeline [iris-release] { Pipeline iris-release is paused }"
    )
    assert gocd.schedules() == []


def test_undeclared_variable_is_rejected_with_422(gocd, client):
    with pytest.raises(GoCDRejected) as error:
        client.schedule("iris-release", {**VARIABLES, "SURPRISE": "1"})
    assert error.value.status == 422
    assert "Variable 'SURPRISE' has not been configured for pipeline 'iris-release'" in error.value.message
    assert gocd.schedules() == []


def test_unknown_stage_and_second_pause_are_rejected(gocd, client):
    client.schedule("iris-release", VARIABLES)
    with pytest.raises(GoCDRejected) as error:
        client.run_stage("iris-release", 1, "nope")
    assert error.value.status == 404
    client.pause("iris-release", "one")
    with pytest.raises(GoCDRejected) as error:
        client.pause("iris-release", "two")
    assert error.value.status == 409


# -- unavailable: worth retrying -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_unavailable_and_the_next_call_succeeds(gocd, client, status):
    gocd.fail_next(1, status=status)
    with pytest.raises(GoCDUnavailable) as error:
        client.schedule("iris-release", VARIABLES)
    assert not isinstance(error.value, GoCDRejected)
    assert str(status) in str(error.value)
    assert_secret_free(error.value)
    assert client.schedule("iris-release", VARIABLES)
    assert [s.counter for s in gocd.schedules()] == [1]


def test_gocd_down_is_unavailable_until_it_comes_back(gocd, client):
    client.status("iris-release")  # leaves a pooled keep-alive connection for go_down() to cut
    gocd.go_down()
    with pytest.raises(GoCDUnavailable) as error:
        client.schedule("iris-release", VARIABLES)
    assert_secret_free(error.value)
    assert gocd.url in str(error.value)
    gocd.come_back()
    client.schedule("iris-release", VARIABLES)
    assert len(gocd.schedules()) == 1


def test_timeout_is_unavailable(gocd):
    gocd.hold_schedules()
    try:
        with (
            GoCDClient(gocd.url, token=TOKEN, timeout=0.3) as client,
            pytest.raises(GoCDUnavailable) as error,
        ):
            client.schedule("iris-release", VARIABLES)
    finally:
        gocd.release_schedules()
    assert "did not answer within 0.3s" in str(error.value)
    assert_secret_free(error.value)
    # GoCD recorded the trigger although the client never heard back: why the bridge needs idempotency.
    assert len(gocd.schedules()) == 1


def test_concurrent_callers_share_one_client(gocd, client):
    threads = [threading.Thread(target=client.schedule, args=("iris-release", VARIABLES)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.counter for s in gocd.schedules()) == list(range(1, 11))


def test_the_token_never_shows(gocd):
    client = GoCDClient(gocd.url, token=TOKEN)
    basic = GoCDClient(gocd.url, username="alice", password=PASSWORD)
    assert TOKEN not in repr(client) and PASSWORD not in repr(basic)
    assert "bearer" in repr(client) and "basic" in repr(basic)


def test_a_trigger_still_queued_is_rejected_with_409_already_triggered():
    # Unlike 409 paused, this one passes once GoCD has created the queued instance: worth a retry.
    with FakeGoCD(trigger_seconds=5) as fake, GoCDClient(fake.url) as client:
        fake.add_pipeline("p")
        client.schedule("p", {})
        with pytest.raises(GoCDRejected) as error:
            client.schedule("p", {})
    assert error.value.status == 409 and "Pipeline already triggered" in error.value.message
