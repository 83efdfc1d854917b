"""The guard's request checks, error cleaning and exception mapping, without a server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa

from mlflow_ext.auth import guard

LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


def token(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/2.0/mlflow/runs/create", b"[1, 2]"),
        ("/api/2.0/mlflow/runs/create", b"3"),
        ("/api/2.0/mlflow/runs/create", b"[" * 5000 + b"]" * 5000),
        ("/api/2.0/mlflow/runs/create", b'{"a":' * 100 + b"1" + b"}" * 100),
        ("/api/2.0/mlflow/runs/create", b'{"experiment_id": '),
        ("/api/2.0/mlflow/experiments/create", b'{"name": "a\\u0000b"}'),
        ("/api/2.0/mlflow/experiments/create", b'{"name\\u0000": "a"}'),
        ("/api/2.0/mlflow/experiments/create", json.dumps(json.dumps([1])).encode()),
        (LOG_METRIC, b'{"run_id": "r", "key": "m", "value": {"x": 1}, "timestamp": 1}'),
        (LOG_METRIC, b'{"run_id": "r", "key": "m", "value": 1, "timestamp": 1, "step": 1e30}'),
        (LOG_METRIC, b'{"run_id": "r", "key": "m", "value": 1, "timestamp": "soon"}'),
        (LOG_BATCH, b'{"run_id": "r", "metrics": [{"key": "m", "value": [1], "timestamp": 1}]}'),
        (LOG_BATCH, b'{"run_id": "r", "metrics": {"key": "m"}}'),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": token({"offset": -100})}).encode()),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": token({"offset": 2**64})}).encode()),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": token({"offset": "x"})}).encode()),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": token([1])}).encode()),
        ("/api/2.0/mlflow/runs/create", b'{"experiment_id": {"a": 1}}'),
        ("/api/2.0/mlflow/registered-models/create", b'{"name": ["m"]}'),
    ],
)
def test_malformed_bodies_are_refused(path, body):
    assert guard.checked_body(path, body)[1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/2.0/mlflow/runs/create", b""),
        ("/api/2.0/mlflow/runs/create", b"null"),
        ("/api/2.0/mlflow/runs/create", b'{"experiment_id": "1", "tags": [{"key": "a", "value": "b"}]}'),
        ("/api/2.0/mlflow/experiments/create", b'{"name": "literal \\\\u0000 is text"}'),
        ("/api/2.0/mlflow/experiments/create", json.dumps(json.dumps({"name": "old client"})).encode()),
        (LOG_METRIC, b'{"run_id": "r", "key": "m", "value": NaN, "timestamp": 1, "step": 0}'),
        (LOG_METRIC, b'{"run_id": "r", "key": "m", "value": "1.5", "timestamp": "1700000000000"}'),
        (LOG_BATCH, b'{"run_id": "r", "metrics": [{"key": "m", "value": 1e308, "timestamp": 1, "step": 3}]}'),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": token({"offset": 100})}).encode()),
        ("/api/2.0/mlflow/runs/search", json.dumps({"page_token": "opaque-token-of-another-store"}).encode()),
        ("/api/3.0/mlflow/mcp-servers/x", b'[{"jsonrpc": "2.0"}]'),
    ],
)
def test_well_formed_bodies_pass(path, body):
    assert guard.checked_body(path, body)[1] is None


def _nested(depth: int, kind: str, leaf: Any) -> Any:
    """``leaf`` under ``depth - 1`` containers of ``kind`` (the root too): the leaf is at level ``depth``."""
    value = leaf
    for _ in range(depth - 1):
        value = {"k": value} if kind == "object" else [value]
    return value


@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("leaf", [1, "text", {}, [], {"k": 1}])
def test_nesting_is_refused_one_level_past_the_limit_and_not_at_it(kind, leaf):
    def body(depth: int) -> bytes:  # an object at the root, then containers of `kind`
        return json.dumps({"k": _nested(depth - 1, kind, leaf)}).encode()

    # An empty container is a value, not a level: {"k": {}} is two levels deep.
    levels = guard.MAX_JSON_DEPTH - (1 if leaf == {"k": 1} else 0)
    assert guard.checked_body("/api/2.0/mlflow/runs/create", body(levels))[1] is None
    problem = guard.checked_body("/api/2.0/mlflow/runs/create", body(levels + 1))[1]
    assert problem is not None and "nested more than" in problem


# Documents of every shape, some nesting near the limit: containers of scalars, containers and deep chains.
# No NUL in their strings: the guard refuses one first, whatever the depth.
texts = st.characters(blacklist_characters="\x00")
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(texts, max_size=3)
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(texts, max_size=2), inner, max_size=3),
        st.builds(_nested, st.integers(50, 70), st.sampled_from(["object", "array"]), inner),
    ),
    max_leaves=12,
).map(lambda document: {"k": document})


@settings(max_examples=300, deadline=None)
@given(documents)
def test_the_depth_check_agrees_with_a_walk_of_every_value(document):
    # The reference: every value with its depth, keys and elements one level below their container.
    too_deep = any(depth > guard.MAX_JSON_DEPTH for _item, depth in guard._walk(document))
    problem = guard.checked_body("/api/2.0/mlflow/runs/create", json.dumps(document).encode())[1]
    assert (problem is not None and "nested more than" in problem) == too_deep


texts = st.text(alphabet=st.sampled_from("ab\\x00\u00e9\\"), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(texts, texts | st.lists(texts, max_size=2), max_size=3))
def test_a_body_is_refused_exactly_when_a_string_in_it_holds_a_nul(document):
    holds_nul = any(isinstance(item, str) and "\x00" in item for item, _depth in guard._walk(document))
    problem = guard.checked_body("/api/2.0/mlflow/runs/create", json.dumps(document).encode())[1]
    assert (problem == guard.MESSAGE_NUL) == holds_nul
    # The JSON of an old client, encoded twice, too.
    twice = json.dumps(json.dumps(document)).encode()
    assert (guard.checked_body("/api/2.0/mlflow/runs/create", twice)[1] == guard.MESSAGE_NUL) == holds_nul


def test_query_and_path_checks():
    assert (
        guard.problem_in_query("/api/2.0/mlflow/experiments/get", b"experiment_id=1%00") == guard.MESSAGE_NUL
    )
    assert guard.problem_in_query(
        "/api/2.0/mlflow/model-versions/search", b"page_token=" + token({"offset": -1}).encode()
    )
    assert guard.problem_in_query("/api/2.0/mlflow/experiments/get", b"experiment_id=1") is None


def test_artifact_uploads_and_ui_are_not_read():
    def scope(method: str, path: str, content_type: bytes = b"application/json") -> dict[str, Any]:
        return {"method": method, "path": path, "headers": [(b"content-type", content_type)]}

    assert guard.checks_body(scope("POST", "/api/2.0/mlflow/runs/create"))
    assert not guard.checks_body(scope("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/model.json"))
    assert not guard.checks_body(scope("POST", "/api/2.0/mlflow/runs/create", b"application/octet-stream"))
    assert not guard.checks_body(scope("POST", "/static-files/x"))


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (
            400,
            "BAD_REQUEST",
            "(psycopg2.errors.NumericValueOutOfRange) bigint out of range [SQL: SELECT 1]",
            (400, "BAD_REQUEST", guard.MESSAGE_DATABASE_REFUSED),
        ),
        (
            503,
            "TEMPORARILY_UNAVAILABLE",
            "(psycopg2.OperationalError) connection to server at 127.0.0.1 port 5432 failed",
            (503, "TEMPORARILY_UNAVAILABLE", guard.MESSAGE_DATABASE_DOWN),
        ),
        # libpq's own words without the class in front (the database shutting down mid-request).
        (
            503,
            "TEMPORARILY_UNAVAILABLE",
            'connection to server at "127.0.0.1", port 44419 failed: FATAL:  the database system is shutting'
            " down",
            (503, "TEMPORARILY_UNAVAILABLE", guard.MESSAGE_DATABASE_DOWN),
        ),
        (
            500,
            "INTERNAL_ERROR",
            "A string literal cannot contain NUL (0x00) characters.",
            (400, "INVALID_PARAMETER_VALUE", guard.MESSAGE_NUL),
        ),
        (
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "The following failures occurred while downloading one or more artifacts from s3://bucket/: x",
            (404, "RESOURCE_DOES_NOT_EXIST", guard.MESSAGE_ARTIFACT_MISSING),
        ),
        (
            500,
            "INTERNAL_ERROR",
            "'list' object has no attribute 'get'",
            (500, "INTERNAL_ERROR", guard.MESSAGE_INTERNAL),
        ),
        (400, "INVALID_PARAMETER_VALUE", "Missing value for parameter 'name'.", None),
        (404, "RESOURCE_DOES_NOT_EXIST", "Run with id=x not found", None),
    ],
)
def test_error_messages_are_cleaned(status, code, message, expected):
    assert guard.clean_error(status, code, message) == expected


def test_non_json_errors_become_mlflow_error_json():
    status, body = guard.rewrite_error(500, "text/html; charset=utf-8", b"<!doctype html><title>500</title>")
    assert status == 500 and json.loads(body) == {
        "error_code": "INTERNAL_ERROR",
        "message": guard.MESSAGE_INTERNAL,
    }
    status, body = guard.rewrite_error(403, "text/plain", b"Permission denied")
    assert status == 403 and json.loads(body) == {
        "error_code": "PERMISSION_DENIED",
        "message": "Permission denied",
    }
    assert (
        guard.rewrite_error(400, "application/json", b'{"error_code": "BAD_REQUEST", "message": "no"}')
        is None
    )


def test_exceptions_are_classified():
    down = sa.OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert guard.classify(down) == (503, "TEMPORARILY_UNAVAILABLE", guard.MESSAGE_DATABASE_DOWN)
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = down
    assert guard.classify(wrapped)[0] == 503
    assert guard.classify(RecursionError())[0] == 400
    assert guard.classify(sa.DataError("SELECT 1", {}, Exception("bigint out of range")))[:2] == (
        400,
        "BAD_REQUEST",
    )
    assert guard.classify(KeyError("x")) == (500, "INTERNAL_ERROR", guard.MESSAGE_INTERNAL)


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def _upload_failed(cause: Exception) -> Exception:
    """What boto3 raises for a failed upload: its own error, raised while handling botocore's."""
    from boto3.exceptions import S3UploadFailedError

    try:
        try:
            raise cause
        except Exception:
            raise S3UploadFailedError("Failed to upload /tmp/x to bucket/key") from None
    except S3UploadFailedError as failed:
        failed.__suppress_context__ = False
        return failed


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param("refused", id="connection refused"),
        pytest.param(("InternalError", 500), id="store full or failing"),
        pytest.param(("SlowDown", 503), id="throttled"),
        pytest.param(("InternalError", 500, "upload"), id="upload failed on a 500"),
    ],
)
def test_an_artifact_store_that_is_down_or_full_is_a_503(exc):
    from botocore.exceptions import EndpointConnectionError

    if exc == "refused":
        error: Exception = EndpointConnectionError(endpoint_url="http://127.0.0.1:8333/bucket/key")
    else:
        error = _client_error(exc[0], exc[1])
        if len(exc) == 3:
            error = _upload_failed(error)
    assert guard.classify(error) == (503, "TEMPORARILY_UNAVAILABLE", guard.MESSAGE_ARTIFACT_STORE_DOWN)


@pytest.mark.parametrize(("code", "status"), [("AccessDenied", 403), ("NoSuchBucket", 404)])
def test_an_artifact_store_refusal_is_not_a_retryable_503(code, status):
    assert guard.classify(_client_error(code, status))[0] == 500


def test_an_exception_inside_mlflows_request_reading_is_a_400():
    from mlflow.protos.service_pb2 import LogMetric
    from mlflow.server import app, handlers

    body = {"run_id": "r", "key": "m", "value": {"x": 1}, "timestamp": 1}
    context = app.test_request_context("/api/2.0/mlflow/runs/log-metric", method="POST", json=body)
    with context, pytest.raises(Exception) as raised:
        handlers._get_request_message(
            LogMetric(), schema={"value": [handlers._assert_required, handlers._assert_floatlike]}
        )
    assert not isinstance(raised.value, handlers.MlflowException)
    assert guard.classify(raised.value) == (400, "INVALID_PARAMETER_VALUE", guard.MESSAGE_MALFORMED)


# --- the ASGI middleware ----------------------------------------------------------------------


def run(
    app: Any, method: str = "POST", path: str = LOG_METRIC, body: bytes = b"{}"
) -> tuple[int, bytes, Any]:
    sent: list[dict[str, Any]] = []
    received: list[bytes] = []

    async def inner_receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        async def recording_app(scope: Any, receive: Any, send: Any) -> None:
            message = await receive()
            received.append(message.get("body", b""))
            await app(scope, receive, send)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await guard.Guard(recording_app)(scope, inner_receive, send)

    asyncio.run(main())
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], out, received


def answer(status: int, body: bytes, content_type: bytes = b"application/json") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


def test_guard_passes_good_requests_and_replays_the_body():
    status, body, received = run(answer(200, b'{"ok": 1}'), body=b'{"run_id": "r", "key": "m", "value": 1}')
    assert (status, body) == (200, b'{"ok": 1}')
    assert received == [b'{"run_id": "r", "key": "m", "value": 1}']


def test_guard_refuses_bad_bodies_before_the_app():
    status, body, received = run(answer(200, b"{}"), body=b"[1]")
    assert status == 400 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
    assert received == []


def test_guard_cleans_error_answers_and_maps_exceptions():
    leak = json.dumps(
        {"error_code": "BAD_REQUEST", "message": "(psycopg2.errors.X) [SQL: SELECT secret]"}
    ).encode()
    status, body, _ = run(answer(400, leak))
    assert status == 400 and b"SELECT" not in body and json.loads(body)["error_code"] == "BAD_REQUEST"
    status, body, _ = run(answer(500, b"<!doctype html>", b"text/html"))
    assert status == 500 and json.loads(body)["error_code"] == "INTERNAL_ERROR"

    async def down(scope: Any, receive: Any, send: Any) -> None:
        raise sa.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    status, body, _ = run(down)
    assert status == 503 and json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_a_head_leaves_only_with_the_first_part_of_its_body():
    """A worker killed between head and body must not leave the client a 200 with a body cut short."""
    sent: list[str] = []
    seen_before_body: list[list[str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0)  # MLflow's Flask views answer from a thread: a gap here
        seen_before_body.append(list(sent))
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/2.0/mlflow/experiments/get",
        "raw_path": b"",
        "query_string": b"experiment_id=1",
        "headers": [],
    }
    asyncio.run(guard.Guard(app)(scope, receive, send))
    assert seen_before_body == [[]]
    assert sent == ["http.response.start", "http.response.body", "http.response.body"]


def test_the_fast_stores_database_errors_are_worded_as_mlflows_and_cleaned():
    """The tracking store's database errors name their class first, as MLflow's session does, so the guard
    answers its own message, not the database's address."""
    import psycopg2

    from mlflow_ext import tracking_store

    raw = psycopg2.OperationalError(
        'connection to server at "10.1.2.3", port 5432 failed: FATAL:  the database system is shutting down'
    )
    message = tracking_store._database_message(raw)
    assert message.startswith("(psycopg2.OperationalError) connection to server")
    assert guard.clean_error(503, "TEMPORARILY_UNAVAILABLE", message) == (
        503,
        "TEMPORARILY_UNAVAILABLE",
        guard.MESSAGE_DATABASE_DOWN,
    )
