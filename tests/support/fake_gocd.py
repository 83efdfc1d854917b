"""A fake GoCD server that keeps GoCD's API contract, for tests of the client, the bridge and the pipelines.

It is a real threaded HTTP server on 127.0.0.1 and a free port, so clients go through sockets, keep-alive
and timeouts exactly as against GoCD. It is strict on purpose: every request must carry the Accept version
of its endpoint, bodies must be JSON, body-less POSTs must confirm, credentials must be valid, and a
schedule is refused for any variable the pipeline does not declare. Status codes and messages follow
GoCD's API documentation (https://api.gocd.org/current/) and server source; tests/contract pins them.

Besides the API, the test controls: add_pipeline, pause/unpause, schedules(), go_down()/come_back()
(the listening socket really closes), fail_next() (answer 5xx), fail_for() (answer 5xx for a while) and
hold_schedules()/release_schedules() (record a trigger but keep its 202 until released, to kill a client
mid-delivery).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ANONYMOUS = "anonymous"
WRONG_URL = "The url you are trying to reach appears to be incorrect."
# An unknown token counts as no credentials (anonymous, then denied); a wrong password is refused outright.
NOT_AUTHORIZED = "You are not authorized to access this resource!"
BAD_CREDENTIALS = (
    "Invalid credentials. Either your username and password are incorrect, or there is a problem with your"
    " browser cookies. Please check with your administrator."
)
CONFIRM_MISSING = "Missing required header 'X-GoCD-Confirm' with value 'true'"
JSON_EXPECTED = "You must specify a 'Content-Type' of 'application/json'"
NOT_FOUND = "Pipeline '{}' not found."  # schedule, pause, unpause; the read endpoints word it differently
# GoCD since 19.8 serves the newest version for this unversioned media type.
LATEST = "application/vnd.go.cd+json"


@dataclass(frozen=True)
class Schedule:
    """One trigger GoCD accepted: what the pipeline instance was scheduled with, and by whom."""

    pipeline: str
    counter: int
    variables: dict[str, str]
    approver: str
    scheduled_at: float  # epoch seconds
    secure: frozenset[str] = frozenset()  # names of the variables sent as secure


@dataclass
class _Pipeline:
    name: str
    variables: frozenset[str]
    stages: tuple[str, ...]
    manual: frozenset[str]
    materials: tuple[str, ...]
    paused: bool = False
    paused_cause: str = ""
    paused_by: str = ""
    instances: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    ready_at: list[float] = field(default_factory=list)  # when each instance leaves GoCD's trigger queue

    def ready(self) -> list[dict[str, Any]]:
        """The instances GoCD has created: a trigger still queued has no instance in the API yet."""
        now = time.monotonic()
        return [i for i, at in zip(self.instances, self.ready_at, strict=True) if at <= now]


class _Reply(Exception):
    """Ends a request with GoCD's error shape: a status and {"message": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    version: int
    action: str


_NAME = r"(?P<name>[^/]+)"
_ROUTES = (
    _Route("POST", re.compile(rf"/go/api/pipelines/{_NAME}/schedule"), 1, "schedule"),
    _Route("GET", re.compile(rf"/go/api/pipelines/{_NAME}/status"), 1, "status"),
    _Route("POST", re.compile(rf"/go/api/pipelines/{_NAME}/pause"), 1, "pause"),
    _Route("POST", re.compile(rf"/go/api/pipelines/{_NAME}/unpause"), 1, "unpause"),
    _Route("GET", re.compile(rf"/go/api/pipelines/{_NAME}/history"), 1, "history"),
    _Route("GET", re.compile(rf"/go/api/pipelines/{_NAME}/(?P<counter>\d+)"), 1, "instance"),
    _Route(
        "POST", re.compile(rf"/go/api/stages/{_NAME}/(?P<counter>\d+)/(?P<stage>[^/]+)/run"), 2, "run_stage"
    ),
)


class FakeGoCD:
    """GoCD's pipeline API on 127.0.0.1:<free port>; use as a context manager or start()/stop().

    ``tokens`` maps bearer tokens to user names, ``users`` basic-auth user names to passwords. With
    neither, security is off as on a fresh GoCD server: requests are served as ``anonymous``.

    ``trigger_seconds`` is how long an accepted trigger waits in GoCD's queue (material update, then
    the scheduler) before its instance exists. Meanwhile GoCD answers 409 "already triggered" to any
    other trigger of that pipeline, and history does not show the instance yet. The default 0 makes
    triggers instant; set it to test clients against that 409.
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        users: dict[str, str] | None = None,
        trigger_seconds: float = 0.0,
    ) -> None:
        self.trigger_seconds = trigger_seconds
        self._tokens = dict(tokens or {})
        self._users = dict(users or {})
        self._lock = threading.RLock()
        # Keyed by lower-case name: GoCD's pipeline names are case-insensitive.
        self._pipelines: dict[str, _Pipeline] = {}
        self._schedules: list[Schedule] = []
        self._failures: list[int] = []
        self._failing: tuple[float, int] | None = None  # (monotonic deadline, status) of fail_for()
        self._released = threading.Event()
        self._released.set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGoCD:
        self._listen(self.port)
        return self

    def stop(self) -> None:
        self._released.set()  # never leave a held request hanging
        self.go_down()

    def __enter__(self) -> FakeGoCD:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def go_down(self) -> None:
        """Close the listening socket and every open connection: clients get connection refused/reset."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    def come_back(self) -> None:
        """Listen again on the same port, with all pipelines, counters and schedules kept."""
        if self._server is None:
            self._listen(self.port)

    def _listen(self, port: int) -> None:
        server = _Server(("127.0.0.1", port), _Handler, self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"fake-gocd-{self.port}", daemon=True
        )
        self._thread.start()

    # -- test controls -----------------------------------------------------------------------------

    def add_pipeline(
        self,
        name: str,
        variables: Iterable[str] = (),
        stages: Iterable[str] = ("default",),
        materials: Iterable[str] = (),
        paused: bool = False,
        manual: Iterable[str] = (),
    ) -> None:
        """Declare a pipeline: its environment variables, stages (``manual`` ones wait for approval)
        and material fingerprints. Declaring it again changes its config, as a config-repo push
        would, and keeps its instances and pause state."""
        stages = tuple(stages)
        unknown = set(manual) - set(stages)
        if not stages or unknown:
            raise ValueError(f"pipeline {name}: stages {stages!r}, manual stages not among them: {unknown}")
        with self._lock:
            old = self._pipelines.get(name.lower()) or _Pipeline(name, frozenset(), (), frozenset(), ())
            self._pipelines[name.lower()] = replace(
                old,
                variables=frozenset(variables),
                stages=stages,
                manual=frozenset(manual),
                materials=tuple(materials),
            )
        if paused:
            self.pause(name)

    def pause(self, name: str, cause: str = "", by: str = "admin") -> None:
        with self._lock:
            pipeline = self._pipelines[name.lower()]
            pipeline.paused, pipeline.paused_cause, pipeline.paused_by = True, cause, by

    def unpause(self, name: str) -> None:
        with self._lock:
            pipeline = self._pipelines[name.lower()]
            pipeline.paused, pipeline.paused_cause, pipeline.paused_by = False, "", ""

    def schedules(self, pipeline: str | None = None) -> list[Schedule]:
        """Accepted triggers in the order GoCD accepted them, optionally of one pipeline."""
        with self._lock:
            return [s for s in self._schedules if pipeline is None or s.pipeline.lower() == pipeline.lower()]

    def wait_for_schedules(
        self, count: int, pipeline: str | None = None, timeout: float = 10.0
    ) -> list[Schedule]:
        """Block until at least ``count`` triggers were accepted; TimeoutError names how many came."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.schedules(pipeline)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} schedules after {timeout:.0f}s")
            time.sleep(0.01)

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` API calls answer ``status`` without doing anything."""
        with self._lock:
            self._failures.extend([status] * count)

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Every API call answers ``status`` without doing anything for the next ``seconds`` (0 ends it)."""
        with self._lock:
            self._failing = (time.monotonic() + seconds, status) if seconds > 0 else None

    def hold_schedules(self) -> None:
        """From now on a trigger is recorded at once but its 202 is only sent after release_schedules()."""
        self._released.clear()

    def release_schedules(self) -> None:
        self._released.set()

    def open_connections(self) -> int:
        """Client connections open right now (keep-alive shows as one connection for many calls)."""
        server = self._server
        if server is None:
            return 0
        with server.connections_lock:
            return len(server.connections)

    # -- the API -----------------------------------------------------------------------------------

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, Any, str]:
        """One API call: (status, JSON body, media type). Checks run in GoCD's order: auth, route and
        version, content type or confirmation, then the endpoint."""
        media = "application/json"
        with self._lock:
            if self._failures:
                status = self._failures.pop(0)
                return status, {"message": f"Fake GoCD answered {status} as asked."}, media
            if self._failing is not None and time.monotonic() < self._failing[0]:
                status = self._failing[1]
                return status, {"message": f"Fake GoCD answered {status} as asked."}, media
        try:
            user = self._authenticate(headers.get("authorization"))
            route, params = _route(method, urlsplit(target).path, headers.get("accept", ""))
            media = f"application/vnd.go.cd.v{route.version}+json"
            data = _read_body(headers, body) if method == "POST" else None
            query = {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}
            action: Callable[..., tuple[int, Any]] = getattr(self, f"_{route.action}")
            return (*action(user=user, data=data, query=query, **params), media)
        except _Reply as reply:
            return reply.status, {"message": reply.message}, media

    def _authenticate(self, header: str | None) -> str:
        if not self._tokens and not self._users:
            return ANONYMOUS
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "bearer":
            for token, user in self._tokens.items():
                if hmac.compare_digest(token.encode(), credentials.strip().encode()):
                    return user
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                name, _, password = (
                    base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
                )
                expected = self._users.get(name)
                if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                    return name
            raise _Reply(401, BAD_CREDENTIALS)
        raise _Reply(401, NOT_AUTHORIZED)

    def _pipeline(self, name: str, missing: str = "Pipeline with name '{}' was not found!") -> _Pipeline:
        pipeline = self._pipelines.get(name.lower())
        if pipeline is None:
            raise _Reply(404, missing.format(name))
        return pipeline

    def _schedule(self, user: str, data: dict[str, Any] | None, name: str, **_: Any) -> tuple[int, Any]:
        data = data or {}
        with self._lock:
            pipeline = self._pipeline(name, missing=NOT_FOUND)
            revisions = self._check_materials(pipeline, data.get("materials") or [])
            variables, secure = self._check_variables(pipeline, data.get("environment_variables") or [])
            if pipeline.paused:
                message = (
                    f"Failed to trigger pipeline [{pipeline.name}] {{ Pipeline {pipeline.name} is paused }}"
                )
                raise _Reply(409, message)
            if pipeline.ready_at and pipeline.ready_at[-1] > time.monotonic():
                raise _Reply(
                    409, f"Failed to trigger pipeline: {pipeline.name} {{ Pipeline already triggered }}"
                )
            counter = len(pipeline.instances) + 1
            now = time.time()
            pipeline.instances.append(_instance(pipeline, counter, user, now, revisions))
            pipeline.ready_at.append(time.monotonic() + self.trigger_seconds)
            self._schedules.append(Schedule(pipeline.name, counter, variables, user, now, secure))
        # The trigger is recorded; a held answer models a client that dies before hearing back.
        self._released.wait()
        return 202, {"message": f"Request to schedule pipeline {pipeline.name} accepted"}

    @staticmethod
    def _check_materials(pipeline: _Pipeline, materials: list[Any]) -> dict[str, str]:
        rejected = "Request to schedule pipeline rejected"
        revisions = {}
        for material in materials:
            fingerprint = str(material.get("fingerprint", ""))
            if fingerprint not in pipeline.materials:
                detail = (
                    f"Pipeline '{pipeline.name}' does not contain the following material(s): [{fingerprint}]."
                )
                raise _Reply(422, f"{rejected} {{ {detail} }}")
            revision = str(material.get("revision") or "")
            if not revision.strip():
                raise _Reply(422, f"{rejected} {{ Material [{fingerprint}] has empty revision }}")
            revisions[fingerprint] = revision
        return revisions

    @staticmethod
    def _check_variables(pipeline: _Pipeline, variables: list[Any]) -> tuple[dict[str, str], frozenset[str]]:
        values, secure = {}, set()
        for variable in variables:
            name = str(variable.get("name", ""))
            if name not in pipeline.variables:
                detail = f"Variable '{name}' has not been configured for pipeline '{pipeline.name}'"
                raise _Reply(422, f"Request to schedule pipeline rejected {{ {detail} }}")
            values[name] = str(variable.get("value", ""))
            if variable.get("secure"):
                secure.add(name)
        return values, frozenset(secure)

    def _status(self, name: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            p = self._pipeline(name)
            return 200, {
                "paused": p.paused,
                "paused_cause": p.paused_cause,
                "paused_by": p.paused_by,
                "locked": False,
                "schedulable": not p.paused,
            }

    def _pause(self, user: str, data: dict[str, Any] | None, name: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            p = self._pipeline(name, missing=NOT_FOUND)
            if p.paused:
                raise _Reply(
                    409, f"Failed to pause pipeline '{p.name}'. Pipeline '{p.name}' is already paused."
                )
            p.paused, p.paused_cause, p.paused_by = True, str((data or {}).get("pause_cause") or ""), user
            return 200, {"message": f"Pipeline '{p.name}' paused successfully."}

    def _unpause(self, name: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            p = self._pipeline(name, missing=NOT_FOUND)
            if not p.paused:
                raise _Reply(
                    409, f"Failed to unpause pipeline '{p.name}'. Pipeline '{p.name}' is not paused."
                )
            p.paused, p.paused_cause, p.paused_by = False, "", ""
            return 200, {"message": f"Pipeline '{p.name}' unpaused successfully."}

    def _history(self, name: str, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        size = query.get("page_size", "10")
        if not size.isdigit() or not 10 <= int(size) <= 100:
            message = "The query parameter 'page_size', if specified must be a number between 10 and 100."
            raise _Reply(422, message)
        with self._lock:
            p = self._pipeline(name)
            ready = p.ready()
            newest_first = [json.loads(json.dumps(i)) for i in reversed(ready)]
        if "after" in query:  # cursors are counters: older than `after`, newer than `before`
            newest_first = [i for i in newest_first if i["counter"] < int(query["after"])]
        if "before" in query:
            newest_first = [i for i in newest_first if i["counter"] > int(query["before"])][-int(size) :]
        page = newest_first[: int(size)]
        links = {}
        if page and page[-1]["counter"] > 1:
            links["next"] = {
                "href": f"{self.url}/go/api/pipelines/{p.name}/history?after={page[-1]['counter']}"
            }
        if page and page[0]["counter"] < len(ready):
            links["previous"] = {
                "href": f"{self.url}/go/api/pipelines/{p.name}/history?before={page[0]['counter']}"
            }
        return 200, {"_links": links, "pipelines": page}

    def _instance(self, name: str, counter: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            p = self._pipeline(name)
            ready = p.ready()
            if not 1 <= int(counter) <= len(ready):
                raise _Reply(404, f"Pipeline instance '{p.name}/{counter}' was not found!")
            return 200, json.loads(json.dumps(ready[int(counter) - 1]))

    def _run_stage(self, user: str, name: str, counter: str, stage: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            p = self._pipeline(name)
            ready = p.ready()
            if not 1 <= int(counter) <= len(ready) or stage not in p.stages:
                raise _Reply(404, f"Stage '{stage}' of pipeline instance '{p.name}/{counter}' was not found!")
            stages = ready[int(counter) - 1]["stages"]
            start = p.stages.index(stage)
            for index, item in enumerate(stages[start:], start):
                if index > start and p.stages[index] in p.manual:
                    break  # the next manual gate waits for its own approval
                item.update(scheduled=True, status="Building", result="Unknown", approved_by=user)
            return 202, {"message": f"Request to schedule stage {p.name}/{counter}/{stage} accepted"}


def _route(method: str, path: str, accept: str) -> tuple[_Route, dict[str, str]]:
    """The endpoint for this path, method and Accept version; GoCD answers 404 for any mismatch."""
    offered = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    for route in _ROUTES:
        match = route.pattern.fullmatch(path)
        if (
            match
            and route.method == method
            and offered & {f"application/vnd.go.cd.v{route.version}+json", LATEST}
        ):
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
    raise _Reply(404, WRONG_URL)


def _read_body(headers: dict[str, str], body: bytes | None) -> dict[str, Any] | None:
    """GoCD's rule for writes: a body must be JSON (415), no body needs X-GoCD-Confirm: true (400)."""
    if not body:
        if headers.get("x-gocd-confirm", "").lower() != "true":
            raise _Reply(400, CONFIRM_MISSING)
        return None
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _Reply(415, JSON_EXPECTED)
    try:
        data = json.loads(body)
    except ValueError:
        raise _Reply(400, "Payload data is not a valid JSON object.") from None
    if not isinstance(data, dict):
        raise _Reply(400, "Payload data is not a valid JSON object.")
    return data


def _instance(
    pipeline: _Pipeline, counter: int, user: str, now: float, revisions: dict[str, str]
) -> dict[str, Any]:
    """A pipeline instance in GoCD's v1 shape, as history and instance return it."""
    millis = int(now * 1000)
    material_revisions = [
        {
            "changed": fingerprint in revisions,
            "material": {
                "name": fingerprint[:12],
                "fingerprint": fingerprint,
                "type": "Git",
                "description": "",
            },
            "modifications": [
                {
                    "revision": revisions.get(fingerprint, f"{fingerprint[:8]}{counter:032x}"),
                    "modified_time": millis,
                    "user_name": user,
                    "comment": "",
                    "email_address": None,
                }
            ],
        }
        for fingerprint in pipeline.materials
    ]
    stages: list[dict[str, Any]] = []
    waiting = False
    for stage in pipeline.stages:
        waiting = waiting or stage in pipeline.manual
        stages.append(
            {
                "result": "Unknown",
                "status": "Unknown" if waiting else "Building",
                "rerun_of_counter": None,
                "name": stage,
                "counter": "1",
                "scheduled": not waiting,
                "approval_type": "manual" if stage in pipeline.manual else "success",
                "approved_by": None if waiting else user,
                "operate_permission": True,
                "can_run": True,
                "jobs": [],
            }
        )
    return {
        "name": pipeline.name,
        "counter": counter,
        "label": str(counter),
        "natural_order": float(counter),
        "can_run": True,
        "preparing_to_schedule": False,
        "comment": None,
        "scheduled_date": millis,
        "build_cause": {
            "trigger_message": f"Forced by {user}",
            "trigger_forced": True,
            "approver": user,
            "material_revisions": material_revisions,
        },
        "stages": stages,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # come_back() rebinds the same port at once
    request_queue_size = 128  # the default 5 drops bursts of connections (a 1 s SYN retry each)

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeGoCD
    ) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections cut by go_down() end in socket errors: expected, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut keep-alive connections too: a GoCD that went down answers nothing on them."""
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as GoCD's Jetty
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this each keep-alive answer waits for the
        # client's delayed ACK (~40 ms), which no real GoCD behind Jetty does.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, media = self.server.fake._handle(method, self.path, headers, self._body(headers))
        encoded = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{media}; charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def _body(self, headers: dict[str, str]) -> bytes | None:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()  # the blank line after the last chunk
            return b"".join(chunks)
        length = int(headers.get("content-length") or 0)
        return self.rfile.read(length) if length else None

    def log_message(self, format: str, *args: Any) -> None:  # tests stay quiet
        pass
