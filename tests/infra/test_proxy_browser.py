"""The MLflow UI works in a real browser under the proxy's Content-Security-Policy.

Headless Chromium (Debian's package; installed here when missing, as `make test-infra` does) signs in
by sending the admin's Authorization header through the DevTools protocol, opens the experiments and
the models pages, and must see the names created for the test, with the CSP in force and no violation.
It trusts the proxy's self-signed certificate by its public key only (no blanket certificate bypass).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.infra.conftest import TLS_CERT, TRACKING_URI
from tests.support.browser import DevTools, basic_authorization, chromium, chromium_executable
from tests.support.environ import patched_environ

pytestmark = pytest.mark.usefixtures("converged")

# Collects the page's CSP violations before any of its scripts runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI} (${event.sourceFile}:${event.lineNumber})`);
});
"""


def _spki_pin(cert_path: str) -> str:
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(secrets) -> Iterator[DevTools]:
    pin = f"--ignore-certificate-errors-spki-list={_spki_pin(TLS_CERT)}"
    executable = chromium_executable(install=True)
    with chromium(flags=[pin], executable=executable) as running, running.open_page() as tools:
        password = secrets["mlflow_admin_password"]
        tools.set_extra_headers({"Authorization": basic_authorization("admin", password)})
        tools.add_script_on_new_document(RECORD_VIOLATIONS)
        yield tools


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
