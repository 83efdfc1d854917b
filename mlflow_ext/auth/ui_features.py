"""Stock MLflow features the platform does not configure, refused unless a setting turns them on.

MLflow's server ships APIs, and UI parts calling them, that a shared registry does not want by default:
the GenAI assistant (it runs a coding CLI on the server host for loopback clients), the demo generator
(``Start Demo`` writes sample experiments, traces and prompts into the real stores) and the MCP server
registry. MLflow has no switch for these, so a pure-ASGI middleware in front of the app answers their
routes with 404 and MLflow's error JSON, before anything reaches a store. The AI gateway has MLflow's own
switch (``MLFLOW_ENABLE_AI_GATEWAY``, a setting of its own): its API answers 501 and ``server-info``
tells the UI to hide it.

The UI shows some of these parts whatever the server says: the "Start Demo" card, the MCP registry's
menu entry, the assistant (on a loopback address it always offers itself and opens on first load), and
the telemetry notice (only the browser's local storage hides it, even with ``MLFLOW_DISABLE_TELEMETRY``).
So the middleware also serves a small script, generated from the settings, and names it in the UI's
``index.html`` ahead of MLflow's bundle: it marks the telemetry notice read and the browser's UI telemetry
off when telemetry is off, and hides the parts of the features that are off (by their ``data-component-id``
and links, through the CSSOM, which the proxy's Content-Security-Policy allows).
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


SCRIPT_ROUTE = "/mlflow-ext/ui-features.js"


@dataclass(frozen=True)
class UiFeatures:
    assistant: bool = settings.field("MLFLOW_EXT_UI_ASSISTANT")
    demo: bool = settings.field("MLFLOW_EXT_UI_DEMO")
    mcp_registry: bool = settings.field("MLFLOW_EXT_UI_MCP_REGISTRY")
    telemetry_disabled: bool = settings.field("MLFLOW_DISABLE_TELEMETRY")


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


# Local storage entries of MLflow's UI (``<key>_v<version>``, JSON) that the script sets before it starts.
TELEMETRY_STORAGE = {
    "mlflow.telemetry.info.alert.dismissed_v1": "true",  # the "Information about UI telemetry" notice
    "mlflow.settings.telemetry.enabled_v1": "false",  # the browser's UI telemetry (Settings page)
}
ASSISTANT_STORAGE = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",  # no opening on first load
    "mlflow.assistant.panelOpen_v1": "false",
}
# CSS selectors of what to hide, per feature; ``closest`` widens an element to its card.
HIDDEN: Mapping[str, tuple[tuple[str, str | None], ...]] = {
    "telemetry": (('[data-component-id="mlflow.home.telemetry-alert"]', None),),
    "demo": (('[data-component-id^="mlflow.home.demo-banner"]', "div:has(> img)"),),
    "mcp_registry": (('a[href$="#/mcp-registry"]', None), ('a[href*="#/mcp-registry?"]', None)),
    "assistant": (
        ("[data-assistant-ui]", None),
        ('[data-component-id^="mlflow.assistant."]', None),
        ('[data-component-id^="mlflow.experiment_side_nav.assistant"]', '[role="button"]'),
    ),
}
SCRIPT = """(function () {
  "use strict";
  var storage = %(storage)s;
  var hidden = %(hidden)s;
  var signOut = %(sign_out)s;
  try {
    Object.keys(storage).forEach(function (key) { window.localStorage.setItem(key, storage[key]); });
  } catch (error) {}
  if (signOut) {
    document.addEventListener("DOMContentLoaded", function () {
      var link = document.createElement("a");
      link.id = "mlflow-ext-sign-out";
      link.href = signOut;
      link.textContent = "Sign out";
      [["position", "fixed"], ["bottom", "12px"], ["left", "16px"], ["z-index", "1000"],
       ["font-size", "13px"]].forEach(function (p) { link.style.setProperty(p[0], p[1]); });
      document.body.appendChild(link);
    });
  }
  if (!hidden.length) { return; }
  function sweep() {
    hidden.forEach(function (rule) {
      document.querySelectorAll(rule[0]).forEach(function (element) {
        var target = (rule[1] && element.closest(rule[1])) || element;
        if (target.style.getPropertyValue("display") !== "none") {
          target.style.setProperty("display", "none", "important");
        }
      });
    });
  }
  new MutationObserver(sweep).observe(document.documentElement, {childList: true, subtree: true});
})();
"""


def telemetry_off(features: UiFeatures, environ: Mapping[str, str]) -> bool:
    """Telemetry is off by the platform's setting or by the DO_NOT_TRACK convention (MLflow honours both)."""
    return features.telemetry_disabled or environ.get("DO_NOT_TRACK", "").lower() == "true"


def script(features: UiFeatures, telemetry_is_off: bool, sign_out: str | None = None) -> bytes:
    """The UI script for these settings: local storage entries to set, selectors to keep hidden, and with
    single sign-on a "Sign out" link to ``sign_out`` (MLflow's UI has no place for one)."""
    storage: dict[str, str] = {}
    if telemetry_is_off:
        storage |= TELEMETRY_STORAGE
    if not features.assistant:
        storage |= ASSISTANT_STORAGE
    off = {
        "telemetry": telemetry_is_off,
        "demo": not features.demo,
        "mcp_registry": not features.mcp_registry,
        "assistant": not features.assistant,
    }
    rules = [list(rule) for name, rules in HIDDEN.items() if off[name] for rule in rules]
    values = {"storage": json.dumps(storage), "hidden": json.dumps(rules), "sign_out": json.dumps(sign_out)}
    return (SCRIPT % values).encode()


def inject(html: bytes, script_url: str) -> bytes:
    """``index.html`` with the script first in its head, so it runs before MLflow's (deferred) bundle."""
    tag = f'<script src="{script_url}"></script>'.encode()
    head = html.find(b"<head>")
    if head < 0:
        return html
    return html[: head + 6] + tag + html[head + 6 :]


def _respond(status: int, body: bytes, content_type: bytes) -> list[dict[str, Any]]:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class UiFeaturesFront:
    """Pure-ASGI middleware: refuses the routes of features that are off (404, MLflow's error JSON), serves
    the UI script and names it in the UI's ``index.html``."""

    def __init__(self, app: Any, refused: Mapping[str, str], script: bytes, static_prefix: str = "") -> None:
        self.app = app
        self.refused = dict(refused)
        self.script = script
        prefix = static_prefix.rstrip("/")
        self.index_path = prefix + "/"
        self.script_path = prefix + SCRIPT_ROUTE
        self.script_url = SCRIPT_ROUTE.lstrip("/")  # relative to index.html, as MLflow names its own files

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        name = matching_setting(self.refused, path)
        if name is not None:
            messages = _respond(404, answer(path, name), b"application/json")
        elif path == self.script_path and method in ("GET", "HEAD"):
            messages = _respond(200, self.script, b"text/javascript; charset=utf-8")
        elif path == self.index_path and method == "GET":
            await self._index(scope, receive, send)
            return
        else:
            await self.app(scope, receive, send)
            return
        if method == "HEAD":
            messages[1]["body"] = b""
        for message in messages:
            await send(message)

    async def _index(self, scope: Any, receive: Any, send: Any) -> None:
        # No conditional request: a copy cached before the script was named would be answered 304.
        scope = dict(scope)
        scope["headers"] = [
            (k, v) for k, v in scope["headers"] if k.lower() not in (b"if-none-match", b"if-modified-since")
        ]
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = [(k, v) for k, v in start.get("headers", [])]
            names = {k.lower(): v for k, v in headers}
            body = b"".join(chunks)
            if (
                start.get("status") == 200
                and names.get(b"content-type", b"").startswith(b"text/html")
                and b"content-encoding" not in names
            ):
                body = inject(body, self.script_url)
                drop = (b"content-length", b"etag", b"last-modified")
                headers = [(k, v) for k, v in headers if k.lower() not in drop]
                headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)


def install(served: Any, environ: Mapping[str, str], sign_out: str | None = None) -> dict[str, str]:
    """Refuse the routes of the features that are off and serve the UI script; the refused prefixes."""
    features = load(environ)
    static_prefix = environ.get(STATIC_PREFIX_ENV, "")
    refused = refused_routes(features, static_prefix)
    served.add_middleware(
        UiFeaturesFront,
        refused=refused,
        script=script(features, telemetry_off(features, environ), sign_out),
        static_prefix=static_prefix,
    )
    return refused
