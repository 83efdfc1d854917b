"""nginx terminates TLS 1.2+ with the generated certificate and redirects plain HTTP to the configured name.

Request bodies: large only on the upload routes, and only once the credentials are checked (nginx asks the
auth app before it reads the body); a small limit everywhere else. HTTPS answers carry HSTS and a CSP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.conftest import PLATFORM_VARS, TLS_CERT, _vars_file
from tests.support.ansible import REPO, run_playbook

pytestmark = pytest.mark.usefixtures("converged")

# The name the proxy playbook gives the role (proxy_server_name).
SERVER_NAME = yaml.safe_load(PLATFORM_VARS.read_text(encoding="utf-8"))["platform_public_hostname"]


def _context(**kwargs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=TLS_CERT)
    for key, value in kwargs.items():
        setattr(context, key, value)
    return context


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_certificate_verifies_for_local_names(name):
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        _context().wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_is_refused():
    """The client offers only TLS 1.0 and 1.1; the server answers with a protocol_version alert."""
    context = _context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_tls_1_2_is_accepted():
    context = _context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_http_redirects_to_https():
    connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    connection.request("GET", "/some/path?x=1", headers={"Host": "localhost"})
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == "https://localhost/some/path?x=1"


def test_health_through_the_proxy():
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=_context())
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"OK")
    assert "nginx/" not in (response.getheader("Server") or "")


def test_unknown_host_header_is_refused_by_the_server():
    """The name the client used reaches MLflow's allowed-hosts check unchanged."""
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=_context())
    connection.request(
        "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "evil.example.com"}
    )
    assert connection.getresponse().status in (400, 403)


# --- request bodies: small everywhere, large only for authenticated uploads ------------------------

MB = 1024 * 1024
ACCESS_LOG = Path("/var/log/nginx/access.log")
# A 50 MB body read by a worker raises its peak RSS by at least that much; refused unread, it stays flat.
MAX_WORKER_GROWTH_KB = 16 * 1024


def _server_workers() -> list[int]:
    """The uvicorn worker processes of the MLflow server (children of its uvicorn master)."""
    procs = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(status.parent.name)] = (int(fields["PPid"]), cmdline)
    masters = {pid for pid, (_, cmd) in procs.items() if "uvicorn" in cmd and "mlflow_ext.auth.app" in cmd}
    workers = [pid for pid, (ppid, cmd) in procs.items() if ppid in masters and "spawn_main" in cmd]
    assert masters and workers, "no MLflow uvicorn workers found"
    return workers


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for {pid}")


class PeakGrowth:
    """Largest rise of the workers' resident memory during a block (peak RSS reset through clear_refs)."""

    def __enter__(self) -> PeakGrowth:
        self.workers = _server_workers()
        for pid in self.workers:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.before = {pid: _memory_kb(pid, "VmRSS") for pid in self.workers}
        return self

    def __exit__(self, *exc) -> None:
        self.kb = max(_memory_kb(pid, "VmHWM") - self.before[pid] for pid in self.workers)


def _send(method: str, path: str, size: int, headers: dict[str, str], prefix=b"", suffix=b""):
    """Stream a body of `size` bytes (prefix, filler, suffix); a refusal mid-body is not an error."""
    connection = http.client.HTTPSConnection("localhost", 443, timeout=120, context=_context())
    connection.putrequest(method, path)
    for name, value in {"Content-Length": str(size), **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    remaining = size - len(prefix) - len(suffix)
    try:
        connection.send(prefix)
        while remaining > 0:
            step = min(MB, remaining)
            connection.send(b"x" * step)
            remaining -= step
        connection.send(suffix)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def _access_log_line(marker: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in ACCESS_LOG.read_text(errors="replace").splitlines() if marker in line]
        if lines:
            return lines[-1]
        time.sleep(0.2)
    raise AssertionError(f"no access log line for {marker}")


def _upstream_bytes(line: str) -> int:
    """Bytes nginx sent upstream for the request (0 when it was never forwarded)."""
    match = re.search(r"\bupstream_sent=(\S+)", line)
    assert match, f"access log line without upstream_sent: {line}"
    return sum(int(part) for part in re.findall(r"\d+", match.group(1)))


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/probe/{marker}.bin"),
        ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ],
    ids=["upload-route", "api-route"],
)
def test_anonymous_large_body_is_refused_before_it_reaches_the_server(method, route):
    marker = secrets.token_hex(8)
    path = route.format(marker=marker) + f"?probe={marker}"
    with PeakGrowth() as growth:
        response, _ = _send(method, path, 50 * MB, {"Content-Type": "application/octet-stream"})
    assert response.status in (401, 413)
    assert growth.kb < MAX_WORKER_GROWTH_KB, f"a worker's resident memory grew by {growth.kb} kB"
    assert _upstream_bytes(_access_log_line(marker)) < 64 * 1024


def test_anonymous_upload_is_answered_with_a_challenge():
    response, body = _send("PUT", "/api/2.0/mlflow-artifacts/artifacts/probe/anonymous.bin", MB, {})
    assert response.status == 401
    assert (response.getheader("WWW-Authenticate") or "").startswith("Basic")
    assert json.loads(body)["error_code"] == "UNAUTHENTICATED"


def test_a_20_mb_log_batch_is_too_large(secrets_dir):
    password = (secrets_dir / "mlflow_admin_password").read_text().strip()
    auth = base64.b64encode(f"admin:{password}".encode()).decode()
    prefix = b'{"run_id": "0123456789abcdef0123456789abcdef", "tags": [{"key": "big", "value": "'
    response, _ = _send(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        20 * MB,
        {"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        prefix=prefix,
        suffix=b'"}]}',
    )
    assert response.status == 413


def test_an_authenticated_50_mb_artifact_upload_goes_through(admin_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from tests.support.environ import patched_environ

    payload = tmp_path / "model.bin"
    payload.write_bytes(os.urandom(MB) * 50)
    with patched_environ(admin_env):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"proxy-upload-{secrets.token_hex(4)}")
        run = client.create_run(experiment_id)
        client.log_artifact(run.info.run_id, str(payload), "weights")
        fetched = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="weights/model.bin", dst_path=str(tmp_path / "out")
        )
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert hashlib.sha256(Path(fetched).read_bytes()).hexdigest() == digest


def test_a_realistic_large_log_batch_fits(admin_env):
    """1000 metrics with long names and 100 tags of MLflow's longest value (8000 characters)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from tests.support.environ import patched_environ

    with patched_environ(admin_env):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"proxy-batch-{secrets.token_hex(4)}")
        run_id = client.create_run(experiment_id).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric("k" * 240 + f"{i:010d}", 0.5, now, i) for i in range(1000)])
        client.log_batch(run_id, tags=[RunTag(f"tag-{i}", "é" * 8000) for i in range(100)])
        logged = client.get_run(run_id).data
    assert len(logged.metrics) == 1000 and logged.tags["tag-99"] == "é" * 8000


# --- redirect and security headers --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "localhost"])
def test_http_redirects_to_the_configured_name_whatever_the_host_header(host):
    connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    connection.request("GET", "/some/path?x=1", headers={"Host": host})
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{SERVER_NAME}/some/path?x=1"


@pytest.mark.parametrize("path", ["/", "/health", "/api/2.0/mlflow/experiments/search?max_results=1"])
def test_https_responses_carry_hsts_and_csp(path):
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=_context())
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    hsts = response.getheader("Strict-Transport-Security") or ""
    assert re.fullmatch(r"max-age=(\d+)", hsts) and int(hsts.split("=")[1]) >= 15552000, hsts
    csp = response.getheader("Content-Security-Policy") or ""
    directives = dict(([*part.strip().split(" ", 1), ""])[:2] for part in csp.split(";") if part.strip())
    assert directives.get("default-src") == "'self'", csp
    assert "'unsafe-eval'" not in csp and "frame-ancestors" in directives and "object-src" in directives


def _wait_for_health(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response, _ = _send("GET", "/health", 0, {})
            if response.status == 200:
                return True
        except OSError:
            pass
        time.sleep(1)
    return False


def test_a_server_that_is_down_is_a_retryable_503(secrets_dir):
    """MLflow's client retries a 503 with its own backoff; a bare 502 page from nginx is a failure."""
    password = (secrets_dir / "mlflow_admin_password").read_text().strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
    subprocess.run(["systemctl", "stop", "mlflow-server"], check=True, timeout=120)
    try:
        for method, path, size in [
            ("GET", "/api/2.0/mlflow/experiments/search?max_results=1", 0),
            ("PUT", "/api/2.0/mlflow-artifacts/artifacts/probe/while-down.bin", 1024),
        ]:
            response, body = _send(method, path, size, auth)
            assert response.status == 503, (method, path, response.status, body[:200])
            assert response.getheader("Retry-After") is None, (
                "a fixed wait would cut the client's backoff short"
            )
            assert json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    finally:
        subprocess.run(["systemctl", "start", "mlflow-server"], check=True, timeout=120)
        assert _wait_for_health(120), "the server did not answer again after its restart"


# --- readiness: a server that is not ready gets no requests ---------------------------------------------

ROLE = REPO / "ansible" / "roles" / "proxy"
NOT_READY = json.dumps(
    {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "Not ready: tracking_database unavailable."}
).encode()


class NotReadyServer(http.server.ThreadingHTTPServer):
    """Stands in for a replica whose database is unreachable: every request gets the 503 MLflow answers then
    (TEMPORARILY_UNAVAILABLE), /ready included. Counts what reaches it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(NOT_READY)))
                self.end_headers()
                self.wfile.write(NOT_READY)

            do_HEAD = do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _second_proxy(tmp_path: Path, upstreams: list[str]) -> Iterator[int]:
    """A second nginx with the proxy role's own nginx.conf (rendered from its template and defaults) in front
    of `upstreams`, on a free loopback port, with its pid and logs in tmp_path; stopped afterwards."""
    https_port = _free_port()
    values = {
        "proxy_upstreams": upstreams,
        "proxy_http_port": _free_port(),
        "proxy_https_port": https_port,
        "proxy_listen_ipv6": False,
    }
    rendered = tmp_path / "nginx.conf"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render the proxy's nginx.conf",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.template": {
                                "src": str(ROLE / "templates" / "nginx.conf.j2"),
                                "dest": str(rendered),
                                "mode": "0644",
                            },
                        }
                    ],
                }
            ]
        )
    )
    render = run_playbook("render-proxy", str(playbook), "-e", f"@{_vars_file(tmp_path, values)}")
    assert render.returncode == 0, render.output[-2000:]
    config = rendered.read_text()
    for live, own in [
        ("pid /run/nginx.pid;", f"pid {tmp_path}/nginx.pid;"),
        ("error_log /var/log/nginx/error.log;", f"error_log {tmp_path}/error.log;"),
        ("access_log /var/log/nginx/access.log", f"access_log {tmp_path}/access.log"),
    ]:
        assert live in config
        config = config.replace(live, own)
    rendered.write_text(config)
    subprocess.run(["nginx", "-t", "-q", "-c", str(rendered)], check=True, timeout=30)
    nginx = subprocess.Popen(["nginx", "-c", str(rendered), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https_port), timeout=1):
                break
            time.sleep(0.1)
        yield https_port
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def test_the_proxy_routes_around_a_server_that_is_not_ready(tmp_path, secrets_dir):
    """Two upstreams: the real server (ready) and one answering 503 as a server whose database is gone
    does. Through the proxy role's configuration every /ready and API GET is answered by the ready one: the
    first 503 sends the request on and takes the other out for proxy_upstream_fail_timeout, in every nginx
    worker."""
    password = (secrets_dir / "mlflow_admin_password").read_text().strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
    not_ready = NotReadyServer()
    thread = threading.Thread(target=not_ready.serve_forever, daemon=True)
    thread.start()
    try:
        with _second_proxy(tmp_path, ["127.0.0.1:5000", f"127.0.0.1:{not_ready.server_port}"]) as port:
            statuses = []
            for i in range(20):
                path = "/ready" if i % 2 else "/api/2.0/mlflow/experiments/search?max_results=1"
                connection = http.client.HTTPSConnection("localhost", port, timeout=30, context=_context())
                connection.request("GET", path, headers=auth)
                response = connection.getresponse()
                response.read()
                connection.close()
                statuses.append(response.status)
    finally:
        not_ready.shutdown()
        not_ready.server_close()
    print(f"\nthrough the proxy: {statuses}; requests that reached the unready server: {not_ready.hits}")
    assert statuses == [200] * 20
    assert not_ready.hits <= 1
