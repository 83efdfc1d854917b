"""Stock MLflow features the platform does not configure, refused unless a setting turns them on.

MLflow's server ships APIs, and UI parts calling them, that a shared registry does not want by default:
the GenAI assistant (it runs a coding CLI on the server host for loopback clients), the demo generator
(``Start Demo`` writes sample experiments, traces and prompts into the real stores) and the MCP server
registry. MLflow has no switch for these, so a pure-ASGI middleware in front of the app answers their
routes with 404 and MLflow's error JSON, before anything reaches a store. The AI gateway has MLflow's own
switch (``MLFLOW_ENABLE_AI_GATEWAY``, a setting of its own): its API answers 501 and ``server-info``
tells the UI to hide it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_ext import settings

# MLflow adds this prefix to its routes when the server runs with --static-prefix.
STATIC_PREFIX_ENV = "_MLFLOW_STATIC_PREFIX"

# Route prefixes of each feature, as MLflow 3.17 serves them (FastAPI routers and Flask rules).
ROUTES: Mapping[str, tuple[str, ...]] = {
    "MLFLOW_EXT_UI_ASSISTANT": ("/ajax-api/3.0/mlflow/assistant",),
    "MLFLOW_EXT_UI_DEMO": ("/ajax-api/3.0/mlflow/demo",),
    "MLFLOW_EXT_UI_MCP_REGISTRY": ("/ajax-api/3.0/mlflow/mcp-servers", "/api/3.0/mlflow/mcp-servers"),
}


@dataclass(frozen=True)
class UiFeatures:
    assistant: bool = settings.field("MLFLOW_EXT_UI_ASSISTANT")
    demo: bool = settings.field("MLFLOW_EXT_UI_DEMO")
    mcp_registry: bool = settings.field("MLFLOW_EXT_UI_MCP_REGISTRY")


def load(environ: Mapping[str, str]) -> UiFeatures:
    return settings.build(UiFeatures, environ)


def refused_routes(features: UiFeatures, static_prefix: str = "") -> dict[str, str]:
    """Route prefix -> the setting that turns it on, for every feature that is off."""
    enabled = {
        "MLFLOW_EXT_UI_ASSISTANT": features.assistant,
        "MLFLOW_EXT_UI_DEMO": features.demo,
        "MLFLOW_EXT_UI_MCP_REGISTRY": features.mcp_registry,
    }
    prefix = static_prefix.rstrip("/")
    return {prefix + route: name for name, routes in ROUTES.items() if not enabled[name] for route in routes}


def matching_setting(refused: Mapping[str, str], path: str) -> str | None:
    """The setting that refuses ``path``: a refused prefix itself or any path below it."""
    for route, name in refused.items():
        if path == route or path.startswith(route + "/"):
            return name
    return None


def answer(path: str, name: str) -> bytes:
    message = f"{path} is turned off on this server (set {name}=true to turn it on)."
    return json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": message}).encode()


class FeatureRefusal:
    """Pure-ASGI middleware: 404 with MLflow's error JSON for the routes of features that are off."""

    def __init__(self, app: Any, refused: Mapping[str, str]) -> None:
        self.app = app
        self.refused = dict(refused)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        name = matching_setting(self.refused, scope.get("path", "")) if scope["type"] == "http" else None
        if name is None:
            await self.app(scope, receive, send)
            return
        body = answer(scope["path"], name)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def install(served: Any, environ: Mapping[str, str]) -> dict[str, str]:
    """Refuse the routes of the features that are off; the refused prefixes and their settings."""
    refused = refused_routes(load(environ), environ.get(STATIC_PREFIX_ENV, ""))
    if refused:
        served.add_middleware(FeatureRefusal, refused=refused)
    return refused
