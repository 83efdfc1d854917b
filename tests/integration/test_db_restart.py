"""A PostgreSQL restart under load, on a platform of its own (auth on, every store on that Postgres).

While the database is down every answer is a 503 with MLflow's error JSON (``TEMPORARILY_UNAVAILABLE``,
which MLflow's client retries), never a 500 or an HTML page; once it is back, stale pooled
connections are replaced before use and calls succeed within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.integration.test_auth_tokens import TIMEOUT, Api, admin, new_user
from tests.support.services import Platform, running_platform

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
OUTAGE_SECONDS = 4.0
RECOVERY_LIMIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def own_platform() -> Iterator[Platform]:
    with running_platform() as started:
        yield started


@dataclass
class Answer:
    at: float
    status: int
    content_type: str
    body: str


@dataclass
class Recorder:
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, response: requests.Response) -> None:
        answer = Answer(
            time.monotonic(),
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.text[:300],
        )
        with self.lock:
            self.answers.append(answer)


def client_loop(api: Api, run_id: str, stop: threading.Event, recorder: Recorder) -> None:
    """log_metric + get_run, over and over, each on a fresh connection (so workers are spread)."""
    step = 0
    while not stop.is_set():
        step += 1
        try:
            recorder.add(
                api.call(
                    "POST",
                    f"{API}/runs/log-metric",
                    {
                        "run_id": run_id,
                        "key": "m",
                        "value": step,
                        "timestamp": int(time.time() * 1000),
                        "step": step,
                    },
                )
            )
            recorder.add(api.call("GET", f"{API}/runs/get", {"run_id": run_id}))
        except requests.RequestException as exc:  # the server itself must stay up
            with recorder.lock:
                recorder.errors.append(repr(exc))
        time.sleep(0.02)


def is_json_error(answer: Answer) -> bool:
    return answer.content_type.startswith("application/json") and '"error_code"' in answer.body


def test_clients_see_503_json_during_a_restart_and_recover_at_once(own_platform):
    platform = own_platform
    boss = admin(platform)
    username, password = new_user(platform, "restart")
    boss.ok("POST", "/api/2.0/mlflow-ext/rights/grant", {"username": username, "right": "create_experiment"})
    user = Api(platform.tracking_uri, username, password)
    experiment_id = user.ok("POST", f"{API}/experiments/create", {"name": "db-restart"})["experiment_id"]
    run_id = user.ok("POST", f"{API}/runs/create", {"experiment_id": experiment_id})["run"]["info"]["run_id"]

    recorder = Recorder()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(api, run_id, stop, recorder), daemon=True)
        for api in (boss, user, user)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        platform.postgres.halt()
        down_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        resume_started = time.monotonic()
        platform.postgres.resume()
        up_at = time.monotonic()
        # Until every thread has had a success after the restart, at most the recovery limit.
        deadline = up_at + RECOVERY_LIMIT_SECONDS + 5
        while time.monotonic() < deadline:
            with recorder.lock:
                if sum(1 for a in recorder.answers if a.at > up_at and a.status == 200) >= 6:
                    break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT + 5)

    answers = recorder.answers
    counts = Counter(a.status for a in answers)
    during = [a for a in answers if down_at < a.at < resume_started]
    after = [a for a in answers if a.at > up_at]
    first_ok = min((a.at for a in after if a.status == 200), default=None)
    recovery = None if first_ok is None else first_ok - up_at
    print(
        f"statuses overall {dict(sorted(counts.items()))}; during the outage "
        f"{dict(sorted(Counter(a.status for a in during).items()))}; after it "
        f"{dict(sorted(Counter(a.status for a in after).items()))}; recovery "
        f"{'none' if recovery is None else f'{recovery:.2f} s'} after Postgres was back"
    )
    assert not recorder.errors, recorder.errors[:3]
    bad = [a for a in answers if a.status not in (200, 503)]
    assert not bad, [(a.status, a.body) for a in bad[:5]]
    assert not [a for a in answers if "<html" in a.body.lower() or "<!doctype" in a.body.lower()]
    unavailable = [a for a in answers if a.status == 503]
    assert unavailable, "no request saw the outage"
    for answer in unavailable:
        assert is_json_error(answer), answer
        assert '"TEMPORARILY_UNAVAILABLE"' in answer.body, answer
        for needle in ("psycopg2", "SELECT", "Traceback", "127.0.0.1", str(platform.postgres.port)):
            assert needle not in answer.body, (needle, answer)
    assert during and all(a.status == 503 for a in during), Counter(a.status for a in during)
    assert recovery is not None and recovery < RECOVERY_LIMIT_SECONDS, recovery
    # Once one call succeeded, the pools are healthy again: nothing after it fails.
    assert all(a.status == 200 for a in after if a.at > first_ok + 1.0), Counter(a.status for a in after)


def test_mlflow_client_retries_the_503_until_postgres_is_back(own_platform, monkeypatch, caplog):
    from mlflow import MlflowClient

    platform = own_platform
    for name, value in {
        **platform.client_env(),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "8",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    }.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking_uri=platform.tracking_uri)
    experiment_id = client.create_experiment("client-retries")
    run_id = client.create_run(experiment_id).info.run_id

    caplog.set_level(logging.DEBUG, logger="urllib3.util.retry")
    platform.postgres.halt()
    restarter = threading.Timer(3.0, platform.postgres.resume)
    started = time.monotonic()
    restarter.start()
    try:
        client.log_metric(run_id, "retried", 1.0)
        elapsed = time.monotonic() - started
        assert client.get_run(run_id).data.metrics["retried"] == 1.0
    finally:
        restarter.join()
    # urllib3 logs each retry with the history of the answers that caused it.
    retried = [
        record.args[1].history[-1].status
        for record in caplog.records
        if str(record.msg).startswith("Incremented Retry") and record.args and record.args[1].history
    ]
    print(
        f"log_metric succeeded {elapsed:.2f} s after Postgres went down (back after 3 s); retried {retried}"
    )
    assert elapsed >= 2.5, "the call did not wait for the database"
    assert retried and set(retried) == {503}, retried
