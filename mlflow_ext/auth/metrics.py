"""``GET /metrics``: the server's Prometheus metrics plus the platform's textfile metrics, one scrape.

MLflow serves ``/metrics`` (with ``MLFLOW_EXPOSE_PROMETHEUS``) through its Flask app, where the auth app
lets only an admin read it. ``MetricsEndpoint`` answers it instead, with MLflow's own multiprocess metrics
then ``mlflow_server_ready{store=...}`` (1 or 0 per store ``/ready`` checks, so an alert needs no probe of its
own), then every ``*.prom`` file in ``MLFLOW_EXT_METRICS_TEXTFILE_DIR`` (the backup and gc jobs' outcomes):

- a caller on loopback that did not come through the proxy (no ``X-Forwarded-For``: nginx always sets
  it) is a local scraper and is served without credentials;
- anyone else goes through MLflow as usual; only when MLflow would have served the metrics (an admin)
  is its answer replaced with the full one. Everything else (401, 403) leaves as MLflow made it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
PATH = "/metrics"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# A textfile larger than this is skipped (and named in the log): a scrape must stay small and quick.
MAX_TEXTFILE_BYTES = 1 << 20


def textfile_metrics(directory: str | None) -> bytes:
    """Every ``*.prom`` file of ``directory``, in name order; files being written (``*.prom.tmp``,
    renamed into place when complete) are not read."""
    if not directory:
        return b""
    parts = []
    try:
        paths = sorted(Path(directory).glob("*.prom"))
    except OSError:
        return b""
    for path in paths:
        try:
            if path.stat().st_size > MAX_TEXTFILE_BYTES:
                _logger.warning("metrics: %s is larger than %d bytes, skipped", path, MAX_TEXTFILE_BYTES)
                continue
            data = path.read_bytes()
        except OSError as exc:
            _logger.warning("metrics: cannot read %s: %s", path, exc.strerror)
            continue
        parts.append(data if data.endswith(b"\n") or not data else data + b"\n")
    return b"".join(parts)


def server_metrics(multiprocess_dir: str | None) -> bytes:
    """MLflow's metrics, gathered from every worker's files as prometheus_flask_exporter does."""
    if not multiprocess_dir or not os.path.isdir(multiprocess_dir):
        return b""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiprocess_dir)
    return bytes(generate_latest(registry))


def readiness_metrics(states: dict[str, str]) -> bytes:
    lines = [
        "# HELP mlflow_server_ready 1 when the store answered the server's readiness check, else 0.",
        "# TYPE mlflow_server_ready gauge",
        *(
            f'mlflow_server_ready{{store="{name}"}} {int(state == "ok")}'
            for name, state in sorted(states.items())
        ),
    ]
    return ("\n".join(lines) + "\n").encode()


def is_local_scraper(scope: Scope) -> bool:
    """On loopback and not forwarded by the proxy."""
    if any(name == b"x-forwarded-for" for name, _ in scope.get("headers", [])):
        return False
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class MetricsEndpoint:
    """Pure-ASGI middleware serving ``GET /metrics`` to local scrapers and to whom MLflow serves it."""

    def __init__(
        self,
        app: Any,
        readiness: Callable[[], Awaitable[dict[str, str]]],
        multiprocess_dir: str | None,
        textfile_dir: str | None,
    ) -> None:
        self.app = app
        self.readiness = readiness
        self.multiprocess_dir = multiprocess_dir
        self.textfile_dir = textfile_dir

    async def render(self) -> bytes:
        states = await self.readiness()
        return (
            server_metrics(self.multiprocess_dir)
            + readiness_metrics(states)
            + textfile_metrics(self.textfile_dir)
        )

    async def _send_metrics(self, send: Any) -> None:
        body = await self.render()
        headers = [(b"content-type", CONTENT_TYPE), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if is_local_scraper(scope):
            await self._send_metrics(send)
            return
        allowed = False

        async def decide(message: dict[str, Any]) -> None:
            # MLflow's answer decides who may read; an allowed one is replaced, the rest pass unchanged.
            nonlocal allowed
            if message["type"] == "http.response.start":
                allowed = message["status"] == 200
            if not allowed:
                await send(message)

        await self.app(scope, receive, decide)
        if allowed:
            await self._send_metrics(send)


def install(
    served: Any,
    readiness: Callable[[], Awaitable[dict[str, str]]],
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Put ``MetricsEndpoint`` on the served app, outside authentication (after the other middleware)."""
    env = os.environ if environ is None else environ
    served.add_middleware(
        MetricsEndpoint,
        readiness=readiness,
        multiprocess_dir=env.get("MLFLOW_EXPOSE_PROMETHEUS") or None,
        textfile_dir=env.get("MLFLOW_EXT_METRICS_TEXTFILE_DIR") or None,
    )
