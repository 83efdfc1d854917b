"""Uploads to MLflow's native artifact route, through the platform's ASGI fronts (``auth.asgi``).

The app is built exactly as a server worker builds it (``create_app`` on the platform's Postgres auth
database and SeaweedFS bucket, under uvicorn's flavour), in a separate process, and each request is
driven through it as uvicorn drives one: the body in several chunks. That process records which
requests Starlette's ``BaseHTTPMiddleware`` ran; an upload must run none (MLflow's dispatchers are run
by ``StreamFront``), and still get MLflow's decisions: stored byte for byte for a user with EDIT, MLflow's
401 without credentials, its 403 without EDIT, and the route's own answer for a path it refuses.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.test_auth_tokens import admin, new_user
from tests.support.worker_app import WORKER_STORES

pytestmark = pytest.mark.integration

GRANT = "/api/3.0/mlflow/users/permissions/grant"
UPLOAD = "/api/2.0/mlflow-artifacts/artifacts"
# MLflow's ``BaseHTTPMiddleware`` dispatchers, by the name of their dispatch function.
DISPATCHERS = ("fastapi_permission_middleware", "workspace_context_middleware", "gateway_timing_middleware")

DRIVE = (
    WORKER_STORES
    + r"""
import asyncio, base64, json
from starlette.middleware.base import BaseHTTPMiddleware

ran = []
base_call = BaseHTTPMiddleware.__call__

async def recorded(self, scope, receive, send):
    if scope["type"] == "http":
        ran.append(self.dispatch_func.__name__)
    await base_call(self, scope, receive, send)

BaseHTTPMiddleware.__call__ = recorded
from mlflow_ext.auth.app import create_app
served = create_app()


async def drive(request):
    chunks = [base64.b64decode(chunk) for chunk in request["chunks"]]
    headers = [(b"host", b"localhost"), (b"content-length", str(sum(map(len, chunks))).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in request["headers"].items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "PUT", "scheme": "http", "path": request["path"], "raw_path": request["path"].encode(),
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000), "state": {},
    }
    answered = asyncio.Event()
    answer = {"status": None, "headers": {}, "body": b""}

    async def receive():
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")
            if not message.get("more_body"):
                answered.set()

    del ran[:]
    await served(scope, receive, send)
    return {
        "status": answer["status"],
        "headers": answer["headers"],
        "body": answer["body"].decode(errors="replace"),
        "base_http_middleware": list(ran),
    }


from mlflow_ext import mlflow_internals

native_artifact_path = mlflow_internals.__dict__.get("is_native_artifact_path")


async def main(requests):
    answers = []
    for request in requests:
        streamed = await drive(request)
        # The same request through MLflow's middlewares unchanged (what MLflow answers), to a key of its own.
        mlflow_internals.is_native_artifact_path = lambda path, method: False
        try:
            path = request["path"].replace("/model/", "/mlflow/")
            streamed["mlflow"] = await drive({**request, "path": path})
        finally:
            mlflow_internals.is_native_artifact_path = native_artifact_path
        answers.append(streamed)
    return answers

print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
"""
)


def _drive(platform, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each request through a freshly built app; credentials go on stdin, never on a command line."""
    with tempfile.TemporaryDirectory() as runtime:
        result = subprocess.run(
            [sys.executable, "-c", DRIVE, str(platform.server.env_file), runtime],
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            cwd=runtime,  # mlflow_ext as installed, as a worker imports it
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _put(path: str, chunks: list[bytes], credentials: tuple[str, str] | None) -> dict[str, Any]:
    headers = {"X-Forwarded-For": f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.9"}
    if credentials is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    return {
        "path": path,
        "headers": headers,
        "chunks": [base64.b64encode(chunk).decode() for chunk in chunks],
    }


@pytest.fixture(scope="module")
def uploads(platform) -> dict[str, Any]:
    """One experiment and run, a user with EDIT on it and one with READ, and the answers to their uploads."""
    boss = admin(platform)
    experiment_id = boss.ok(
        "POST", "/api/2.0/mlflow/experiments/create", {"name": f"upload-front-{secrets.token_hex(4)}"}
    )["experiment_id"]
    run_id = boss.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})["run"]["info"][
        "run_id"
    ]
    editor, reader = new_user(platform, "upload-edit"), new_user(platform, "upload-read")
    for (username, _), permission in ((editor, "EDIT"), (reader, "READ")):
        grant = {"resource_type": "experiment", "resource_id": experiment_id, "permission": permission}
        boss.ok("POST", GRANT, {"username": username, **grant})
    prefix = f"{experiment_id}/{run_id}/artifacts"
    chunks = [os.urandom(size) for size in (70_000, 1, 65_536, 12_345)]
    cases = {
        "editor": _put(f"{UPLOAD}/{prefix}/model/editor.bin", chunks, editor),
        "anonymous": _put(f"{UPLOAD}/{prefix}/model/anonymous.bin", chunks, None),
        "reader": _put(f"{UPLOAD}/{prefix}/model/reader.bin", chunks, reader),
        "escaping": _put(
            f"{UPLOAD}/{prefix}/../../../escaping.bin",
            chunks,
            (platform.admin_username, platform.admin_password),
        ),
        "no file name": _put(f"{UPLOAD}/{prefix}/model/", chunks, editor),
    }
    answers = dict(zip(cases, _drive(platform, list(cases.values())), strict=True))
    return {"answers": answers, "prefix": prefix, "body": b"".join(chunks)}


def _stored(platform, key: str) -> bytes | None:
    try:
        return platform.s3.client().get_object(Bucket=platform.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("NoSuchKey", "404"), exc.response
        return None


def _as_mlflow_answers(answer: dict[str, Any]) -> None:
    """Streamed past ``BaseHTTPMiddleware``, with the answer MLflow's dispatchers give the same request."""
    mlflow = answer["mlflow"]
    assert answer["base_http_middleware"] == []
    # MLflow's own way runs them (the permission dispatcher first: its refusals end the call there).
    assert mlflow["base_http_middleware"][0] == "fastapi_permission_middleware"
    assert set(mlflow["base_http_middleware"]) <= set(DISPATCHERS)
    assert (answer["status"], answer["headers"], answer["body"]) == (
        mlflow["status"],
        mlflow["headers"],
        mlflow["body"],
    )


def test_an_upload_by_a_user_with_edit_is_stored_byte_for_byte(platform, uploads):
    answer = uploads["answers"]["editor"]
    assert answer["status"] == 200, answer
    _as_mlflow_answers(answer)
    assert sorted(answer["mlflow"]["base_http_middleware"]) == sorted(DISPATCHERS)
    for folder in ("model", "mlflow"):
        assert _stored(platform, f"{uploads['prefix']}/{folder}/editor.bin") == uploads["body"]


def test_an_upload_without_credentials_gets_mlflow_s_401_and_stores_nothing(platform, uploads):
    answer = uploads["answers"]["anonymous"]
    assert answer["status"] == 401, answer
    assert "You are not authenticated." in answer["body"], answer
    assert answer["headers"]["www-authenticate"] == 'Basic realm="mlflow"'
    _as_mlflow_answers(answer)
    for folder in ("model", "mlflow"):
        assert _stored(platform, f"{uploads['prefix']}/{folder}/anonymous.bin") is None


def test_an_upload_by_a_user_without_edit_gets_mlflow_s_403_and_stores_nothing(platform, uploads):
    answer = uploads["answers"]["reader"]
    assert answer["status"] == 403, answer
    assert "Permission denied" in answer["body"], answer
    _as_mlflow_answers(answer)
    for folder in ("model", "mlflow"):
        assert _stored(platform, f"{uploads['prefix']}/{folder}/reader.bin") is None


def test_a_path_mlflow_refuses_gets_the_route_s_answer(platform, uploads):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.uri import validate_path_is_safe

    escaping = uploads["answers"]["escaping"]
    with pytest.raises(MlflowException) as refused:
        validate_path_is_safe(f"{uploads['prefix']}/../../../escaping.bin")
    assert escaping["status"] == refused.value.get_http_status_code(), escaping
    assert refused.value.message in escaping["body"], escaping
    _as_mlflow_answers(escaping)
    no_name = uploads["answers"]["no file name"]
    assert no_name["status"] == 400, no_name
    assert "Artifact path must include a filename" in no_name["body"], no_name
    _as_mlflow_answers(no_name)
    assert _stored(platform, "escaping.bin") is None
