"""`mlflow-ext` fails fast and speaks one language: every command that talks to the MLflow server stops within
seconds with the same exit code for the same condition (docs/cli.md), names the setting that fixes it, creates
no local store by accident, and with ``--output json`` prints the error as JSON on stdout too.

The commands run as subprocesses in a temporary working directory, against a closed loopback port, a name that
does not resolve, and a loopback TLS server with a self-signed certificate. Each run is bounded by a time-out
far below MLflow's own retries (minutes), so a command that retries fails the test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_ext.clients import tracking
from mlflow_ext.errors import ExitCode, ServerUnreachable
from tests.support.answering import Answering

ROOT = Path(__file__).resolve().parents[2]
BOUND_SECONDS = 30  # MLflow's client retries a dead server for minutes; the CLI checks it in seconds
_CLI = "import sys; sys.argv[0] = 'mlflow-ext'; from mlflow_ext.cli import run; run()"

# Every command that talks to the MLflow server, with arguments that would get it there.
SERVER_COMMANDS = {
    "inspect": ["inspect", "models:/m/1"],
    "promote": ["promote", "m", "1", "--to", "staging"],
    "rollback": ["rollback", "m", "--alias", "staging"],
    "report": ["report", "--model", "m", "--version", "1", "--status", "deployed"],
    "register": ["register", "--model", "m", "--pipeline", "p", "--counter", "1"],
    "verify-data": ["verify-data", "--data", "test.csv", "--model", "m", "--version", "1"],
    "evaluate": ["evaluate", "--data", "test.csv", "--target", "y", "--model", "m", "--version", "1"],
    "deploy": ["deploy", "--model", "m", "--version", "1", "--alias", "a", "--root", "/tmp/none"],
    "smoke-test": ["smoke-test", "--data", "test.csv", "--model", "m", "--alias", "a", "--root", "/tmp/none"],
    "tokens list": ["tokens", "list"],
    "users list": ["users", "list"],
    "users create": ["users", "create", "bob"],
    "grant list": ["grant", "list", "bob"],
    "gocd generate": ["gocd", "generate", "--from-registry", "--out", "out"],
}


# Runs the CLI, then names the heavy packages it had loaded: a command that imports MLflow or Flask (about two
# seconds) before it checks the server fails slowly however quickly the check answers. SQLAlchemy alone (the
# auth database's tables, for the provisioning commands, about 0.2 s) is not among them.
_CLI_THEN_MODULES = f"""
import sys
try:
    {_CLI}
finally:
    heavy = {{m.split(".")[0] for m in sys.modules}} & {{"mlflow", "flask", "pandas", "numpy"}}
    print("LOADED", *sorted(heavy), file=sys.stderr)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "GO_", "REQUESTS_", "CURL_", "SSL_CERT")) and k != "DEPLOY_TARGET"
    }
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)), **extra)
    return env


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**env),
        timeout=BOUND_SECONDS,
        check=False,
    )


def _json_error(result: subprocess.CompletedProcess[str]) -> dict:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON document on stdout, got: {result.stdout!r} (stderr {result.stderr!r})"
    return json.loads(lines[0])["error"]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the block ends: nothing listens there


@pytest.mark.parametrize("name", sorted(SERVER_COMMANDS))
def test_no_tracking_uri_is_a_config_error_and_creates_nothing(name, tmp_path):
    result = cli(SERVER_COMMANDS[name], tmp_path, MLFLOW_EXT_OUTPUT="json")
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "MLFLOW_TRACKING_URI" in result.stderr and "Traceback" not in result.stderr
    assert _json_error(result) == {
        "code": 3,
        "kind": "config",
        "message": result.stderr.strip().removeprefix("mlflow-ext: "),
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a local store was created"


@pytest.mark.parametrize("name", sorted(SERVER_COMMANDS))
def test_a_refused_connection_is_server_unreachable_in_every_command(name, tmp_path, closed_port):
    uri = f"http://127.0.0.1:{closed_port}"
    result = cli([*SERVER_COMMANDS[name], "--tracking-uri", uri], tmp_path)
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert f"connection to 127.0.0.1:{closed_port} refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(SERVER_COMMANDS))
def test_every_command_checks_the_server_before_loading_mlflow(name, tmp_path, closed_port):
    uri = f"http://127.0.0.1:{closed_port}"
    result = subprocess.run(
        [sys.executable, "-c", _CLI_THEN_MODULES, *SERVER_COMMANDS[name], "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(MLFLOW_TRACKING_TOKEN="not-a-token"),
        timeout=BOUND_SECONDS,
        check=False,
    )
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    message, loaded = result.stderr.rsplit("LOADED", 1)
    assert "refused" in message
    assert loaded.split() == [], f"{name} loaded {loaded.strip()} before it failed"


AUTH_COMMANDS = ["tokens list", "users list", "users create", "grant list"]


@pytest.mark.parametrize("name", ["inspect", "promote", "verify-data", *AUTH_COMMANDS])
def test_errors_are_json_on_stdout_with_output_json(name, tmp_path, closed_port):
    args = [*SERVER_COMMANDS[name], "--output", "json", "--tracking-uri", f"http://127.0.0.1:{closed_port}"]
    error = _json_error(cli(args, tmp_path))
    assert error["code"] == ExitCode.UNREACHABLE and error["kind"] == "unreachable"
    assert "refused" in error["message"]


@pytest.mark.parametrize("name", ["inspect", "promote", "verify-data", *AUTH_COMMANDS])
def test_an_unknown_certificate_fails_at_once_naming_the_ca_setting(name, tmp_path):
    with Answering(tls_dir=tmp_path) as server:
        result = cli([*SERVER_COMMANDS[name], "--tracking-uri", server.url], tmp_path)
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert "certificate" in result.stderr and "MLFLOW_TRACKING_SERVER_CERT_PATH" in result.stderr


def test_the_ca_setting_makes_the_certificate_good(tmp_path):
    with Answering(tls_dir=tmp_path) as server:
        assert server.cert is not None
        with pytest.raises(ServerUnreachable, match="MLFLOW_TRACKING_SERVER_CERT_PATH"):
            tracking.check_server(server.url, {})
        environ = {"MLFLOW_TRACKING_SERVER_CERT_PATH": str(server.cert)}
        assert tracking.check_server(server.url, environ) == server.url
        wrong = tmp_path / "other.crt"
        wrong.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
        with pytest.raises(ServerUnreachable, match=f"MLFLOW_TRACKING_SERVER_CERT_PATH is {wrong}"):
            tracking.check_server(server.url, {"MLFLOW_TRACKING_SERVER_CERT_PATH": str(wrong)})


@pytest.mark.parametrize("name", ["inspect", "promote", "tokens list", "users list"])
def test_an_unknown_host_name_is_server_unreachable(name, tmp_path):
    result = cli([*SERVER_COMMANDS[name], "--tracking-uri", "http://mlflow-platform.invalid"], tmp_path)
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert "cannot resolve the host name 'mlflow-platform.invalid'" in result.stderr


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory) -> str:
    """A registry with nothing in it, named on purpose: a local SQLite store."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.mark.parametrize("name", ["inspect", "promote", "verify-data"])
def test_no_such_version_is_not_found_in_every_command(name, tmp_path, empty_registry):
    args = [*SERVER_COMMANDS[name], "--tracking-uri", empty_registry, "--output", "json"]
    result = cli(args, tmp_path)
    assert result.returncode == ExitCode.NOT_FOUND, result.stderr
    assert _json_error(result)["kind"] == "not_found"


def test_a_usage_error_is_usage_and_json_with_output_json(tmp_path):
    result = cli(["inspect", "nonsense:/x", "--output", "json"], tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert _json_error(result)["kind"] == "usage"
    assert cli(["promote", "--output", "json"], tmp_path).returncode == ExitCode.USAGE  # missing arguments


def test_docs_list_every_exit_code_as_errors_defines_them():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", text, flags=re.MULTILINE))
    assert rows == {str(int(code)): code.kind for code in ExitCode}


def test_help_names_the_environment_variables(tmp_path):
    top = cli(["--help"], tmp_path).stdout
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_EXT_RUN_TAGS"):
        assert name in top
    promote = " ".join(cli(["promote", "--help"], tmp_path).stdout.split())
    assert "env var: MLFLOW_TRACKING_URI" in promote and "env var: MLFLOW_EXT_PROMOTION_REASON" in promote


def test_an_mlflow_error_the_library_left_untranslated_exits_by_its_error_code():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_ALREADY_EXISTS

    from mlflow_ext.cli import _classify

    exists = MlflowException("Model m already exists.", error_code=RESOURCE_ALREADY_EXISTS)
    assert _classify(exists) == (ExitCode.CONFLICT, "Model m already exists.")
    denied = MlflowException("Permission denied", error_code=PERMISSION_DENIED)
    assert _classify(denied) == (ExitCode.DENIED, "Permission denied")
    assert _classify(ValueError("a bug")) is None  # a traceback, not a guess


@pytest.mark.parametrize(
    ("status", "code"),
    [(None, ExitCode.UNREACHABLE), (401, ExitCode.DENIED), (403, ExitCode.DENIED),
     (404, ExitCode.NOT_FOUND), (409, ExitCode.CONFLICT), (500, ExitCode.FAILED)],
)  # fmt: skip
def test_the_auth_api_answers_map_to_the_shared_codes(status, code):
    from mlflow_ext.errors import AuthApiError

    assert AuthApiError("x", status=status).exit_code == code
