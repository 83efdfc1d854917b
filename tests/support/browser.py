"""Headless Chromium for tests, driven over the DevTools protocol (websockets, flattened sessions).

    with chromium() as browser, browser.open_page() as page:
        page.set_extra_headers({"Authorization": basic_authorization("admin", password)})
        page.navigate(f"{tracking_uri}/#/experiments")
        page.wait_for_text("Experiments")
        Path("results/ui/experiments.png").write_bytes(page.screenshot())
        page.cookies()

`chromium()` starts Debian's chromium with a private profile, in its own process group, and stops that
group on exit; a watchdog kills it once its lifetime is over, so a hung test cannot leave it behind.
Every DevTools call waits at most `DevTools.timeout` seconds for its answer.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.services import stop_process

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
# The DevTools domains a page enables by default: their events land in `DevTools.events`.
PAGE_DOMAINS = ("Page", "Network", "Runtime", "Log")
BODY_TEXT = "document.body ? document.body.innerText : ''"


class DevToolsError(RuntimeError):
    """The browser answered a DevTools call with an error, failed a navigation, or never answered."""


def chromium_executable(install: bool = False) -> str:
    """Debian's chromium; with `install`, apt-get installs it when missing (as the Makefile does)."""
    if shutil.which("chromium") is None and install:
        subprocess.run(["apt-get", "update", "-q"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            check=True,
            timeout=1200,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    path = shutil.which("chromium")
    if path is None:
        raise FileNotFoundError("chromium is not installed (make /usr/bin/chromium installs it)")
    return path


def basic_authorization(username: str, password: str) -> str:
    """The value of an `Authorization` header for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class DevTools:
    """One page (target) of a Chromium, driven over a browser-level DevTools connection."""

    def __init__(self, socket: ClientConnection, timeout: float = 60) -> None:
        self.socket = socket
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]

    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            message: dict[str, Any] = json.loads(self.socket.recv(timeout=max(timeout, 0.01)))
        except TimeoutError as error:
            raise DevToolsError(f"chromium did not answer within {timeout:.0f}s") from error
        return message

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one DevTools command (to the page's session with `session`) and return its result.
        Events read meanwhile are kept in `events`."""
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline - time.monotonic())
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self.events.append(answer)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command to this page's session, e.g. `page("Page.reload")`."""
        return self.call(method, session=True, **params)

    def enable(self, domains: Sequence[str] = PAGE_DOMAINS) -> None:
        for domain in domains:
            self.page(f"{domain}.enable")

    def wait_for_event(self, method: str, since: int = 0, timeout: float | None = None) -> dict[str, Any]:
        """The first event named `method` at or after index `since` of `events`, waiting for it if need be."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        index = since
        while True:
            for event in self.events[index:]:
                if event.get("method") == method:
                    return event
            index = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"no {method} event within {timeout or self.timeout:.0f}s")
            message = self._receive(remaining)
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str, wait_for_load: bool = True, timeout: float | None = None) -> None:
        """Open `url`; a new document is waited for until its load event (a same-document hop, e.g. a
        change of the URL's fragment only, has none)."""
        since = len(self.events)
        result = self.page("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"navigation to {url} failed: {result['errorText']}")
        if wait_for_load and result.get("loaderId"):
            self.wait_for_event("Page.loadEventFired", since=since, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (returned by value, so JSON-like)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def body_text(self) -> str:
        return str(self.evaluate(BODY_TEXT) or "")

    def wait_for(self, expression: str, what: str, timeout: float = 90) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{what} never happened; the page shows: {self.body_text()[:1500]!r}")

    def wait_for_text(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.evaluate(BODY_TEXT) or ""):
                return
            time.sleep(0.5)
        body = self.evaluate(BODY_TEXT)
        raise AssertionError(f"{text!r} never appeared; the page shows: {str(body)[:1500]!r}")

    def set_extra_headers(self, headers: dict[str, str]) -> None:
        """Headers sent with every request of the page from now on (needs the Network domain enabled)."""
        self.page("Network.setExtraHTTPHeaders", headers=headers)

    def add_script_on_new_document(self, source: str) -> None:
        """JavaScript run in every new document before the page's own scripts."""
        self.page("Page.addScriptToEvaluateOnNewDocument", source=source)

    def set_viewport(self, width: int, height: int) -> None:
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def screenshot(self, full_page: bool = False) -> bytes:
        """The page as a PNG image (the viewport, or the whole page with `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.page("Page.captureScreenshot", **params)["data"]
        return base64.b64decode(data)

    def cookies(self, urls: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The browser's cookies for the page's URL (or for `urls`): name, value, domain, httpOnly, ..."""
        params: dict[str, Any] = {"urls": list(urls)} if urls else {}
        cookies: list[dict[str, Any]] = self.page("Network.getCookies", **params)["cookies"]
        return cookies

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Target.closeTarget", targetId=self.target)


@dataclass
class Chromium:
    """A running Chromium: its process, private profile and browser-level DevTools websocket URL."""

    process: subprocess.Popen
    profile: Path
    websocket_url: str

    @contextlib.contextmanager
    def open_page(self, domains: Sequence[str] = PAGE_DOMAINS, timeout: float = 60) -> Iterator[DevTools]:
        """A new page on its own DevTools connection, with `domains` enabled; closed on exit."""
        with connect(self.websocket_url, max_size=None, open_timeout=30) as socket:
            tools = DevTools(socket, timeout=timeout)
            try:
                tools.enable(domains)
                yield tools
            finally:
                tools.close()


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def chromium(
    flags: Sequence[str] = (),
    executable: str | None = None,
    start_timeout: float = 60,
    lifetime: float = 1800,
) -> Iterator[Chromium]:
    """Start headless Chromium (CHROMIUM_FLAGS plus `flags`) with a private profile; stop it on exit.

    The browser gets its own process group, which is stopped (TERM, then KILL) on exit and killed by a
    watchdog once `lifetime` seconds have passed, whatever the caller is doing."""
    path = executable or chromium_executable()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [path, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        watchdog = threading.Timer(lifetime, _kill_group, args=(process,))
        watchdog.daemon = True
        watchdog.start()
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + start_timeout
            while not (port_file.exists() and len(port_file.read_text().splitlines()) == 2):
                if process.poll() is not None:
                    raise DevToolsError(f"chromium exited with {process.returncode} at start")
                if time.monotonic() > deadline:
                    raise DevToolsError(
                        f"chromium did not open its DevTools port within {start_timeout:.0f}s"
                    )
                time.sleep(0.2)
            port, ws_path = port_file.read_text().splitlines()
            yield Chromium(process, Path(profile), f"ws://127.0.0.1:{port}{ws_path}")
        finally:
            watchdog.cancel()
            stop_process(process, timeout=20)
