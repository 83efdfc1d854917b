"""The client store's kept-alive post sends the request MLflow's client sends, answers as it answers, and
leaves to MLflow's ``http_request`` whatever it would send otherwise.

Against a recording HTTP server on 127.0.0.1 (and a TLS terminator with a self-signed certificate in front
of it): headers, path and body beside MLflow's own store; one connection for many calls; an error raised
as MLflow raises it, after one request; a retried status and a dropped connection; a forked process; a
proxy in the environment; certificate checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_ext import mlflow_internals, rest_store
from tests.support.answering import self_signed
from tests.support.environ import patched_environ
from tests.support.recording_http import Answer, RecordingServer, Request
from tests.support.tls_front import TlsFront

RUN = "a" * 32
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pässword"}
# What a store is told by the server for a metric named so.
REFUSAL = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Got invalid value for metric 'refused'"}


def _answer(request: Request) -> Answer:
    key = json.loads(request.body).get("key") if request.body.startswith(b"{") else None
    if key == "refused":
        return Answer(400, json.dumps(REFUSAL).encode())
    if key == "forbidden-text":
        return Answer(403, b"not for you")
    if key == "not-json":  # as a captive portal or a misrouted proxy might answer
        return Answer(200, b"<html>sign in</html>")
    if key == "drop":
        return Answer(drop_after=True)
    return Answer()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer(_answer) as recording:
        yield recording


def _metric(key: str, value: float = 1.0, step: int = 0) -> Any:
    from mlflow.entities import Metric

    return Metric(key, value, 1_700_000_000_000, step)


def _stores(url: str) -> tuple[Any, Any]:
    """The platform's client store and MLflow's own, for ``url``."""
    with patched_environ({"MLFLOW_EXT_FAST_CLIENT": "true"}):
        fast = rest_store.build(url)
    assert type(fast) is rest_store.FastRestStore
    return fast, mlflow_internals.mlflow_rest_store(url)


@pytest.fixture
def no_mlflow_http(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """MLflow's ``http_request`` replaced by one that records its endpoint and refuses."""
    from mlflow.utils import rest_utils

    called: list[str] = []

    def refuse(host_creds: Any, endpoint: str, method: str, **kwargs: Any) -> Any:
        called.append(endpoint)
        raise ConnectionError("MLflow's http_request was used")

    monkeypatch.setattr(rest_utils, "http_request", refuse)
    return called


def test_the_request_is_the_one_mlflow_sends(server: RecordingServer) -> None:
    with patched_environ(CREDENTIALS):
        fast, mlflow_store = _stores(server.url)
        fast.log_metric(RUN, _metric("loss", 0.5, 3))
        mlflow_store.log_metric(RUN, _metric("loss", 0.5, 3))
        fast.log_batch(RUN, [_metric("acc", 0.25)], [], [])
        mlflow_store.log_batch(RUN, [_metric("acc", 0.25)], [], [])
    ours_metric, theirs_metric, ours_batch, theirs_batch = server.requests
    for ours, theirs in ((ours_metric, theirs_metric), (ours_batch, theirs_batch)):
        assert ours.path == theirs.path
        assert json.loads(ours.body) == json.loads(theirs.body)
        for header in ("Authorization", "Content-Type", "User-Agent"):
            assert ours.headers[header] == theirs.headers[header], header
    assert ours_metric.headers["Authorization"].startswith("Basic ")


def test_calls_share_one_connection_without_mlflows_http_request(
    server: RecordingServer, no_mlflow_http: list[str]
) -> None:
    with patched_environ({"MLFLOW_TRACKING_TOKEN": "t0ken"}):
        fast, _ = _stores(server.url)
        for step in range(20):
            fast.log_metric(RUN, _metric("loss", 1.0 / (step + 1), step))
        fast.log_batch(RUN, [_metric("acc", 0.5, step) for step in range(5)], [], [])
    assert no_mlflow_http == []
    assert len(server.requests) == 21
    assert len({request.port for request in server.requests}) == 1  # kept alive
    assert server.requests[0].headers["Authorization"] == "Bearer t0ken"
    assert [json.loads(r.body)["step"] for r in server.requests[:20]] == list(range(20))


def test_an_error_is_mlflows_error_after_one_request(server: RecordingServer) -> None:
    from mlflow.exceptions import MlflowException

    fast, mlflow_store = _stores(server.url)
    codes = {}
    for key in ("refused", "forbidden-text", "not-json"):
        raised = []
        for store in (fast, mlflow_store):
            before = len(server.requests)
            with pytest.raises(MlflowException) as caught:
                store.log_metric(RUN, _metric(key))
            assert len(server.requests) == before + 1, "sent again: a wrong password would count twice"
            raised.append((type(caught.value), caught.value.error_code, str(caught.value)))
        assert raised[0] == raised[1], key
        codes[key] = raised[0][1]
    assert codes == {
        "refused": "INVALID_PARAMETER_VALUE",
        "forbidden-text": "PERMISSION_DENIED",
        "not-json": "INTERNAL_ERROR",
    }


def test_a_status_mlflow_retries_goes_to_its_retries() -> None:
    seen: list[int] = []

    def flaky(request: Request) -> Answer:
        seen.append(1)
        return Answer(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}') if len(seen) == 1 else Answer()

    env = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    with RecordingServer(flaky) as server, patched_environ(env):
        fast, _ = _stores(server.url)
        fast.log_metric(RUN, _metric("loss"))
    assert len(server.requests) == 2  # this post's, answered 503, then MLflow's, answered 200


def test_a_connection_the_server_dropped_is_opened_again(
    server: RecordingServer, no_mlflow_http: list[str]
) -> None:
    fast, _ = _stores(server.url)
    fast.log_metric(RUN, _metric("drop"))  # answered, then the server closes without a word
    fast.log_metric(RUN, _metric("after", step=1))
    assert no_mlflow_http == []
    assert [json.loads(r.body)["key"] for r in server.requests] == ["drop", "after"]  # each sent once
    assert server.requests[0].port != server.requests[1].port


def test_a_forked_process_opens_its_own_connection(server: RecordingServer) -> None:
    fast, _ = _stores(server.url)
    fast.log_metric(RUN, _metric("parent"))
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's outcome is its exit status
        try:
            fast.log_metric(RUN, _metric("child"))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fast.log_metric(RUN, _metric("parent-again"))
    ports = {json.loads(r.body)["key"]: r.port for r in server.requests}
    assert ports["child"] != ports["parent"]
    assert ports["parent-again"] == ports["parent"]  # the parent's connection was left alone


def test_a_proxy_in_the_environment_is_left_to_mlflow(
    server: RecordingServer, no_mlflow_http: list[str]
) -> None:
    fast, _ = _stores(server.url)
    proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    with patched_environ(proxy), pytest.raises(ConnectionError, match="http_request was used"):
        fast.log_metric(RUN, _metric("loss"))
    assert no_mlflow_http == ["/api/2.0/mlflow/runs/log-metric"]
    assert server.requests == []


def test_a_workspace_is_left_to_mlflow(server: RecordingServer, no_mlflow_http: list[str]) -> None:
    fast, _ = _stores(server.url)
    # MLflow first asks the server whether it has workspaces (this one has not: it refuses).
    with patched_environ({"MLFLOW_WORKSPACE": "team-a"}), pytest.raises(Exception, match="server-info"):
        fast.log_batch(RUN, [_metric("loss")], [], [])
    assert server.requests == []  # nothing posted


def test_certificates_are_checked_as_mlflows_client_checks_them(
    server: RecordingServer, tmp_path: Path
) -> None:
    from mlflow.exceptions import MlflowException

    cert, key = self_signed(tmp_path)
    with TlsFront(server.port, str(cert), str(key)) as front:
        url = f"https://localhost:{front.port}"
        with patched_environ({"MLFLOW_TRACKING_SERVER_CERT_PATH": str(cert)}):
            fast, _ = _stores(url)
            fast.log_metric(RUN, _metric("trusted"))
        with patched_environ({"MLFLOW_TRACKING_INSECURE_TLS": "true"}):
            _stores(url)[0].log_metric(RUN, _metric("unchecked"))
        # Not trusted: refused at once (MLflow's client would otherwise retry for minutes).
        untrusted = {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        with patched_environ(untrusted):
            fast, mlflow_store = _stores(url)
            refused = []
            for store in (fast, mlflow_store):
                with pytest.raises(MlflowException) as caught:
                    store.log_metric(RUN, _metric("untrusted"))
                refused.append(str(caught.value).split(" failed with exception")[0])
        assert refused[0] == refused[1]
    assert [json.loads(r.body)["key"] for r in server.requests] == ["trusted", "unchecked"]
