"""The MLflow UI works in a real browser under the proxy's Content-Security-Policy.

Headless Chromium (Debian's package; installed here when missing, as `make test-infra` does) signs in
by sending the admin's Authorization header through the DevTools protocol, opens the experiments and
the models pages, and must see the names created for the test, with the CSP in force and no violation.
It trusts the proxy's self-signed certificate by its public key only (no blanket certificate bypass).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect

from tests.infra.conftest import TLS_CERT, TRACKING_URI
from tests.support.environ import patched_environ

pytestmark = pytest.mark.usefixtures("converged")

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]
# Collects the page's CSP violations before any of its scripts runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI} (${event.sourceFile}:${event.lineNumber})`);
});
"""


def _chromium() -> str:
    """Debian's chromium, installed when missing (idempotent, as the Makefile's test-infra does)."""
    if shutil.which("chromium") is None:
        subprocess.run(["apt-get", "update", "-q"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            check=True,
            timeout=1200,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    path = shutil.which("chromium")
    assert path, "chromium is not installed"
    return path


def _spki_pin(cert_path: str) -> str:
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol (flattened sessions)."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            answer = json.loads(self.socket.recv(timeout=60))
            if answer.get("id") == message_id:
                assert "error" not in answer, (method, answer["error"])
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=True, **params)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for_text(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.evaluate("document.body ? document.body.innerText : ''") or ""):
                return
            time.sleep(0.5)
        body = self.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"{text!r} never appeared; the page shows: {str(body)[:1500]!r}")


@pytest.fixture(scope="module")
def browser(secrets) -> Iterator[DevTools]:
    chromium = _chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={_spki_pin(TLS_CERT)}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and len(port_file.read_text().splitlines()) == 2):
                assert process.poll() is None and time.monotonic() < deadline, "chromium did not start"
                time.sleep(0.2)
            port, path = port_file.read_text().splitlines()
            with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30) as socket:
                tools = DevTools(socket)
                credentials = base64.b64encode(f"admin:{secrets['mlflow_admin_password']}".encode()).decode()
                for domain in ("Page.enable", "Network.enable", "Runtime.enable", "Log.enable"):
                    tools.page(domain)
                tools.page("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {credentials}"})
                tools.page("Page.addScriptToEvaluateOnNewDocument", source=RECORD_VIOLATIONS)
                yield tools
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


@pytest.fixture(scope="module")
def pages(admin_env) -> dict[str, tuple[str, str]]:
    """Each kind's own page and the name it must show. Its own page, not the list: other tests on a shared
    host fill the lists, and a list shows only its first page."""
    from mlflow import MlflowClient

    suffix = hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
    experiment, model = f"csp-experiment-{suffix}", f"csp-model-{suffix}"
    with patched_environ(admin_env):
        client = MlflowClient()
        experiment_id = client.create_experiment(experiment)
        client.create_registered_model(model)
    return {
        "experiment": (f"#/experiments/{experiment_id}", experiment),
        "model": (f"#/models/{model}", model),
    }


def _violations(tools: DevTools) -> list[str]:
    found = list(tools.evaluate("window.__cspViolations || []") or [])
    for event in tools.events:
        if event.get("method") == "Log.entryAdded":
            text = event["params"]["entry"].get("text", "")
            if "Content Security Policy" in text or "Content-Security-Policy" in text:
                found.append(text)
        if event.get("method") == "Runtime.consoleAPICalled":
            for arg in event["params"].get("args", []):
                if "Content Security Policy" in str(arg.get("value", "")):
                    found.append(str(arg["value"]))
    return found


def _document_csp(tools: DevTools) -> str:
    for event in tools.events:
        if event.get("method") == "Network.responseReceived" and event["params"].get("type") == "Document":
            headers = {k.lower(): v for k, v in event["params"]["response"]["headers"].items()}
            return headers.get("content-security-policy", "")
    return ""


@pytest.mark.parametrize("kind", ["experiment", "model"])
def test_ui_page_renders_its_data_under_the_csp(browser, pages, kind):
    page, name = pages[kind]
    browser.page("Page.navigate", url="about:blank")  # a full load, not a same-document hop
    browser.events.clear()
    browser.page("Page.navigate", url=f"{TRACKING_URI}/{page}")
    browser.wait_for_text(name)
    time.sleep(2)  # late chunks and fonts
    assert "default-src 'self'" in _document_csp(browser), "the UI was served without the proxy's CSP"
    assert _violations(browser) == []
