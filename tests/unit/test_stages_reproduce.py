"""`mlflow-ext reproduce` on a SQLite tracking store and throwaway git repositories: the iris example
reproduces with identical metrics (from runs:/ and models:/ URIs), a changed training file is caught before
anything runs, and a non-deterministic script is reported as differing (exit code 7, JSON on stdout).

Bounded: each case trains a small script two or three times (a few seconds each); the environment is this
interpreter (``--env current``): building a venv from a listing is pip's work, minutes, not tested here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_ext import run_context as keys
from mlflow_ext.errors import LineageError, StageFailed
from mlflow_ext.stages import reproduce as rp
from tests.support.gitrepo import committed_repo, git

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "iris-classifier"
VENV_BIN = Path(sys.executable).parent

NOISY = """\
import random, sys
import mlflow

with mlflow.start_run():
    mlflow.log_param("draws", 3)
    mlflow.log_metric("score", random.random())
    mlflow.log_metric("fixed", 1.0)
"""

READS_DATA = """\
import sys
import mlflow
from mlflow_ext.data import log_data

path = sys.argv[1]
with mlflow.start_run():
    log_data(path, name="train.csv", role="training")
    values = [float(line) for line in open(path).read().split()]
    mlflow.log_metric("mean", sum(values) / len(values))
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GO_", "MLFLOW_EXT_", "MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_", "MLFLOW_RUN_"))
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return {**env, **extra}


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The database made here, with the Default experiment's artifacts under tmp_path: made by the first
    # client instead, they would go to ./mlruns of whatever directory the tests run from.
    SqlAlchemyStore(uri, (tmp_path / "artifacts").as_uri()).engine.dispose()
    return {"MLFLOW_TRACKING_URI": uri}


@pytest.fixture
def client(store: dict[str, str]):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])


def train(argv: list[str], cwd: Path, store: dict[str, str], **env: str) -> str:
    """Runs a training command; the id of the run it logged (the experiment's newest)."""
    from mlflow import MlflowClient

    result = subprocess.run(
        argv, cwd=cwd, env=clean_env(**store, **env), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id


def iris_repo(tmp_path: Path) -> Path:
    repo = committed_repo(tmp_path / "models", {"README.md": "models\n"}, "https://git.example.com/ml.git")
    shutil.copytree(IRIS, repo / "iris", ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "iris")
    return repo


def test_the_iris_model_reproduces_with_identical_metrics(tmp_path, store, client):
    repo = iris_repo(tmp_path)
    run_id = train([sys.executable, "train.py", "--C", "0.5"], repo / "iris", store)
    client.create_registered_model("iris")
    version = client.create_model_version("iris", f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias("iris", "champion", version.version)
    tags = client.get_run(run_id).data.tags
    assert tags[keys.CODE_WORKDIR_IN_REPO] == "iris"
    assert tags[keys.CODE_COMMAND] == f"{sys.executable} train.py --C 0.5"
    (repo / "iris" / "train.py").write_text("raise SystemExit('the working tree is not what is run')\n")

    lines: list[str] = []
    result = rp.reproduce(
        "models:/iris@champion",
        client=client,
        tracking_uri=store["MLFLOW_TRACKING_URI"],
        workdir=tmp_path / "again",
        env="current",
        say=lines.append,
    )
    assert result.run_id == run_id and result.status == "identical", result.table()
    assert {m.metric for m in result.metrics} == {"test_accuracy", "test_f1_macro"}
    assert all(m.difference == 0.0 for m in result.metrics)
    assert result.params_differ == {}
    assert result.workdir == str((tmp_path / "again" / "src" / "iris").resolve())
    assert any(line.startswith("data verified: 2 file(s)") for line in lines)
    new = client.get_run(result.new_run_id)
    assert new.data.tags[rp.REPRODUCTION_OF] == run_id
    assert new.data.tags[rp.REPRODUCTION_STATUS] == "identical"
    assert (
        new.info.status == "FINISHED" and new.info.experiment_id == client.get_run(run_id).info.experiment_id
    )
    assert new.data.params["C"] == "0.5"
    assert "verdict: identical" in result.table()


def test_a_changed_training_file_is_caught_before_training(tmp_path, store, client):
    repo = committed_repo(tmp_path / "job", {"fit.py": READS_DATA}, "https://git.example.com/job.git")
    data = tmp_path / "shared" / "train.txt"
    data.parent.mkdir()
    data.write_text("1\n2\n3\n")
    run_id = train([sys.executable, "fit.py", str(data)], repo, store)
    data.write_text("1\n2\n4\n")
    with pytest.raises(StageFailed, match="training data changed since the run") as caught:
        rp.reproduce(
            f"runs:/{run_id}",
            client=client,
            tracking_uri=store["MLFLOW_TRACKING_URI"],
            workdir=tmp_path / "again",
            env="current",
        )
    assert f"train.csv ({data}): fingerprint sha256:" in str(caught.value)
    reproductions = client.search_runs(
        [client.get_run(run_id).info.experiment_id], filter_string=f"tags.`{rp.REPRODUCTION_OF}` = '{run_id}'"
    )
    assert reproductions == []  # stopped before any run
    result = rp.reproduce(
        f"runs:/{run_id}",
        client=client,
        tracking_uri=store["MLFLOW_TRACKING_URI"],
        workdir=tmp_path / "anyway",
        env="current",
        allow_data_change=True,
    )
    assert result.status == "different" and any("data changed: train.csv" in n for n in result.notes)


def test_a_non_deterministic_script_is_reported_as_differing(tmp_path, store, client):
    repo = committed_repo(tmp_path / "noisy", {"noisy.py": NOISY}, "https://git.example.com/noisy.git")
    run_id = train([sys.executable, "noisy.py"], repo, store)
    result = subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "reproduce", f"runs:/{run_id}", "--env", "current",
         "--workdir", str(tmp_path / "again"), "--tolerance", "0.000001", "--output", "json"],
        env=clean_env(**store), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "different" and document["error"]["kind"] == "mismatch"
    verdicts = {m["metric"]: m["within"] for m in document["metrics"]}
    assert verdicts == {"score": False, "fixed": True}
    assert f"does not reproduce run {run_id}: score" in result.stderr
    new = client.get_run(document["new_run_id"])
    assert new.data.tags[rp.REPRODUCTION_STATUS] == "different"


def test_a_dirty_tree_is_rebuilt_from_its_diff_or_refused(tmp_path, store, client):
    repo = committed_repo(tmp_path / "noisy", {"noisy.py": NOISY}, "https://git.example.com/noisy.git")
    (repo / "noisy.py").write_text(NOISY.replace("random.random()", "0.25"))  # uncommitted, deterministic
    run_id = train([sys.executable, "noisy.py"], repo, store)
    assert client.get_run(run_id).data.tags[keys.CODE_DIRTY] == "true"
    git(repo, "checkout", "--", "noisy.py")
    result = rp.reproduce(
        f"runs:/{run_id}",
        client=client,
        tracking_uri=store["MLFLOW_TRACKING_URI"],
        workdir=tmp_path / "again",
        env="current",
    )
    assert result.status == "identical", result.table()
    # a recorded diff that does not apply at the commit
    (repo / "noisy.py").write_text("print('other')\n")
    git(repo, "commit", "-qam", "rewrite")
    (repo / "noisy.py").write_text(NOISY.replace("random.random()", "0.5"))
    other = train([sys.executable, "noisy.py"], repo, store)
    client.set_tag(other, keys.CODE_COMMIT, git(repo, "rev-parse", "HEAD~1").strip())
    with pytest.raises(StageFailed, match="recorded diff does not apply"):
        rp.reproduce(
            f"runs:/{other}",
            client=client,
            tracking_uri=store["MLFLOW_TRACKING_URI"],
            workdir=tmp_path / "refused",
            env="current",
        )


def test_the_recorded_interpreter_is_replaced_and_metrics_compared():
    assert rp.command_line("/old/venv/bin/python3.11 -u train.py --C 1", "/new/python") == [
        "/new/python", "-u", "train.py", "--C", "1",
    ]  # fmt: skip
    assert rp.command_line("my-trainer --fast", "/new/python") == ["my-trainer", "--fast"]
    found, exact = rp.compare({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 2.05}, 0.1)
    assert not exact
    assert [(m.metric, m.within) for m in found] == [("a", True), ("b", True), ("c", False)]


def test_a_fresh_venv_gets_the_listing_and_the_platforms_own_package(tmp_path, store, client):
    """The listing's pins from the index (none here but pip, which the venv brings), mlflow-ext from this
    checkout: about half a minute, most of it building the package."""
    experiment = client.create_experiment("listing", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    listing = tmp_path / "environment.txt"
    listing.write_text("# python 3.11.2 CPython linux-x86_64\nmlflow-ext==0.1.0\npip==1.0\n")
    client.log_artifact(run.info.run_id, str(listing), "lineage")
    tags = {keys.ENV_LISTING: f"runs:/{run.info.run_id}/{keys.ENV_ARTIFACT}"}
    python = rp.fresh_env(tags, client, run.info.run_id, tmp_path / "venv")
    assert python == str(tmp_path / "venv" / "bin" / "python")
    assert (tmp_path / "venv" / "requirements.txt").read_text() == "\n"
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('mlflow-ext'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert found.stdout.strip() == "0.1.0"
    with pytest.raises(LineageError, match="records no environment listing"):
        rp.fresh_env({}, client, run.info.run_id, tmp_path / "other")
