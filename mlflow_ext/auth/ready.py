"""``GET /ready``: whether this server can serve, for load balancers, monitors and rolling restarts.

``/health`` is MLflow's liveness answer (the workers run). ``/ready`` also asks the three stores every
request depends on, each with ``CHECK_TIMEOUT`` seconds and all at once: the tracking and registry
database (``SELECT 1`` on a fresh connection), the auth database, and the artifact bucket
(``HeadBucket``). 200 when all three answer; otherwise 503 with MLflow's error JSON naming the stores that
failed. It needs no credentials and its answer names no address, database or bucket.

It stays cheap under any polling rate: one check runs at a time per worker and its outcome is reused for
``CACHE_SECONDS``, so a flood of probes costs at most a few connections a second. A check still running
after its timeout is reported as failed and left to finish on its own (its connect and read timeouts
bound it), never waited for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
PATH = "/ready"
CHECK_TIMEOUT = 1.0
CACHE_SECONDS = 0.5
# libpq's smallest connect timeout; a connection that takes longer has already been reported as failed.
PG_CONNECT_TIMEOUT = 2
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"

Check = Callable[[], None]


def database_check(uri: str) -> Check:
    """``SELECT 1`` on a new connection: a pooled one could be stale, or answer for a server now gone."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT} if uri.startswith("postgresql") else {}
    engine = sa.create_engine(uri, poolclass=NullPool, connect_args=connect_args)

    def check() -> None:
        with engine.connect() as connection:
            if uri.startswith("postgresql"):
                connection.exec_driver_sql(f"SET statement_timeout = {int(CHECK_TIMEOUT * 1000)}")
            connection.exec_driver_sql("SELECT 1")

    return check


def bucket_check(destination: str, environ: MutableMapping[str, str]) -> Check:
    """``HeadBucket`` on the artifact bucket, with the server's own endpoint and credentials."""
    import boto3
    from botocore.config import Config

    bucket = destination.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client(
        "s3",
        endpoint_url=environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
        config=Config(
            connect_timeout=CHECK_TIMEOUT,
            read_timeout=CHECK_TIMEOUT,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        ),
    )

    def check() -> None:
        client.head_bucket(Bucket=bucket)

    return check


def checks_from(environ: MutableMapping[str, str]) -> dict[str, Check]:
    """The checks this server's configuration calls for, by the name the answer gives them."""
    checks = {"tracking_database": database_check(environ["MLFLOW_BACKEND_STORE_URI"])}
    auth_uri = environ.get("MLFLOW_EXT_AUTH_DATABASE_URI")
    if auth_uri:
        checks["auth_database"] = database_check(auth_uri)
    destination = environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if destination.startswith("s3://"):
        checks["artifact_store"] = bucket_check(destination, environ)
    return checks


class Readiness:
    """Runs the checks concurrently, each bounded by ``timeout``; caches the outcome briefly."""

    def __init__(self, checks: dict[str, Check], timeout: float = CHECK_TIMEOUT) -> None:
        self.checks = checks
        self.timeout = timeout
        # Enough threads for a round of checks plus one whose checks are still hanging after a timeout.
        self.pool = ThreadPoolExecutor(max_workers=2 * len(checks), thread_name_prefix="ready")
        self.lock = asyncio.Lock()
        self.outcome: tuple[float, dict[str, str]] | None = None

    def _run(self, name: str, check: Check) -> str:
        try:
            check()
        except Exception as exc:  # any failure means not ready; the log has the cause, the answer not
            _logger.warning("readiness: %s failed: %s", name, type(exc).__name__)
            return "unavailable"
        return "ok"

    async def states(self) -> dict[str, str]:
        async with self.lock:
            now = time.monotonic()
            if self.outcome is not None and now - self.outcome[0] < CACHE_SECONDS:
                return self.outcome[1]
            futures = {
                name: asyncio.wrap_future(self.pool.submit(self._run, name, check))
                for name, check in self.checks.items()
            }
            done, _ = await asyncio.wait(futures.values(), timeout=self.timeout)
            states = {
                name: (future.result() if future in done else "timed out") for name, future in futures.items()
            }
            self.outcome = (time.monotonic(), states)
            return states


def answer(states: dict[str, str]) -> tuple[int, bytes]:
    failed = sorted(name for name, state in states.items() if state != "ok")
    if not failed:
        return 200, json.dumps({"status": "ready", "checks": states}).encode()
    message = "Not ready: " + ", ".join(f"{name} {states[name]}" for name in failed) + "."
    body = {"error_code": TEMPORARILY_UNAVAILABLE, "message": message, "checks": states}
    return 503, json.dumps(body).encode()


class ReadyEndpoint:
    """Pure-ASGI middleware answering ``GET /ready`` before authentication and the Host check."""

    def __init__(self, app: Any, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        status, body = answer(await self.readiness.states())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def install(served: Any, readiness: Readiness) -> None:
    """Put ``ReadyEndpoint`` outermost on the served app (call after every other middleware is added)."""
    served.add_middleware(ReadyEndpoint, readiness=readiness)
