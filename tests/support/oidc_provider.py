"""A real OpenID Provider for the single sign-on tests: ``oidc-provider`` 9.x (certified) on Node.js.

``tests/support/oidc/`` holds the provider (``provider.mjs``) and its locked dependencies
(``package.json``, ``package-lock.json``). ``npm_install`` runs ``npm ci`` once per lock file into a cache
directory outside the work tree (idempotent: a marker names the lock's hash); ``running_provider`` starts
the provider on 127.0.0.1, waits for its discovery document and stops it on exit, bounded in time.

The provider's devInteractions serve its login form (any password) and consent form; ``sign_in`` submits
them as a browser would, following redirects with ``requests``.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from tests.support.services import free_ports, http_ok, stop_process, wait_for

SOURCE = Path(__file__).resolve().parent / "oidc"
CACHE = Path(os.environ.get("MLFLOW_PLATFORM_TEST_CACHE", Path.home() / ".cache" / "mlflow-platform"))
NPM_TIMEOUT = 600
START_TIMEOUT = 30


def npm_install(cache: Path = CACHE) -> Path:
    """The provider's directory with its node_modules installed by ``npm ci`` (once per lock file)."""
    lock = (SOURCE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (SOURCE / "package.json").read_bytes()).hexdigest()[:16]
    target = cache / f"oidc-provider-{digest}"
    marker = target / ".installed"
    if not marker.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is missing: the single sign-on tests need Node.js 20 and npm")
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCE / name, target / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=NPM_TIMEOUT,
            capture_output=True,
        )
        marker.write_text(digest + "\n")
    shutil.copyfile(SOURCE / "provider.mjs", target / "provider.mjs")
    return target


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()

    def registration(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
        }


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen
    log: Path

    def metadata(self) -> dict[str, Any]:
        response = requests.get(self.issuer + "/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        return dict(response.json())


def reserve_port() -> int:
    (port,) = free_ports(1)
    return port


@contextlib.contextmanager
def running_provider(
    port: int,
    clients: list[Client],
    accounts: dict[str, dict[str, Any]],
    workdir: Path,
    lifetime: float = 1800,
) -> Iterator[Provider]:
    """The provider on http://127.0.0.1:<port>; stopped on exit, killed by ``timeout`` after ``lifetime``."""
    directory = npm_install()
    log = workdir / "oidc-provider.log"
    env = {
        **os.environ,
        "OIDC_TEST_PORT": str(port),
        "OIDC_TEST_CLIENTS": json.dumps([c.registration() for c in clients]),
        "OIDC_TEST_ACCOUNTS": json.dumps(accounts),
        "NODE_ENV": "development",
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["timeout", "-s", "TERM", "-k", "10", str(int(lifetime)), "node", "provider.mjs"],
            cwd=directory,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    provider = Provider(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(
            lambda: http_ok(provider.issuer + "/.well-known/openid-configuration"),
            "oidc-provider",
            START_TIMEOUT,
            process,
        )
        yield provider
    finally:
        stop_process(process, timeout=15)


_FORM = re.compile(r"<form[^>]*action=\"([^\"]*)\"[^>]*>(.*?)</form>", re.S)
_INPUT = re.compile(r"<input[^>]*>", re.S)
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


def forms(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each form's action and its inputs' names and values (hidden ones filled in)."""
    found = []
    for action, inner in _FORM.findall(page):
        fields: dict[str, str] = {}
        for tag in _INPUT.findall(inner):
            attrs = dict(_ATTR.findall(tag))
            if "name" in attrs:
                fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
        found.append((html.unescape(action), fields))
    return found


def sign_in(session: requests.Session, start_url: str, login: str, deadline: float = 60) -> requests.Response:
    """Follow the sign-in from ``start_url`` through the provider's login and consent forms, as a browser.

    Returns the last response (the page the sign-in lands on, or an error page).
    """
    stop = time.monotonic() + deadline
    response = session.get(start_url, timeout=30)
    while time.monotonic() < stop:
        found = forms(response.text) if "text/html" in response.headers.get("Content-Type", "") else []
        prompts = [
            (action, fields) for action, fields in found if fields.get("prompt") in ("login", "consent")
        ]
        if not prompts:
            return response
        action, fields = prompts[0]
        if fields["prompt"] == "login":
            fields |= {"login": login, "password": "any-password"}
        response = session.post(urljoin(response.url, action), data=fields, timeout=30)
    raise TimeoutError("the sign-in did not finish in time")


if __name__ == "__main__":
    # `make test`: install the provider's dependencies once, before the tests (a no-op when done).
    print(f"oidc-provider installed in {npm_install()}")
