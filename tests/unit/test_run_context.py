"""The run context provider: training scripts run for real, in temporary git repositories, against a
SQLite tracking store; GoCD job variables set as GoCD sets them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

from mlflow_ext import run_context as rc
from tests.support.gitrepo import committed_repo, git

ROOT = Path(__file__).resolve().parents[2]

GOCD_ENV = {
    "GO_SERVER_URL": "https://gocd.example.com:8154/go/",
    "GO_PIPELINE_NAME": "train-churn",
    "GO_PIPELINE_COUNTER": "42",
    "GO_PIPELINE_LABEL": "42-abc",
    "GO_STAGE_NAME": "train",
    "GO_STAGE_COUNTER": "1",
    "GO_JOB_NAME": "fit",
    "GO_TRIGGER_USER": "changes",
    "GO_ENVIRONMENT_NAME": "ml",
    "GO_REVISION": "0123abcd",
    "GO_REVISION_CHURN_REPO": "0123abcd",
    "GO_DEPENDENCY_LOCATOR_FEATURES": "features/17/build/1",
    "GO_MATERIAL_HAS_CHANGED": "true",
}

TRAIN = """\
import json, sys
import mlflow

ids = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        ids.append(run.info.run_id)
print("RUN_IDS=" + json.dumps(ids))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without GoCD or lineage settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GO_", "MLFLOW_EXT_RUN_", "MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_"))
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return {**env, **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite tracking store and an experiment whose artifacts live outside any repository."""
    from mlflow.tracking import MlflowClient

    base = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("lineage", artifact_location=(base / "artifacts").as_uri())
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": experiment}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return committed_repo(
        tmp_path / "project",
        {"train.py": TRAIN, "features.py": "FEATURES = ['tenure', 'plan']\n"},
        "https://ci-bot:s3cr3t@git.example.com/ml/churn.git",
    )


def train(directory: Path, store: dict[str, str], runs: int = 1, **env: str) -> tuple[list[str], str]:
    script = directory / "train.py"
    if not script.exists():
        script.write_text(TRAIN)
    result = subprocess.run(
        [sys.executable, str(script), str(runs)],
        cwd=directory,
        env=clean_env(**store, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("RUN_IDS="))
    return json.loads(line[len("RUN_IDS=") :]), result.stderr


def client(store: dict[str, str]):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])


def lineage_tags(store: dict[str, str], run_id: str) -> dict[str, str]:
    tags = client(store).get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k.startswith("lineage.")}


def artifact_paths(store: dict[str, str], run_id: str) -> list[str]:
    return sorted(item.path for item in client(store).list_artifacts(run_id, "lineage"))


def read_artifact(store: dict[str, str], run_id: str, path: str, tmp_path: Path) -> bytes:
    local = client(store).download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_bytes()


# --- a training script produces every tag ---


def test_training_script_in_gocd_job_gets_every_tag(
    repo: Path, store: dict[str, str], tmp_path: Path
) -> None:
    (repo / "features.py").write_text("FEATURES = ['tenure', 'plan', 'region']\n")  # dirty
    (run_id,), _ = train(repo, store, **GOCD_ENV)
    tags = lineage_tags(store, run_id)

    concrete = {tag.key for tag in rc.TAGS if "<" not in tag.key and tag.group in (*rc.GROUPS, "all")}
    missing = concrete - set(tags) - {rc.NOTEBOOK_PATH}  # not in a notebook
    assert not missing, f"tags not set: {sorted(missing)}"

    assert tags[rc.CODE_COMMIT] == git(repo, "rev-parse", "HEAD").strip()
    assert tags[rc.CODE_BRANCH] == "main"
    assert tags[rc.CODE_REMOTE_URL] == "https://git.example.com/ml/churn.git"  # credentials removed
    assert tags[rc.CODE_ROOT] == str(repo)
    assert tags[rc.CODE_DIRTY] == "true"
    assert tags[rc.CODE_DIFF] == rc.DIFF_ARTIFACT
    assert tags[rc.CODE_DIFF_TRUNCATED] == "false"
    assert tags[rc.CI_SYSTEM] == "gocd"
    assert tags[rc.CI_PIPELINE] == "train-churn"
    assert tags[rc.CI_COUNTER] == "42"
    assert tags[rc.CI_LABEL] == "42-abc"
    assert tags[rc.CI_STAGE] == "train"
    assert tags[rc.CI_STAGE_COUNTER] == "1"
    assert tags[rc.CI_JOB] == "fit"
    assert tags[rc.CI_TRIGGER_USER] == "changes"
    assert tags[rc.CI_ENVIRONMENT] == "ml"
    assert tags[rc.CI_URL] == "https://gocd.example.com:8154/go/pipelines/value_stream_map/train-churn/42"
    assert tags[rc.CI_REVISION] == "0123abcd"
    assert tags[rc.CI_REVISION_PREFIX + "churn_repo"] == "0123abcd"
    assert tags[rc.CI_UPSTREAM_PREFIX + "features"] == "features/17/build/1"
    import mlflow
    import numpy
    import pandas

    assert tags[rc.ENV_PYTHON] == ".".join(map(str, sys.version_info[:3]))
    assert tags[rc.ENV_MLFLOW] == mlflow.__version__
    assert tags[rc.ENV_LIB_PREFIX + "numpy"] == numpy.__version__
    assert tags[rc.ENV_LIB_PREFIX + "pandas"] == pandas.__version__
    assert len(tags[rc.ENV_HASH]) == 64
    assert tags[rc.ENV_LISTING] == f"runs:/{run_id}/{rc.ENV_ARTIFACT}"
    assert tags[rc.HOST_NAME]
    assert tags[rc.HOST_USER]
    # MLflow's own git tags are still there, untouched.
    mlflow_tags = client(store).get_run(run_id).data.tags
    assert mlflow_tags["mlflow.source.git.commit"] == tags[rc.CODE_COMMIT]


def test_dirty_tree_logs_the_diff(repo: Path, store: dict[str, str], tmp_path: Path) -> None:
    (repo / "features.py").write_text("FEATURES = ['tenure', 'plan', 'region']\n")
    (repo / "notes.txt").write_text("untracked\n")
    expected = git(repo, "diff", "HEAD").encode()
    (run_id,), _ = train(repo, store)
    tags = lineage_tags(store, run_id)
    assert tags[rc.CODE_DIRTY] == "true"
    assert tags[rc.CODE_UNTRACKED] == "1"
    assert tags[rc.CODE_DIFF_BYTES] == str(len(expected))
    diff = read_artifact(store, run_id, rc.DIFF_ARTIFACT, tmp_path)
    assert diff == expected
    assert b"+FEATURES = ['tenure', 'plan', 'region']" in diff


def test_diff_is_cut_at_the_size_cap(repo: Path, store: dict[str, str], tmp_path: Path) -> None:
    (repo / "features.py").write_text("".join(f"FEATURE_{i} = {i}\n" for i in range(2000)))
    full = git(repo, "diff", "HEAD").encode()
    (run_id,), _ = train(repo, store, MLFLOW_EXT_RUN_DIFF_MAX_BYTES="1000")
    tags = lineage_tags(store, run_id)
    assert tags[rc.CODE_DIFF_TRUNCATED] == "true"
    assert tags[rc.CODE_DIFF_BYTES] == str(len(full))
    assert read_artifact(store, run_id, rc.DIFF_ARTIFACT, tmp_path) == full[:1000]


def test_clean_tree_logs_no_diff(repo: Path, store: dict[str, str]) -> None:
    (run_id,), _ = train(repo, store)
    tags = lineage_tags(store, run_id)
    assert tags[rc.CODE_DIRTY] == "false"
    assert tags[rc.CODE_UNTRACKED] == "0"
    assert rc.CODE_DIFF not in tags
    assert rc.DIFF_ARTIFACT not in artifact_paths(store, run_id)
    assert not any(key.startswith("lineage.ci.") for key in tags)  # not in a GoCD job


def test_environment_listing_is_logged_once_per_hash(
    repo: Path, store: dict[str, str], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # A fresh experiment, so that no earlier test's run holds this environment's listing.
    own = {
        **store,
        "MLFLOW_EXPERIMENT_ID": MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"]).create_experiment(
            "listing-once", artifact_location=(tmp_path / "artifacts").as_uri()
        ),
    }
    first_process, _ = train(repo, own, runs=3)
    second_process, _ = train(repo, own, runs=2)
    runs = first_process + second_process
    hashes = {lineage_tags(own, run_id)[rc.ENV_HASH] for run_id in runs}
    assert len(hashes) == 1
    holders = [run_id for run_id in runs if rc.ENV_ARTIFACT in artifact_paths(own, run_id)]
    assert holders == [runs[0]]
    for run_id in runs:
        assert lineage_tags(own, run_id)[rc.ENV_LISTING] == f"runs:/{runs[0]}/{rc.ENV_ARTIFACT}"
    listing = read_artifact(own, runs[0], rc.ENV_ARTIFACT, tmp_path).decode()
    import hashlib

    assert hashlib.sha256(listing.encode()).hexdigest() == hashes.pop()
    assert listing.startswith("# python ")
    assert "\nmlflow==" in listing


# --- bad input never breaks the run ---


def test_non_git_directory_runs_without_code_tags(tmp_path: Path, store: dict[str, str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (run_id,), _ = train(plain, store)
    tags = lineage_tags(store, run_id)
    code = {key for key in tags if key.startswith("lineage.code.")}
    assert code == {rc.CODE_COMMAND, rc.CODE_WORKDIR}  # how it ran, even without git
    assert tags[rc.CODE_WORKDIR] == str(plain)
    assert rc.ENV_HASH in tags and rc.HOST_NAME in tags


def test_the_command_line_and_working_directory_are_recorded(repo: Path, store: dict[str, str]) -> None:
    """Beside the commit: what to run, and where, to train again (mlflow-ext reproduce reads them)."""
    workdir = repo / "jobs" / "weekly"
    workdir.mkdir(parents=True)
    argv = [
        sys.executable,
        "-W",
        "ignore",
        "../../train.py",
        "1",
        "https://ci-bot:s3cr3t@data.example.com/x y",
    ]
    result = subprocess.run(
        argv,
        cwd=workdir,
        env=clean_env(**store),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (run_id,) = json.loads(result.stdout.split("RUN_IDS=", 1)[1])
    tags = lineage_tags(store, run_id)
    assert tags[rc.CODE_COMMAND] == (
        f"{sys.executable} -W ignore ../../train.py 1 'https://data.example.com/x y'"
    )
    assert shlex.split(tags[rc.CODE_COMMAND])[:-1] == argv[:-1]
    assert tags[rc.CODE_WORKDIR] == str(workdir)
    assert tags[rc.CODE_WORKDIR_IN_REPO] == "jobs/weekly"
    assert tags[rc.CODE_COMMIT] == git(repo, "rev-parse", "HEAD").strip()
    (top,), _ = train(repo, store)
    assert lineage_tags(store, top)[rc.CODE_WORKDIR_IN_REPO] == "."


def test_workdir_outside_the_repository_has_no_relative_path(tmp_path: Path) -> None:
    assert rc.workdir_in_repo(str(tmp_path / "a" / "b"), str(tmp_path / "a")) == "b"
    assert rc.workdir_in_repo(str(tmp_path / "a"), str(tmp_path / "a")) == "."
    assert rc.workdir_in_repo(str(tmp_path / "ab"), str(tmp_path / "a")) is None
    assert rc.workdir_in_repo(str(tmp_path), str(tmp_path / "a")) is None


def test_script_outside_the_repository_uses_the_working_directory(
    repo: Path, store: dict[str, str], tmp_path: Path
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "train.py").write_text(TRAIN)
    result = subprocess.run(
        [sys.executable, str(tools / "train.py")],
        cwd=repo,
        env=clean_env(**store),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (run_id,) = json.loads(result.stdout.split("RUN_IDS=", 1)[1])
    assert lineage_tags(store, run_id)[rc.CODE_ROOT] == str(repo)


def test_broken_repository_and_bad_settings_do_not_break_the_run(repo: Path, store: dict[str, str]) -> None:
    (repo / ".git" / "HEAD").write_text("garbage\n")
    (run_id,), stderr = train(
        repo, store, MLFLOW_EXT_RUN_TAGS="code,bogus", MLFLOW_EXT_RUN_DIFF_MAX_BYTES="-5"
    )
    tags = lineage_tags(store, run_id)
    assert "MLFLOW_EXT_RUN_TAGS must be a comma-separated subset" in stderr
    assert "code,bogus" not in stderr  # the message names the variable, not its value
    code = {key for key in tags if key.startswith("lineage.code.")}
    assert code == {rc.CODE_COMMAND, rc.CODE_WORKDIR}  # no git facts from a broken repository
    assert rc.ENV_HASH in tags  # fell back to every group


def test_groups_are_chosen_by_setting(repo: Path, store: dict[str, str]) -> None:
    (run_id,), _ = train(repo, store, MLFLOW_EXT_RUN_TAGS="ci", **GOCD_ENV)
    groups = {key.split(".")[1] for key in lineage_tags(store, run_id)}
    assert groups == {"ci", "collected_at"}
    (run_id,), _ = train(repo, store, MLFLOW_EXT_RUN_TAGS="none", **GOCD_ENV)
    assert lineage_tags(store, run_id) == {}


def test_a_failing_collector_never_breaks_start_run(
    monkeypatch: pytest.MonkeyPatch, store: dict[str, str], tmp_path: Path
) -> None:
    import mlflow

    def explode(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rc, "collect_env", explode)
    monkeypatch.setattr(rc, "collect_host", explode)
    monkeypatch.chdir(tmp_path)
    provider = rc.LineageRunContext()
    tags = provider.tags()
    assert rc.COLLECTED_AT in tags and rc.ENV_HASH not in tags and rc.HOST_NAME not in tags

    monkeypatch.setattr(rc, "collect", explode)
    assert provider.tags() == {}

    mlflow.set_tracking_uri(store["MLFLOW_TRACKING_URI"])
    try:
        with mlflow.start_run(experiment_id=store["MLFLOW_EXPERIMENT_ID"]) as run:
            mlflow.log_param("still", "works")
        assert client(store).get_run(run.info.run_id).data.params == {"still": "works"}
    finally:
        mlflow.set_tracking_uri(None)


# --- pieces ---


def test_provider_is_registered_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="mlflow.run_context_provider") if e.name == "lineage"]
    assert entry.value == "mlflow_ext.run_context:LineageRunContext"
    from mlflow.tracking.context.registry import _run_context_provider_registry

    assert any(isinstance(p, rc.LineageRunContext) for p in _run_context_provider_registry)


def test_importing_the_provider_is_cheap() -> None:
    """MLflow imports the provider on every `import mlflow`: only the standard library may come with it."""
    heavy = ("mlflow", "boto3", "botocore", "pyarrow", "pandas", "sqlalchemy", "requests", "yaml")
    code = f"import sys, mlflow_ext.run_context; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_gocd_tags_outside_and_inside_a_job() -> None:
    assert rc.collect_ci({}) == {}
    tags = rc.collect_ci(
        {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "3", "GO_SERVER_URL": "https://u:p@ci/go"}
    )
    assert tags == {
        rc.CI_SYSTEM: "gocd",
        rc.CI_PIPELINE: "p",
        rc.CI_COUNTER: "3",
        rc.CI_URL: "https://ci/go/pipelines/value_stream_map/p/3",
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("ssh://git@host:22/o/r.git", "ssh://host:22/o/r.git"),
    ],
)
def test_remote_urls_lose_credentials(url: str, expected: str) -> None:
    assert rc.redact_url(url) == expected


def test_notebook_path_inside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    if "IPython" not in sys.modules:
        assert rc.notebook_path({"JPY_SESSION_NAME": "x.ipynb"}) is None  # plain Python: no notebook

    class ZMQInteractiveShell:
        user_ns: ClassVar[dict[str, str]] = {}

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: ZMQInteractiveShell()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert rc.notebook_path({"JPY_SESSION_NAME": "/home/dev/churn/explore.ipynb"}) == (
        "/home/dev/churn/explore.ipynb"
    )
    ZMQInteractiveShell.user_ns = {"__vsc_ipynb_file__": "/work/eda.ipynb"}
    assert rc.notebook_path({}) == "/work/eda.ipynb"


def test_collected_at_is_unique_within_a_process() -> None:
    markers = [rc._new_marker() for _ in range(1000)]
    assert len(set(markers)) == 1000 and markers == sorted(markers)


def test_docs_list_every_tag_and_setting() -> None:
    from mlflow_ext import settings

    doc = (ROOT / "docs" / "run-tags.md").read_text()
    assert rc.tag_table_markdown() in doc, (
        "docs/run-tags.md differs from run_context.TAGS: regenerate the table"
    )
    for name in ("MLFLOW_EXT_RUN_TAGS", "MLFLOW_EXT_RUN_DIFF_MAX_BYTES"):
        assert settings.BY_NAME[name].scope == "client"
        assert f"`{name}` | `{settings.BY_NAME[name].default}`" in doc
