"""The light client (client/pyproject.toml, `make client`): a fresh venv installs the wheel on mlflow-skinny
and no server package; a training script run there gets its lineage tags from the real platform, and the
client commands (inspect, promote, report, verify-data) work against it without loading a server module; so
does the README's example, examples/quickstart.py.

The venv is tests/support/client_venv's; tests/infra/test_client_install.py runs the same script against
the provisioned platform at https://localhost, as a GoCD agent would.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.client_venv import ROOT, TRAIN, client_venv
from tests.support.environ import patched_environ
from tests.support.gitrepo import committed_repo

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "quickstart.py"
SERVER_PACKAGES = {"mlflow", "flask", "sqlalchemy", "alembic", "gunicorn", "psycopg2-binary", "boto3"}
# Runs `mlflow-ext` and reports on stderr which server modules it loaded.
_CLI = (
    "import atexit, sys; atexit.register(lambda: print('SERVER-MODULES', *sorted(m for m in sys.modules "
    "if m.split('.')[0] in ('flask', 'sqlalchemy', 'alembic') or m.startswith('mlflow.server')), "
    "file=sys.stderr)); sys.argv[0] = 'mlflow-ext'; from mlflow_ext.cli import run; run()"
)


@pytest.fixture(scope="module")
def client_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return client_venv(tmp_path_factory.mktemp("client"))


def _env(platform) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO_", "MLFLOW_", "PYTHON"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", **platform.client_env()}


def _cli(client_bin: Path, platform, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(client_bin / "python"), "-c", _CLI, *args],
        env=_env(platform),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    loaded = result.stderr.rsplit("SERVER-MODULES", 1)[-1].split()
    assert loaded == [], f"mlflow-ext {args[0]} loaded server modules: {loaded}"
    return result


def test_the_client_installs_without_server_packages(client_bin):
    listed = subprocess.run(
        [str(client_bin / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert {"mlflow-platform-client", "mlflow-skinny"} <= names
    assert not names & SERVER_PACKAGES, f"server packages in the client: {sorted(names & SERVER_PACKAGES)}"
    python = str(client_bin / "python")
    help_text = subprocess.run([str(client_bin / "mlflow-ext"), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "promote" in help_text.stdout
    assert subprocess.run([python, "-c", "import mlflow_ext.run_context"], check=False).returncode == 0
    # http(s) tracking URIs get the client's REST store (mlflow_ext.rest_store) through its entry point.
    store = subprocess.run(
        [python, "-c", "from mlflow.tracking import MlflowClient; "
         "print(type(MlflowClient(tracking_uri='http://127.0.0.1:1')._tracking_client.store).__name__)"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert store.stdout.strip() == "FastRestStore", store.stderr
    flask = subprocess.run([python, "-c", "import flask"], capture_output=True, check=False)
    assert flask.returncode != 0
    server_only = subprocess.run([str(client_bin / "mlflow-ext"), "tokens", "list"], capture_output=True,
                                 text=True, check=False)  # fmt: skip
    assert server_only.returncode == 3 and "needs the full install" in server_only.stderr


def test_a_training_script_and_the_client_commands_against_the_platform(client_bin, platform, tmp_path):
    repo = committed_repo(
        tmp_path / "model", {"train.py": TRAIN}, "https://git.example.com/ml/model.git", "train"
    )
    data = tmp_path / "test.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(100)))
    trained = subprocess.run(
        [str(client_bin / "python"), str(repo / "train.py"), str(data)],
        cwd=repo, env=_env(platform), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.split("RESULT=", 1)[1])
    assert result["server"] == []
    assert result["store"] == "FastRestStore"  # log_params went through its log_batch
    run_id = result["run_id"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=platform.tracking_uri)
    with patched_environ(platform.client_env()):
        tags = client.get_run(run_id).data.tags
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["lineage.code.commit"] == head.stdout.strip()
    assert tags["lineage.data.train.role"] == "training" and tags["lineage.data.test.rows"] == "100"
    assert tags["lineage.data.test.fingerprint"].startswith("sha256:")
    with patched_environ(platform.client_env()):
        logged = client.get_run(run_id).data
    assert logged.params["C"] == "0.5" and logged.metrics["accuracy"] == 0.93

    inspected = _cli(client_bin, platform, "inspect", f"runs:/{run_id}", "--output", "json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["run"]["id"] == run_id

    name = f"client-{uuid.uuid4().hex[:8]}"
    with patched_environ(platform.client_env()):
        client.create_registered_model(name)
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
    promoted = _cli(client_bin, platform, "promote", name, version, "--to", "staging", "--output", "json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["changed"] is True
    verified = _cli(client_bin, platform, "verify-data", "--data", str(data), "--model", name,
                    "--version", version, "--output", "json")  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    reported = _cli(client_bin, platform, "report", "--model", name, "--version", version,
                    "--status", "deployed", "--output", "json")  # fmt: skip
    assert reported.returncode == 0, reported.stderr
    missing = _cli(client_bin, platform, "inspect", f"models:/{name}/99", "--output", "json")
    assert missing.returncode == 8 and json.loads(missing.stdout)["error"]["kind"] == "not_found"


def test_the_readme_example_runs_on_the_client(client_bin, platform):
    name = f"client-quickstart-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [str(client_bin / "python"), str(EXAMPLE), "--experiment", name, "--model-name", name],
        env=_env(platform), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["prediction"] == [8.0, 12.0]
    import mlflow

    with patched_environ(platform.client_env()):
        tags = mlflow.MlflowClient(tracking_uri=platform.tracking_uri).get_run(summary["run_id"]).data.tags
    assert tags["lineage.env.python"]  # the client's run-context provider ran
