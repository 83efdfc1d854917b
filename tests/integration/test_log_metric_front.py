"""Log-metric answered in front of Flask (``auth.log_metric``), against Flask's own answers.

Side by side: the session's platform serves log-metric with the front (on by default); a second server on
the same databases runs with ``MLFLOW_EXT_FAST_LOG_METRIC=false``, so Flask answers every call there. Each
principal sends the same sequence to both on one keep-alive connection, as a training job does, every
request three times (the front answers a repeat once Flask has let it through): the answers and the
stored metrics must be the same.

In a worker's app, driven request by request: which requests reached Flask. A repeat from a user whose
log-metric Flask let through is answered by the front and stored; a permission revoked, a token revoked, a
run deleted, a wrong password are each noticed at the next request (Flask answers it, as it would).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.test_auth_tokens import TIMEOUT, admin, new_token, new_user
from tests.support.services import MlflowServer, Platform
from tests.support.worker_app import WORKER_STORES

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
LOG_METRIC = f"{API}/runs/log-metric"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
RUN = "<run>"  # replaced by each server's own run id
NOW = 1_700_000_000_000
REPEATS = 3


@pytest.fixture(scope="module")
def flask_server(platform: Platform) -> Iterator[MlflowServer]:
    """A replica on the same databases whose log-metric calls all go to Flask."""
    replica = MlflowServer({**platform.server.env, "MLFLOW_EXT_FAST_LOG_METRIC": "false"}).start()
    try:
        yield replica
    finally:
        replica.stop()


def _experiment(platform: Platform, *grants: tuple[str, str]) -> str:
    boss = admin(platform)
    experiment_id = str(
        boss.ok("POST", f"{API}/experiments/create", {"name": f"front-{secrets.token_hex(4)}"})[
            "experiment_id"
        ]
    )
    for username, permission in grants:
        grant = {"resource_type": "experiment", "resource_id": experiment_id, "permission": permission}
        boss.ok("POST", GRANT, {"username": username, **grant})
    return experiment_id


def _run(platform: Platform, experiment_id: str) -> str:
    created = admin(platform).ok(
        "POST", f"{API}/runs/create", {"experiment_id": experiment_id, "start_time": NOW}
    )
    return str(created["run"]["info"]["run_id"])


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _history(platform: Platform, run_id: str) -> dict[str, list[tuple[int, int, Any]]]:
    boss = admin(platform)
    run = boss.ok("GET", f"{API}/runs/get", {"run_id": run_id})["run"]
    histories = {}
    for metric in run["data"].get("metrics", []):
        history = boss.ok(
            "GET", f"{API}/metrics/get-history", {"run_id": run_id, "metric_key": metric["key"]}
        )["metrics"]
        histories[metric["key"]] = sorted((m["step"], m["timestamp"], m["value"]) for m in history)
    return histories


def _metric(**fields: Any) -> dict[str, Any]:
    return {"run_id": RUN, "key": "loss", "value": 0.25, "timestamp": NOW, "step": 1, **fields}


# (what, who, body, content type): who is "writer" (EDIT), "reader" (READ), "token" (the writer's access
# token), "stranger" (a wrong password) or "nobody" (no credentials).
SEQUENCE: list[tuple[str, str, Any, str]] = [
    ("well-formed", "writer", _metric(), "application/json"),
    ("as MLflow's client sends it", "writer", _metric(run_uuid=RUN, step=9), "application/json"),
    (
        "an integer value, no step",
        "writer",
        {"run_id": RUN, "key": "acc", "value": 3, "timestamp": NOW},
        "application/json",
    ),
    ("a charset in the content type", "writer", _metric(step=2), "application/json; charset=utf-8"),
    ("by access token", "token", _metric(step=3), "application/json"),
    ("without EDIT", "reader", _metric(step=4), "application/json"),
    ("a wrong password", "stranger", _metric(step=5), "application/json"),
    ("no credentials", "nobody", _metric(step=6), "application/json"),
    ("a bad key: the store refuses it", "writer", _metric(key="../up"), "application/json"),
    ("value NaN as a string", "writer", _metric(value="NaN", step=7), "application/json"),
    ("value true", "writer", _metric(value=True), "application/json"),
    ("value beyond 2**53", "writer", _metric(value=2**64), "application/json"),
    ("timestamp a float", "writer", _metric(timestamp=1.5), "application/json"),
    ("step beyond int64", "writer", _metric(step=2**63), "application/json"),
    ("run_uuid", "writer", {"run_uuid": RUN, "key": "k", "value": 1.0, "timestamp": NOW}, "application/json"),
    ("run_uuid another run", "writer", _metric(run_uuid="0" * 32), "application/json"),
    ("model_id", "writer", _metric(model_id="m-1"), "application/json"),
    ("an unknown run", "writer", _metric(run_id="0" * 32), "application/json"),
    ("text/plain", "writer", _metric(step=8), "text/plain"),
    ("a JSON array", "writer", [1, 2], "application/json"),
]


def test_the_front_answers_and_stores_as_flask(platform, flask_server):
    writer, reader = new_user(platform, "front-w"), new_user(platform, "front-r")
    experiment_id = _experiment(platform, (writer[0], "EDIT"), (reader[0], "READ"))
    _, token = new_token(platform, writer[0])
    authorization = {
        "writer": _basic(*writer),
        "reader": _basic(*reader),
        "token": f"Bearer {token}",
        "stranger": _basic(writer[0], "not-" + writer[1]),
    }
    results = []
    for url in (platform.tracking_uri, flask_server.url):
        run_id = _run(platform, experiment_id)
        answers = []
        # One keep-alive connection per principal, from an address of its own (failed logins are counted
        # per address; the proxy in front sets X-Forwarded-For).
        sessions: dict[str, requests.Session] = {}
        for what, who, body, content_type in SEQUENCE:
            session = sessions.setdefault(who, requests.Session())
            headers = {
                "Content-Type": content_type,
                "X-Forwarded-For": f"10.77.{len(sessions)}.{len(results)}",
            }
            if who in authorization:
                headers["Authorization"] = authorization[who]
            data = json.dumps(body).replace(RUN, run_id)
            for attempt in range(1 if who == "stranger" else REPEATS):
                response = session.post(url + LOG_METRIC, data=data, headers=headers, timeout=TIMEOUT)
                seen = {
                    k.lower(): v for k, v in response.headers.items() if k.lower() not in ("date", "server")
                }
                answers.append(
                    (what, attempt, response.status_code, response.text.replace(run_id, RUN), seen)
                )
        for session in sessions.values():
            session.close()
        results.append((answers, _history(platform, run_id)))
    (front, front_stored), (flask, flask_stored) = results
    for ours, theirs in zip(front, flask, strict=True):
        assert ours == theirs, f"front {ours} != Flask {theirs}"
    assert front_stored == flask_stored
    statuses = {what: status for what, _, status, _, _ in front}
    assert (
        statuses["well-formed"]
        == statuses["by access token"]
        == statuses["as MLflow's client sends it"]
        == 200
    )
    assert (statuses["without EDIT"], statuses["a wrong password"], statuses["no credentials"]) == (
        403,
        401,
        401,
    )
    assert statuses["a bad key: the store refuses it"] == 400
    stored = set(front_stored["loss"])
    assert {(1, NOW, 0.25), (2, NOW, 0.25), (3, NOW, 0.25), (7, NOW, "NaN"), (9, NOW, 0.25)} <= stored, stored


DRIVE = (
    WORKER_STORES
    + r"""
import asyncio, json
from mlflow_ext.auth.app import create_app
served = create_app()

reached = []
mlflow_server.app.before_request_funcs.setdefault(None, []).insert(0, lambda: reached.append(1))


async def drive(request):
    body = request["body"].encode()
    headers = [(b"host", b"localhost"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in request["headers"].items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": request["path"], "raw_path": request["path"].encode(),
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000), "state": {},
    }
    sent = False
    answer = {"status": None, "body": b""}

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    del reached[:]
    await served(scope, receive, send)
    return {"status": answer["status"], "body": answer["body"].decode(), "flask": bool(reached)}


async def main():
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await drive(json.loads(line))), flush=True)

asyncio.run(main())
"""
)


class Worker:
    """A worker's app in a process of its own, driven one request at a time (credentials on stdin)."""

    def __init__(self, platform: Platform, runtime: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVE, str(platform.server.env_file), runtime],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            cwd=runtime,  # mlflow_ext as installed, as a worker imports it
        )

    def log(self, authorization: str, run_id: str, step: int, **fields: Any) -> tuple[int, bool]:
        """(status, whether Flask saw the request) of one log-metric call, with the body MLflow's client
        sends (the run's id as ``run_id`` and ``run_uuid``)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        metric = {"key": "m", "value": float(step), "timestamp": NOW, "step": step, **fields}
        request = {
            "path": LOG_METRIC,
            "headers": {"Authorization": authorization, "Content-Type": "application/json"},
            "body": json.dumps({"run_uuid": run_id, "run_id": run_id, **metric}),
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read()[-3000:] if self.process.poll() is not None else "no answer"
        answer = json.loads(line)
        return answer["status"], answer["flask"]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def worker(platform) -> Iterator[Worker]:
    with tempfile.TemporaryDirectory() as runtime:
        started = Worker(platform, runtime)
        try:
            yield started
        finally:
            started.stop()


def test_repeats_skip_flask_until_a_decision_may_have_changed(platform, worker):
    boss = admin(platform)
    username, password = new_user(platform, "front-d")
    experiment_id = _experiment(platform, (username, "EDIT"))
    run_id, other_run = _run(platform, experiment_id), _run(platform, _experiment(platform))
    writer = _basic(username, password)

    assert worker.log(writer, run_id, 1) == (200, True)  # Flask decides first
    assert worker.log(writer, run_id, 2) == (200, False)
    assert worker.log(writer, run_id, 3) == (200, False)
    assert worker.log(writer, other_run, 4) == (403, True)  # the decision is per run
    assert worker.log(writer, run_id, 5, model_id="m-1")[1] is True  # a body the front leaves to Flask
    assert worker.log(_basic(username, "wrong"), run_id, 6) == (401, True)

    permission = {"username": username, "resource_type": "experiment", "resource_id": experiment_id}
    boss.ok("POST", REVOKE, permission)
    assert worker.log(writer, run_id, 7) == (403, True)
    assert worker.log(writer, run_id, 7) == (403, True)  # the password verified again, the refusal stands
    boss.ok("POST", GRANT, {**permission, "permission": "EDIT"})
    assert worker.log(writer, run_id, 8) == (200, True)
    assert worker.log(writer, run_id, 9) == (200, False)

    token_id, token = new_token(platform, username)
    assert worker.log(f"Bearer {token}", run_id, 10) == (200, True)
    assert worker.log(f"Bearer {token}", run_id, 11) == (200, False)
    boss.ok("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": token_id})
    assert worker.log(f"Bearer {token}", run_id, 12) == (401, True)

    boss.ok("POST", f"{API}/runs/delete", {"run_id": run_id})
    status, flask = worker.log(writer, run_id, 13)
    assert (status, flask) == (400, True)  # the store refused it; Flask answered MLflow's error

    steps = [step for step, _, _ in _history(platform, run_id)["m"]]
    assert steps == [1, 2, 3, 8, 9, 10, 11]
