"""Stock MLflow features the platform does not configure are off by default; each setting turns its own on.

Off (the session's platform, default settings): the demo generator, the GenAI assistant and the MCP server
registry answer 404 with MLflow's error JSON and write nothing; the AI gateway answers 501 (MLflow's own
switch) and server-info tells the UI it is off. On (a second platform with every setting true): each answers
as MLflow does, so the refusals above are the settings' doing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import DevTools, basic_authorization, chromium
from tests.support.environ import patched_environ
from tests.support.services import Platform, running_platform

pytestmark = pytest.mark.integration

FEATURES_ON = {
    "MLFLOW_ENABLE_AI_GATEWAY": "true",
    "MLFLOW_EXT_UI_ASSISTANT": "true",
    "MLFLOW_EXT_UI_DEMO": "true",
    "MLFLOW_EXT_UI_MCP_REGISTRY": "true",
    # The platform's telemetry setting off, so the UI shows its notice; MLflow itself still sends nothing
    # (it stays quiet when CI is set).
    "MLFLOW_DISABLE_TELEMETRY": "false",
    "CI": "true",
}
DEMO_EXPERIMENT = "MLflow Demo"
# (method, path, body, the setting that turns the route on)
REFUSED = [
    ("POST", "/ajax-api/3.0/mlflow/demo/generate", {}, "MLFLOW_EXT_UI_DEMO"),
    ("POST", "/ajax-api/3.0/mlflow/demo/generate", {"features": ["traces"]}, "MLFLOW_EXT_UI_DEMO"),
    ("POST", "/ajax-api/3.0/mlflow/demo/delete", {}, "MLFLOW_EXT_UI_DEMO"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config", None, "MLFLOW_EXT_UI_ASSISTANT"),
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config", {"providers": {}}, "MLFLOW_EXT_UI_ASSISTANT"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/message", {"message": "hello"}, "MLFLOW_EXT_UI_ASSISTANT"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install", {}, "MLFLOW_EXT_UI_ASSISTANT"),
    ("GET", "/api/3.0/mlflow/mcp-servers", None, "MLFLOW_EXT_UI_MCP_REGISTRY"),
    ("GET", "/ajax-api/3.0/mlflow/mcp-servers", None, "MLFLOW_EXT_UI_MCP_REGISTRY"),
    ("POST", "/api/3.0/mlflow/mcp-servers", {"name": "refused"}, "MLFLOW_EXT_UI_MCP_REGISTRY"),
]
GATEWAY = [
    ("GET", "/ajax-api/3.0/mlflow/gateway/supported-providers", None),
    (
        "POST",
        "/api/3.0/mlflow/gateway/secrets/create",
        {"secret_name": "k", "secret_value": {"api_key": "x"}},
    ),
    ("POST", "/gateway/refused/mlflow/invocations", {"messages": [{"role": "user", "content": "hi"}]}),
]


def call(
    platform: Platform, method: str, path: str, body: Any = None, auth: bool = True
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = basic_authorization(platform.admin_username, platform.admin_password)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(platform.tracking_uri + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"raw": raw.decode(errors="replace")[:500]}


def snapshot(platform: Platform) -> dict[str, list[str]]:
    """What the demo generator writes to: experiments, registered models (prompts are models), traces."""
    from mlflow import MlflowClient

    with patched_environ(platform.client_env()):
        client = MlflowClient()
        experiments = client.search_experiments(view_type=3, max_results=1000)
        return {
            "experiments": sorted(f"{e.experiment_id}:{e.name}:{e.lifecycle_stage}" for e in experiments),
            "models": sorted(m.name for m in client.search_registered_models(max_results=1000)),
            "traces": sorted(
                t.info.trace_id
                for t in client.search_traces(
                    locations=[e.experiment_id for e in experiments], max_results=500
                )
            ),
        }


@pytest.fixture(scope="module")
def features_on() -> Iterator[Platform]:
    with running_platform(extra_env=FEATURES_ON) as started:
        yield started


@pytest.mark.parametrize(("method", "path", "body", "setting"), REFUSED)
def test_off_by_default_refused_with_mlflow_error_json_and_nothing_written(
    platform, method, path, body, setting
):
    before = snapshot(platform)
    status, answer = call(platform, method, path, body)
    assert status == 404, answer
    assert answer["error_code"] == "ENDPOINT_NOT_FOUND"
    assert setting in answer["message"]
    assert snapshot(platform) == before
    assert DEMO_EXPERIMENT not in " ".join(before["experiments"])


def test_refused_before_authentication(platform):
    status, answer = call(platform, "POST", "/ajax-api/3.0/mlflow/demo/generate", {}, auth=False)
    assert (status, answer["error_code"]) == (404, "ENDPOINT_NOT_FOUND")


@pytest.mark.parametrize(("method", "path", "body"), GATEWAY)
def test_gateway_off_by_mlflows_own_switch(platform, method, path, body):
    before = snapshot(platform)
    status, answer = call(platform, method, path, body)
    assert status == 501, answer
    assert "gateway" in json.dumps(answer).lower()
    assert snapshot(platform) == before


def test_server_info_reports_the_gateway_off_and_on(platform, features_on):
    assert call(platform, "GET", "/ajax-api/3.0/mlflow/server-info")[1]["features_enabled"] == {
        "gateway": False
    }
    assert call(features_on, "GET", "/ajax-api/3.0/mlflow/server-info")[1]["features_enabled"] == {
        "gateway": True
    }


def test_the_other_routes_still_answer(platform):
    status, answer = call(platform, "POST", "/api/2.0/mlflow/experiments/search", {"max_results": 5})
    assert status == 200 and answer["experiments"], answer


def test_demo_on_writes_its_data(features_on):
    before = snapshot(features_on)
    status, answer = call(features_on, "POST", "/ajax-api/3.0/mlflow/demo/generate", {"features": ["traces"]})
    assert status == 200, answer
    assert answer["status"] == "created"
    after = snapshot(features_on)
    assert any(name.split(":")[1] == DEMO_EXPERIMENT for name in after["experiments"])
    assert after != before


def test_assistant_on_answers(features_on):
    status, answer = call(features_on, "GET", "/ajax-api/3.0/mlflow/assistant/config")
    assert status == 200, answer
    assert "providers" in answer


def test_mcp_registry_on_answers(features_on):
    status, answer = call(features_on, "GET", "/api/3.0/mlflow/mcp-servers")
    assert status == 200, answer


def test_gateway_on_answers(features_on):
    status, answer = call(features_on, "GET", "/ajax-api/3.0/mlflow/gateway/supported-providers")
    assert status == 200, answer


# What each feature shows, as the page's visible text (innerText leaves out what is hidden).
UI_TEXTS = {
    "telemetry notice": "Information about UI telemetry",
    "demo": "Start Demo",
    "assistant": "MLflow Assistant",
    "gateway": "AI Gateway",
    "mcp registry": "MCP registry",
}
# Where each feature shows: the home page has the notice and the demo card; both have the menu and assistant.
PAGES = {
    "home": ("#/", "Welcome to MLflow", ["telemetry notice", "demo", "assistant", "gateway", "mcp registry"]),
    # The list's own header: on a shared platform the Default experiment may be pages away.
    "experiments": ("#/experiments", "Time created", ["assistant", "gateway", "mcp registry"]),
}
RESULTS = Path(__file__).resolve().parents[2] / "results" / "ui"


def open_page(page: DevTools, platform: Platform, fragment: str, ready_text: str) -> float:
    """Load a page of this platform's UI afresh; the time it took to show ``ready_text``."""
    page.set_extra_headers(
        {"Authorization": basic_authorization(platform.admin_username, platform.admin_password)}
    )
    page.navigate("about:blank")
    started = time.monotonic()
    page.navigate(f"{platform.tracking_uri}/{fragment}")
    page.wait_for_text(ready_text, timeout=90)
    return time.monotonic() - started


def visible_features(page: DevTools) -> set[str]:
    text = page.body_text()
    return {feature for feature, marker in UI_TEXTS.items() if marker in text}


@pytest.fixture(scope="module")
def browser_page() -> Iterator[DevTools]:
    with chromium(lifetime=900) as browser, browser.open_page() as page:
        page.set_viewport(1400, 900)
        yield page


@pytest.mark.parametrize("name", list(PAGES))
def test_ui_hides_the_features_that_are_off(platform, features_on, browser_page, name):
    fragment, ready_text, expected = PAGES[name]
    RESULTS.mkdir(parents=True, exist_ok=True)
    # On: every feature shows up (lazy chunks, server-info and the assistant's config come after the page).
    open_page(browser_page, features_on, fragment, ready_text)
    started = time.monotonic()
    while (seen := visible_features(browser_page)) != set(expected) and time.monotonic() - started < 45:
        time.sleep(0.5)
    shown_after = time.monotonic() - started
    (RESULTS / f"{name}-features-on.png").write_bytes(browser_page.screenshot())
    assert seen == set(expected), f"the {name} page with every feature on shows only {sorted(seen)}"
    # Off: none shows up, watched for twice as long as they took to show (at least 6 s).
    open_page(browser_page, platform, fragment, ready_text)
    started, shown = time.monotonic(), set()
    while time.monotonic() - started < max(6.0, 2 * shown_after):
        shown |= visible_features(browser_page)
        time.sleep(0.5)
    (RESULTS / f"{name}.png").write_bytes(browser_page.screenshot())
    assert shown == set(), f"the {name} page shows features that are off: {sorted(shown)}"
