"""Malformed requests and database failures, answered as MLflow answers errors and never leaked.

MLflow's handlers trust their input more than a shared server can: a JSON root that is an array, deep
nesting (``RecursionError`` in the JSON decoder), an object where a number belongs (``TypeError`` in its
schema check) or a NUL byte (which PostgreSQL refuses) end as Flask's HTML 500 page or as an error JSON
whose message is PostgreSQL's, SQLAlchemy's statement and parameters included. A database that is down
gives the same HTML 500 when the auth app reads it. Three pieces, installed by ``app.create_app``:

- ``Guard``, a pure-ASGI middleware in front of everything (Flask's routes and FastAPI's), checks what
  can be checked before any store is touched: no NUL in the path or query; JSON request bodies of the
  REST API parse, have an object at the root, nest at most ``MAX_JSON_DEPTH`` levels and carry no NUL;
  metric values, timestamps and steps have the types MLflow stores; a page token that holds an offset
  holds a non-negative 64-bit one. Such a request gets 400 ``INVALID_PARAMETER_VALUE``.
- ``handle_exception``, Flask's handler for any exception a view or hook lets out: a failure while
  MLflow reads the request is a 400, a database or artifact store that cannot be reached (or is full) a
  503 ``TEMPORARILY_UNAVAILABLE`` (which MLflow's client retries, backing off exponentially: no
  Retry-After, which would replace that backoff with a fixed wait), anything else a 500; always MLflow's
  error JSON. ``Guard`` does the
  same for exceptions FastAPI lets out.
- ``Guard`` also reads every error answer of the API before it leaves: a message that carries SQL,
  a driver's or SQLAlchemy's text, a traceback or the artifact store's address is replaced by a plain
  one (the server's log keeps the details), and an answer that is not JSON (an HTML page, a plain
  "Permission denied") becomes MLflow's error JSON with the same status.

Successful answers and artifact transfers pass untouched and unbuffered. A body the guard decoded is
shared with the app behind it (``shared_body``), so it is decoded once per request
(``mlflow_ext.auth.log_batch`` hands it to Flask as the request's JSON).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import logging
import math
import re
import types
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from mlflow_ext import mlflow_internals

_logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

MAX_JSON_DEPTH = 64
INT64_MAX = 2**63 - 1
# Error answers larger than this are passed on as they are (MLflow's are a few hundred bytes).
MAX_ERROR_BODY = 1 << 20

# The REST API (its errors are JSON); the UI's pages and static files are left alone.
API_PREFIXES = ("/api/", "/ajax-api/", "/get-artifact", "/model-versions/get-artifact", "/v1/")
# Bodies that are data, not requests: artifact uploads (a .json artifact is sent as application/json).
UNCHECKED_BODY_MARKERS = ("/mlflow-artifacts/", "upload-artifact")
# JSON-RPC allows an array at the root (a batch).
ANY_ROOT_MARKERS = ("/mcp-servers",)
# Parameters that name one resource: MLflow's validators look them up before its handlers parse the
# request, and a list or an object there fails inside them.
IDENTIFIERS = (
    "experiment_id",
    "run_id",
    "run_uuid",
    "name",
    "new_name",
    "version",
    "alias",
    "key",
    "model_id",
    "trace_id",
    "request_id",
    "username",
    "resource_id",
    "resource_type",
    "permission",
    "role_id",
    "page_token",
)
METRIC_ROUTES = ("/mlflow/runs/log-metric", "/mlflow/runs/log-batch")

INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
BAD_REQUEST = "BAD_REQUEST"
INTERNAL_ERROR = "INTERNAL_ERROR"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"

MESSAGE_NUL = "Request parameters must not contain NUL characters."
MESSAGE_DATABASE_DOWN = "The database is temporarily unavailable; retry the request."
MESSAGE_DATABASE_REFUSED = (
    "The database refused a value of this request (a wrong type, or a number out of range)."
)
MESSAGE_MALFORMED = "Malformed request: a parameter has the wrong type or shape."
MESSAGE_INTERNAL = "Internal error; the server's log has the details."
MESSAGE_ARTIFACT_MISSING = "No artifact at that path."
MESSAGE_ARTIFACT_STORE = "The artifact store failed; the server's log has the details."
MESSAGE_ARTIFACT_STORE_DOWN = "The artifact store is temporarily unavailable; retry the request."

# Text that only a database driver, SQLAlchemy or a traceback writes.
_LEAK_MARKERS = (
    "[SQL:",
    "[parameters:",
    "psycopg",
    "sqlalche",
    "sqlalchemy",
    "Traceback (most recent call last)",
    "(Background on this error",
    'File "',
    # libpq's words when it cannot connect or the server goes away: they name the database's address.
    "connection to server",
    "server closed the connection",
)
_STORE_MARKERS = ("s3://", "gs://", "wasbs://", "abfss://", "hdfs://", "file://", "while downloading")
# What a parameter of an unexpected shape raises in MLflow's validators.
_SHAPE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError)
_CODE_BY_STATUS = {
    400: BAD_REQUEST,
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: BAD_REQUEST,
    409: "RESOURCE_CONFLICT",
    413: "RESOURCE_EXHAUSTED",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: TEMPORARILY_UNAVAILABLE,
}
# A JSON string escape of NUL not itself escaped (``\\u0000`` is the text "\u0000", not a NUL).
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def error_body(error_code: str, message: str) -> bytes:
    return json.dumps({"error_code": error_code, "message": message}).encode()


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


# --- request checks ---------------------------------------------------------------------------


def _walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value in a decoded JSON document with its depth, iteratively (no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict):
            for key, child in item.items():
                yield key, depth + 1
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _nests_too_deep(document: Any) -> bool:
    """Whether a value sits deeper than ``MAX_JSON_DEPTH`` (the root is level 1; a key or an element is one
    level below its container): whether a non-empty object or array sits at that level or below. Only the
    containers are visited, without a generator: a log-batch body holds thousands of values."""
    stack = [(document, 1)] if type(document) is dict or type(document) is list else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        if not children:
            continue
        if depth >= MAX_JSON_DEPTH:
            return True
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def problem_in_document(document: Any, any_root: bool = False) -> str | None:
    """What is wrong with a document ``decode_json`` decoded, or None. No string of such a document holds a
    NUL (``decode_json`` refuses the body), except in the JSON of an old client, encoded twice."""
    encoded_twice = isinstance(document, str)
    if encoded_twice:  # MLflow accepts the JSON of old clients encoded twice
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):
            return "Malformed request body: expected a JSON object."
    if not any_root and not isinstance(document, dict | None):
        return "Malformed request body: expected a JSON object at the root."
    if not encoded_twice:
        if _nests_too_deep(document):
            return f"Malformed request body: nested more than {MAX_JSON_DEPTH} levels."
        return None
    for item, depth in _walk(document):
        if depth > MAX_JSON_DEPTH:
            return f"Malformed request body: nested more than {MAX_JSON_DEPTH} levels."
        if isinstance(item, str) and "\x00" in item:
            return MESSAGE_NUL
    return None


def decode_json(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, None
    # The pattern only where its text is (JSON's escapes are lower case; upper case is refused anyway).
    if b"\x00" in raw or ((b"u0000" in raw or b"U0000" in raw) and _ESCAPED_NUL.search(raw)):
        return None, MESSAGE_NUL
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, f"Malformed request body: nested more than {MAX_JSON_DEPTH} levels."
    except ValueError:
        return None, "Malformed request body: not valid JSON."


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _is_int64(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return False
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return False
        value = int(value)
    return isinstance(value, int) and -INT64_MAX - 1 <= value <= INT64_MAX


def problem_in_metric(metric: Any, where: str) -> str | None:
    if not isinstance(metric, dict):
        return f"Malformed request: {where} must be an object."
    value = metric.get("value")
    # The types a client sends first (a float, an int in range), then the full checks.
    if value is not None and type(value) is not float and type(value) is not int and not _is_number(value):
        return f"Malformed request: {where}.value must be a number."
    for field in ("timestamp", "step"):
        number = metric.get(field)
        if number is None or (type(number) is int and -INT64_MAX - 1 <= number <= INT64_MAX):
            continue
        if not _is_int64(number):
            return f"Malformed request: {where}.{field} must be a 64-bit integer."
    return None


def problem_in_metrics(path: str, document: Any) -> str | None:
    """log-metric and log-batch: the values MLflow stores as numbers must be numbers."""
    if not isinstance(document, dict) or not path.endswith(METRIC_ROUTES):
        return None
    if path.endswith("/log-metric"):
        return problem_in_metric(document, "the metric")
    metrics = document.get("metrics")
    if metrics is None:
        return None
    if not isinstance(metrics, list):
        return "Malformed request: metrics must be a list."
    for index, metric in enumerate(metrics):
        if problem := problem_in_metric(metric, f"metrics[{index}]"):
            return problem
    return None


def problem_in_page_token(token: Any) -> str | None:
    """MLflow's SQL stores page with base64 of ``{"offset": n}``: n must be a non-negative int64."""
    if token is None or token == "":
        return None
    if not isinstance(token, str):
        return "Malformed request: page_token must be a string."
    try:
        decoded = json.loads(base64.b64decode(token, validate=False))
    except (binascii.Error, ValueError, RecursionError):
        return None  # not an offset token: MLflow answers it
    if not isinstance(decoded, dict):
        return "Invalid page token."
    if "offset" in decoded:
        offset = decoded["offset"]
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= INT64_MAX:
            return "Invalid page token: the offset must be a non-negative integer."
    return None


def problem_in_query(path: str, query_string: bytes) -> str | None:
    if "\x00" in path or b"%00" in query_string.lower() or b"\x00" in query_string:
        return MESSAGE_NUL
    if not is_api_path(path) or b"page_token" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1")):
        if name == "page_token" and (problem := problem_in_page_token(value)):
            return problem
    return None


def checks_body(scope: Scope) -> bool:
    path = scope["path"]
    if scope["method"] not in ("POST", "PATCH", "DELETE") or not is_api_path(path):
        return False
    if any(marker in path for marker in UNCHECKED_BODY_MARKERS):
        return False
    content_type = _header(scope, b"content-type")
    return content_type is None or content_type.split(";")[0].strip().lower() == "application/json"


def checked_body(path: str, raw: bytes) -> tuple[Any, str | None]:
    """The decoded body and the problem with it (None when it passes): one ``json.loads`` for both."""
    document, problem = decode_json(raw)
    if problem:
        return None, problem
    return document, _problem_in_document(path, document)


def _problem_in_document(path: str, document: Any) -> str | None:
    any_root = any(marker in path for marker in ANY_ROOT_MARKERS)
    if problem := problem_in_document(document, any_root=any_root):
        return problem
    if isinstance(document, str):
        document = json.loads(document)
    if isinstance(document, dict):
        for name in IDENTIFIERS:
            if isinstance(document.get(name), dict | list):
                return f"Malformed request: {name} must be a string."
        if problem := problem_in_page_token(document.get("page_token")):
            return problem
        return problem_in_metrics(path, document)
    return None


# The body of the current request as the guard read and decoded it, for the app behind it (Flask's
# request JSON, the log-batch route): a context variable, because MLflow's WSGI bridge hands Flask a
# fresh environ but runs it in a copy of the request's context.
_SHARED_BODY: contextvars.ContextVar[tuple[bytes, Any] | None] = contextvars.ContextVar(
    "mlflow_ext_shared_body", default=None
)


def shared_body() -> tuple[bytes, Any] | None:
    """(raw body, decoded JSON) of the current request if the guard decoded it, else None.

    The raw bytes come along so that a reader can check that the body it holds is the one decoded.
    """
    return _SHARED_BODY.get()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


# --- answers ----------------------------------------------------------------------------------


def leaks(message: str, extra: tuple[str, ...] = ()) -> bool:
    return any(marker in message for marker in _LEAK_MARKERS + extra)


def clean_error(status: int, error_code: str, message: str) -> tuple[int, str, str] | None:
    """A safe (status, error_code, message) for an error answer, or None when it is fine as it is."""
    if "NUL (0x00)" in message:
        return 400, INVALID_PARAMETER_VALUE, MESSAGE_NUL
    if leaks(message):
        if status == 503 or error_code == TEMPORARILY_UNAVAILABLE:
            return 503, TEMPORARILY_UNAVAILABLE, MESSAGE_DATABASE_DOWN
        if status < 500 or error_code == BAD_REQUEST:
            return 400, BAD_REQUEST, MESSAGE_DATABASE_REFUSED
        return 500, INTERNAL_ERROR, MESSAGE_INTERNAL
    if any(marker in message for marker in _STORE_MARKERS):
        if error_code == RESOURCE_DOES_NOT_EXIST or status == 404:
            return 404, RESOURCE_DOES_NOT_EXIST, MESSAGE_ARTIFACT_MISSING
        return status, error_code, MESSAGE_ARTIFACT_STORE
    # 501 and 503 say what the server will not or cannot do now (no presigned URLs, the database is down).
    if status >= 500 and status not in (501, 503) and message != MESSAGE_INTERNAL:
        return status, INTERNAL_ERROR, MESSAGE_INTERNAL
    return None


def rewrite_error(status: int, content_type: str, body: bytes) -> tuple[int, bytes] | None:
    """The clean answer for an error answer of the API, or None to send it unchanged."""
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            error = json.loads(body)
        except (ValueError, RecursionError):
            error = None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            cleaned = clean_error(status, str(error.get("error_code", "")), error["message"])
            if cleaned is None:
                return None
            return cleaned[0], error_body(cleaned[1], cleaned[2])
    text = body.decode("utf-8", errors="replace").strip()
    code = _CODE_BY_STATUS.get(status, INTERNAL_ERROR if status >= 500 else BAD_REQUEST)
    if status >= 500 and status != 503:
        return status, error_body(INTERNAL_ERROR, MESSAGE_INTERNAL)
    if not text or "<" in text or len(text) > 300 or leaks(text, _STORE_MARKERS):
        text = {404: "Not found.", 405: "Method not allowed."}.get(status, f"Request failed ({status}).")
    return status, error_body(code, text)


def _exceptions(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached (down, restarting, connection cut, pool exhausted)."""
    from sqlalchemy import exc as sa

    for item in _exceptions(exc):
        if isinstance(
            item, sa.OperationalError | sa.InterfaceError | sa.TimeoutError | sa.DisconnectionError
        ):
            return True
        if isinstance(item, sa.DBAPIError) and item.connection_invalidated:
            return True
        if getattr(item, "error_code", None) == TEMPORARILY_UNAVAILABLE:
            return True
    return False


# What the S3 API answers when it cannot take or serve a request now (SeaweedFS restarting, its volumes
# full, throttling): worth a retry, unlike a refusal of the request itself (403, 404, ...).
_STORE_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "InsufficientStorage"}
)


def artifact_store_unavailable(exc: BaseException) -> bool:
    """The artifact store cannot be reached or cannot take the request now (down, restarting, full)."""
    from botocore import exceptions as boto

    for item in _exceptions(exc):
        if isinstance(item, boto.ConnectionError | boto.HTTPClientError | boto.IncompleteReadError):
            return True
        if isinstance(item, boto.ClientError):
            error = item.response.get("Error", {})
            status = item.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return error.get("Code") in _STORE_TRANSIENT_CODES or status >= 500
    return False


def _raised_while_reading_request(exc: BaseException, validating: bool = False) -> bool:
    """True when MLflow raised ``exc`` reading the request (or, ``validating``, authorizing it)."""
    check = (
        mlflow_internals.is_request_validation_frame
        if validating
        else mlflow_internals.is_request_reading_frame
    )
    traceback: types.TracebackType | None = exc.__traceback__
    while traceback is not None:
        if check(traceback.tb_frame):
            return True
        traceback = traceback.tb_next
    return False


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(status, error_code, message) for an exception a view, hook or route let out."""
    from sqlalchemy import exc as sa

    if database_unavailable(exc):
        return 503, TEMPORARILY_UNAVAILABLE, MESSAGE_DATABASE_DOWN
    if artifact_store_unavailable(exc):
        return 503, TEMPORARILY_UNAVAILABLE, MESSAGE_ARTIFACT_STORE_DOWN
    serialize = getattr(exc, "get_http_status_code", None)
    if serialize is not None and isinstance(getattr(exc, "message", None), str):  # an MlflowException
        status, code, message = serialize(), str(getattr(exc, "error_code", INTERNAL_ERROR)), exc.message  # type: ignore[attr-defined]
        return clean_error(status, code, message) or (status, code, message)
    if isinstance(exc, RecursionError) or _raised_while_reading_request(exc):
        return 400, INVALID_PARAMETER_VALUE, MESSAGE_MALFORMED
    if isinstance(exc, _SHAPE_ERRORS) and _raised_while_reading_request(exc, validating=True):
        return 400, INVALID_PARAMETER_VALUE, MESSAGE_MALFORMED
    if isinstance(exc, sa.DataError):
        return 400, BAD_REQUEST, MESSAGE_DATABASE_REFUSED
    return 500, INTERNAL_ERROR, MESSAGE_INTERNAL


def handle_exception(exc: Exception) -> Any:
    """Flask's handler for every exception: MLflow's error JSON instead of an HTML page."""
    from flask import Response, request
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return exc
    status, code, message = classify(exc)
    if status >= 500:
        _logger.error("%s %s failed: %s", request.method, request.path, code, exc_info=exc)
    return Response(error_body(code, message), status=status, mimetype="application/json")


# --- the ASGI middleware ----------------------------------------------------------------------


async def send_json(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole JSON answer: ``headers`` but their Content-Type and Content-Length, then the body's own."""
    out = [(k, v) for k, v in (headers or []) if k.lower() not in (b"content-type", b"content-length")]
    out += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Checks requests before the app sees them, and cleans the API's error answers after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        raw_path = scope.get("raw_path") or b""
        problem = problem_in_query(path, scope.get("query_string", b""))
        if problem is None and b"%00" in raw_path.lower():
            problem = MESSAGE_NUL
        shared: tuple[bytes, Any] | None = None
        if problem is None and checks_body(scope):
            body, receive = await _buffered(receive)
            document, problem = checked_body(path, body)
            if problem is None and body:
                shared = (body, document)
        if problem is not None:
            await send_json(send, 400, error_body(INVALID_PARAMETER_VALUE, problem))
            return
        if not is_api_path(path):
            await self.app(scope, receive, send)
            return
        sender = _ErrorCleaner(send)
        token = _SHARED_BODY.set(shared)
        try:
            await self.app(scope, receive, sender)
        except Exception as exc:
            if sender.started:
                raise
            status, code, message = classify(exc)
            if status >= 500:
                _logger.error("%s %s failed: %s", scope["method"], path, code, exc_info=exc)
            await send_json(send, status, error_body(code, message))
        finally:
            _SHARED_BODY.reset(token)


async def _buffered(receive: Any) -> tuple[bytes, Any]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class _ErrorCleaner:
    """A ``send`` that holds back error answers until they are complete, then cleans them.

    Every answer's head waits for the first part of its body and leaves with it: a worker killed between
    the two (MLflow's Flask views answer from a thread, so there is a gap) would otherwise leave the
    client a status line and a body cut short, which no client retries.
    """

    def __init__(self, send: Any) -> None:
        self.send = send
        self.started = False
        self.start: dict[str, Any] | None = None
        self.error = False
        self.chunks: list[bytes] = []
        self.size = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.start = message
            self.error = message["status"] >= 400
            return
        if message["type"] == "http.response.body" and self.start is not None:
            if not self.error:
                start, self.start = self.start, None
                await self.send(start)
                await self.send(message)
                return
            chunk = message.get("body", b"")
            self.chunks.append(chunk)
            self.size += len(chunk)
            if self.size > MAX_ERROR_BODY:
                await self._flush(message.get("more_body", False))
                return
            if message.get("more_body", False):
                return
            await self._finish()
            return
        if self.start is not None:  # anything else: the head goes first, as it came
            if self.error:
                await self._flush(True)
            else:
                await self.send(self.start)
            self.start = None
        await self.send(message)

    async def _flush(self, more_body: bool) -> None:
        assert self.start is not None
        await self.send(self.start)
        await self.send({"type": "http.response.body", "body": b"".join(self.chunks), "more_body": more_body})
        self.start, self.chunks = None, []

    async def _finish(self) -> None:
        assert self.start is not None
        start, body = self.start, b"".join(self.chunks)
        self.start, self.chunks = None, []
        headers = list(start.get("headers", []))
        content_type = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
        rewritten = rewrite_error(start["status"], content_type, body)
        if rewritten is None:
            await self.send(start)
            await self.send({"type": "http.response.body", "body": body})
            return
        await send_json(self.send, rewritten[0], rewritten[1], headers)


def install(served: Any, flask_app: Any) -> None:
    """Flask's exception handler, and ``Guard`` as the outermost middleware of the served app."""
    flask_app.register_error_handler(Exception, handle_exception)
    add = getattr(served, "add_middleware", None)
    if add is not None and getattr(served, "middleware_stack", None) is None:
        add(Guard)  # Starlette puts the last one added outermost
    else:
        _logger.warning("the served app takes no middleware; requests are not checked before MLflow")
