"""The receiver as a server: oversized bodies are refused unread, a slow outbox stalls nothing else, outbox
writes at once are bounded, and shutdown answers what is in progress and returns in bounded time."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from mlflow_ext.bridge import outbox as outbox_module
from mlflow_ext.bridge import receiver as receiver_module
from mlflow_ext.bridge import signature
from mlflow_ext.bridge.receiver import Receiver, serve_in_thread
from mlflow_ext.routing import Router

SECRET = "receiver-secret-0123456789"
SLOW = "iris-slow"


class GatedOutbox(outbox_module.Outbox):
    """An outbox whose writes for the model ``iris-slow`` wait for ``release``; counts writes in progress."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.delay = 0.0
        self.active = 0
        self.most = 0
        self._count = threading.Lock()

    def accept(self, event: Any, *args: Any, **kwargs: Any) -> Any:
        with self._count:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if event.model == SLOW:
                self.entered.set()
                assert self.release.wait(20), "the test never released the slow write"
            time.sleep(self.delay)
            return super().accept(event, *args, **kwargs)
        finally:
            with self._count:
                self.active -= 1


@pytest.fixture
def start(tmp_path):
    started: list[tuple[Receiver, threading.Thread, Any]] = []
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {model: 'iris*', alias: champion, pipeline: iris-release}\n")

    def _start(**kwargs: Any) -> Receiver:
        engine = outbox_module.create_db_engine(f"sqlite:///{tmp_path / f'outbox{len(started)}.db'}")
        outbox_module.migrate(engine)
        server = Receiver(("127.0.0.1", 0), SECRET, 300, GatedOutbox(engine), Router(str(routes)), **kwargs)
        thread = serve_in_thread(server)
        server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
        started.append((server, thread, engine))
        return server

    yield _start
    for server, thread, engine in started:
        server.outbox.release.set()  # type: ignore[attr-defined]
        server.shutdown(10)
        server.server_close()
        thread.join(5)
        engine.dispose()


def body(name: str = "iris") -> bytes:
    stamp = datetime.now(UTC).isoformat()
    data = {"name": name, "alias": "champion", "version": "1"}
    return json.dumps(
        {"entity": "model_version_alias", "action": "created", "timestamp": stamp, "data": data}
    ).encode()


def post(server: Any, payload: bytes, timeout: float = 10) -> requests.Response:
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        signature.DELIVERY_ID_HEADER: delivery_id,
        signature.TIMESTAMP_HEADER: stamp,
        signature.SIGNATURE_HEADER: signature.sign(SECRET, delivery_id, stamp, payload),
    }
    return requests.post(server.url + "/webhook", data=payload, headers=headers, timeout=timeout)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after
    ``within`` seconds."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection is still open after {within} s; received {received[:200]!r}")
    return received


def test_a_2_mib_body_is_refused_from_its_length_alone_and_the_connection_closed(start):
    server = start()
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # 2 MiB announced, 4 KiB sent: a server that reads the body before deciding never answers, and one
        # that keeps the connection to drain the body never closes it.
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2097152\r\n\r\n" + b"x" * 4096
        )
        answer = read_until_closed(sock, 3)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert json.loads(payload) == {"error": "body too large"}
    # The whole 2 MiB sent by an ordinary client: the same answer, and the receiver serves on.
    big = requests.post(server.url + "/webhook", data=b"x" * (2 * 1024 * 1024), timeout=5)
    assert big.status_code == 413
    assert post(server, body()).status_code == 200
    assert server.outbox.counts()["pending"] == 1


def test_a_body_without_a_length_is_refused_unread(start):
    server = start()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: bridge\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"
            + b"x" * 4096
        )
        answer = read_until_closed(sock, 3)
    assert answer.startswith(b"HTTP/1.1 411 ")


def test_other_paths_and_methods(start):
    server = start()
    assert requests.get(server.url + "/nowhere", timeout=5).status_code == 404
    assert requests.post(server.url + "/health", data=b"{}", timeout=5).status_code == 405
    wrong = requests.get(server.url + "/webhook", timeout=5)
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "POST")
    health = requests.get(server.url + "/health", timeout=5)
    assert health.headers["Server"] == "mlflow-ext-bridge"


def test_a_slow_outbox_write_holds_up_neither_health_nor_another_delivery(start):
    server = start()
    box = server.outbox
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, server, body(SLOW))
        assert box.entered.wait(5)
        try:
            health = requests.get(server.url + "/health", timeout=2)
            other = post(server, body("iris-fast"), timeout=2)
            assert not slow.done()
        finally:
            box.release.set()
        assert slow.result(10).json() == {"accepted": True, "outcome": "new", "triggers": 1}
    assert health.json() == {"status": "ok"}
    assert other.json() == {"accepted": True, "outcome": "new", "triggers": 1}
    assert box.most == 2


def test_outbox_writes_at_once_are_bounded_and_the_rest_wait(start):
    server = start(workers=2)
    box = server.outbox
    box.delay = 0.2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(server, body(f"iris-{i}")), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert box.most == 2
    assert box.counts()["pending"] == 8


def test_health_answers_while_every_write_slot_is_taken(start):
    server = start(workers=1)
    box = server.outbox
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, server, body(SLOW))
        assert box.entered.wait(5)
        queued = pool.submit(post, server, body("iris-next"))
        try:
            assert requests.get(server.url + "/health", timeout=2).json() == {"status": "ok"}
            time.sleep(0.3)
            assert not queued.done() and box.active == 1
        finally:
            box.release.set()
        assert slow.result(10).status_code == queued.result(10).status_code == 200
    assert box.most == 1


def test_shutdown_answers_the_delivery_in_progress_then_returns(start):
    server = start()
    box = server.outbox
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, server, body(SLOW))
        assert box.entered.wait(5)
        stopping = pool.submit(server.shutdown, 10)
        time.sleep(0.5)
        with pytest.raises(requests.ConnectionError):  # no longer accepting
            requests.get(server.url + "/health", timeout=2)
        assert not stopping.done()
        box.release.set()
        assert slow.result(10).status_code == 200
        began = time.monotonic()
        assert stopping.result(10) is True
        assert time.monotonic() - began < 2
    assert [r.model for r in box.rows(("pending",))] == [SLOW]


def test_shutdown_is_bounded_when_a_write_hangs(start, monkeypatch):
    monkeypatch.setattr(receiver_module, "SHUTDOWN_GRACE_S", 1)
    server = start()
    box = server.outbox
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, server, body(SLOW))
        assert box.entered.wait(5)
        began = time.monotonic()
        assert server.shutdown(10) is True
        assert time.monotonic() - began < 3
        try:
            answer: Any = slow.result(5)
        except requests.RequestException as exc:
            answer = exc
        # Cut off, never acknowledged: MLflow's retry or the reconcile loop brings the event again.
        assert getattr(answer, "status_code", None) != 200
