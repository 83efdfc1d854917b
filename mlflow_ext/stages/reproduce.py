"""`mlflow-ext reproduce`: train a model again from its lineage and compare the metrics.

From the run behind ``runs:/ID``, ``models:/NAME/V`` or ``models:/NAME@ALIAS`` (its ``lineage.*`` tags,
docs/run-tags.md):

1. the code: a clone of the recorded repository (the recorded root when it is still on this machine, else the
   remote) at the recorded commit; a tree that was dirty gets the recorded diff applied, and is refused when
   the diff does not apply (or was not recorded);
2. the data: every ``lineage.data.<name>`` fingerprint is checked before anything runs (a file inside the
   recorded root is looked for in the checkout); a mismatch stops it, naming the file, unless
   ``allow_data_change``;
3. the environment: a fresh venv from the recorded listing (``lineage/environment.txt``), or, with
   ``env="current"``, this interpreter (the listing's hash is compared and a difference reported);
4. the command: ``lineage.code.command`` in ``lineage.code.workdir_in_repo`` of the checkout, with the
   recorded interpreter replaced by the environment's, logging into a new run of the same experiment tagged
   ``reproduction.of=<run id>`` (the script's ``start_run`` resumes it through ``MLFLOW_RUN_ID``);
5. the verdict: metric by metric, against ``tolerance`` (absolute), and the parameters; the new run is
   tagged ``reproduction.status`` = ``identical``, ``within_tolerance``, ``different`` or ``failed``.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ext import run_context as keys
from mlflow_ext.data import fingerprint
from mlflow_ext.errors import DataError, LineageError, StageFailed
from mlflow_ext.lineage import REPRODUCTION_OF, REPRODUCTION_STATUS, parse_uri

_INTERPRETER = re.compile(r"^python(\d+(\.\d+)?)?$")
# The platform's own package: installed from this checkout of it, not from the package index.
_OWN = "mlflow-ext"


@dataclass(frozen=True)
class Comparison:
    metric: str
    original: float
    reproduced: float | None
    difference: float | None
    within: bool


@dataclass
class Reproduction:
    uri: str
    run_id: str
    new_run_id: str | None = None
    commit: str = ""
    command: str = ""
    workdir: str = ""
    notes: list[str] = field(default_factory=list)
    metrics: list[Comparison] = field(default_factory=list)
    params_differ: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    status: str = "failed"
    tolerance: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params_differ"] = {k: list(v) for k, v in self.params_differ.items()}
        return data

    def table(self) -> str:
        lines = [
            f"reproduction of run {self.run_id} ({self.uri}) as run {self.new_run_id}",
            f"commit {self.commit}, in {self.workdir}: {self.command}",
            *(f"note: {note}" for note in self.notes),
            f"{'metric':<28} {'original':>14} {'reproduced':>14} {'difference':>12}",
        ]
        for item in self.metrics:
            new = "missing" if item.reproduced is None else f"{item.reproduced:.6g}"
            diff = "" if item.difference is None else f"{item.difference:.3g}"
            mark = "" if item.within else "  DIFFERS"
            lines.append(f"{item.metric:<28} {item.original:>14.6g} {new:>14} {diff:>12}{mark}")
        for name, (before, after) in sorted(self.params_differ.items()):
            lines.append(f"param {name}: {before!r} -> {after!r}  DIFFERS")
        lines.append(f"verdict: {self.status} (tolerance {self.tolerance:g})")
        return "\n".join(lines) + "\n"


def _run(argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise StageFailed(f"{shlex.join(argv[:4])}{' ...' if len(argv) > 4 else ''} failed: {tail}")
    return result.stdout


def resolve_run(uri: str, client: Any) -> str:
    """The run id behind a runs:/ or models:/ URI."""
    target = parse_uri(uri)
    if target.run_id:
        return target.run_id
    assert target.model is not None
    if target.alias is not None:
        version = client.get_model_version_by_alias(target.model, target.alias)
    else:
        version = client.get_model_version(target.model, str(target.version))
    run_id = version.run_id or None
    if not run_id and getattr(version, "model_id", None):
        run_id = client.get_logged_model(str(version.model_id)).source_run_id
    if not run_id:
        raise LineageError(f"{uri}: the model version names no run to reproduce")
    return str(run_id)


def checkout(tags: dict[str, str], client: Any, run_id: str, into: Path) -> Path:
    """A clone at the recorded commit, with the recorded diff applied when the tree was dirty."""
    commit = tags.get(keys.CODE_COMMIT)
    root = tags.get(keys.CODE_ROOT)
    source = root if root and (Path(root) / ".git").exists() else tags.get(keys.CODE_REMOTE_URL)
    if not commit or not source:
        raise LineageError(f"run {run_id} records no commit and repository (lineage.code.*) to check out")
    _run(["git", "clone", "--quiet", "--no-checkout", source, str(into)])
    _run(["git", "-C", str(into), "checkout", "--quiet", "--detach", commit])
    if tags.get(keys.CODE_DIRTY) == "true" and tags.get(keys.CODE_DIFF_BYTES, "0") != "0":
        if tags.get(keys.CODE_DIFF) != keys.DIFF_ARTIFACT or tags.get(keys.CODE_DIFF_TRUNCATED) == "true":
            raise StageFailed(
                f"run {run_id} ran on a dirty tree whose diff was not recorded in full: "
                "cannot rebuild its code"
            )
        with tempfile.TemporaryDirectory() as tmp:
            diff = client.download_artifacts(run_id, keys.DIFF_ARTIFACT, tmp)
            result = subprocess.run(
                ["git", "-C", str(into), "apply", "--whitespace=nowarn", diff],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise StageFailed(
                f"run {run_id} ran on a dirty tree and its recorded diff does not apply at {commit}: "
                + result.stderr.strip()[-1000:]
            )
    return into


def check_data(tags: dict[str, str], recorded_root: str | None, tree: Path) -> tuple[list[str], list[str]]:
    """(files checked, mismatches): each recorded fingerprint against the file as it is now."""
    checked, problems = [], []
    for name, recorded in sorted(keys.data_fingerprints(tags).items()):
        uri = tags.get(f"lineage.data.{name}.uri", "")
        path = uri
        if recorded_root and uri.startswith(recorded_root.rstrip("/") + "/"):
            path = str(tree / os.path.relpath(uri, recorded_root))
        try:
            found = fingerprint(path, profile=False).fingerprint
        except DataError as exc:
            problems.append(f"{name} ({path}): {exc}")
            continue
        checked.append(path)
        if found != recorded:
            problems.append(f"{name} ({path}): fingerprint {found}, recorded {recorded}")
    return checked, problems


def _project_dir() -> Path | None:
    """This checkout of the platform's package, when it runs from one (an editable install)."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else None


def fresh_env(tags: dict[str, str], client: Any, run_id: str, into: Path) -> str:
    """A venv with the recorded listing installed; the python of it."""
    listing_uri = tags.get(keys.ENV_LISTING, "")
    if not listing_uri.startswith("runs:/"):
        raise LineageError(f"run {run_id} records no environment listing ({keys.ENV_LISTING})")
    owner, _, path = listing_uri.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(client.download_artifacts(owner, path, tmp)).read_text(encoding="utf-8")
    wanted = [line for line in listing.splitlines() if line and not line.startswith("#")]
    own = [line for line in wanted if line.split("==")[0] == _OWN]
    pins = [line for line in wanted if line.split("==")[0] not in (_OWN, "pip")]
    _run([sys.executable, "-m", "venv", str(into)])
    python = str(into / "bin" / "python")
    requirements = into / "requirements.txt"
    requirements.write_text("\n".join(pins) + "\n", encoding="utf-8")
    _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)])
    project = _project_dir()
    if own and project is not None:
        _run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(project)])
    return python


def command_line(command: str, python: str) -> list[str]:
    """The recorded command with its interpreter replaced by ``python``."""
    argv = shlex.split(command)
    if argv and _INTERPRETER.match(os.path.basename(argv[0])):
        argv[0] = python
    return argv


def compare(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> tuple[list[Comparison], bool]:
    """Metric by metric; the second value is True when every metric is exactly equal."""
    found, exact = [], True
    for metric in sorted(original):
        old, new = original[metric], reproduced.get(metric)
        if new is None:
            found.append(Comparison(metric, old, None, None, False))
            exact = False
            continue
        difference = 0.0 if (old == new or (math.isnan(old) and math.isnan(new))) else abs(new - old)
        exact = exact and difference == 0.0
        found.append(Comparison(metric, old, new, difference, difference <= tolerance))
    return found, exact


def reproduce(
    uri: str,
    *,
    client: Any,
    tracking_uri: str,
    workdir: Path,
    tolerance: float = 0.0,
    allow_data_change: bool = False,
    env: str = "fresh",
    say: Callable[[str], None] = lambda _line: None,
) -> Reproduction:
    """Rebuild the run behind ``uri`` and run it again (see the module doc). StageFailed when something
    stops it before the comparison; the comparison itself is in the result's ``status``."""
    run_id = resolve_run(uri, client)
    run = client.get_run(run_id)
    tags = dict(run.data.tags)
    command = tags.get(keys.CODE_COMMAND)
    if not command:
        raise LineageError(f"run {run_id} records no command ({keys.CODE_COMMAND}): it predates it")
    result = Reproduction(
        uri=uri, run_id=run_id, commit=tags.get(keys.CODE_COMMIT, ""), command=command, tolerance=tolerance
    )
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"checking out {result.commit} ...")
    tree = checkout(tags, client, run_id, workdir / "src")
    inside = tags.get(keys.CODE_WORKDIR_IN_REPO, ".")
    cwd = (tree / inside).resolve()
    if not cwd.is_relative_to(tree.resolve()) or not cwd.is_dir():
        raise StageFailed(f"the recorded working directory {inside!r} is not in the checkout")
    result.workdir = str(cwd)
    checked, problems = check_data(tags, tags.get(keys.CODE_ROOT), tree)
    if problems and not allow_data_change:
        raise StageFailed(
            "training data changed since the run (--allow-data-change to go on):\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    result.notes += [f"data changed: {p}" for p in problems]
    say(f"data verified: {len(checked)} file(s)")
    if env == "current":
        python = sys.executable
        recorded = tags.get(keys.ENV_HASH)
        if recorded and keys.collect_env().tags[keys.ENV_HASH] != recorded:
            result.notes.append("the current environment differs from the recorded listing")
    else:
        say("building a venv from the recorded listing ...")
        python = fresh_env(tags, client, run_id, workdir / "venv")
    argv = command_line(command, python)
    experiment = client.get_experiment(run.info.experiment_id)
    new = client.create_run(
        run.info.experiment_id,
        tags={REPRODUCTION_OF: run_id, "mlflow.runName": f"reproduce-{run.info.run_name or run_id[:8]}"},
    )
    result.new_run_id = new.info.run_id
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("GO_", "MLFLOW_RUN_ID"))}
    child_env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_RUN_ID=new.info.run_id,
        MLFLOW_EXPERIMENT_ID=run.info.experiment_id,
        MLFLOW_EXPERIMENT_NAME=experiment.name,
        PATH=f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    say(f"running {shlex.join(argv)} in {cwd}")
    done = subprocess.run(argv, cwd=cwd, env=child_env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        client.set_tag(new.info.run_id, REPRODUCTION_STATUS, "failed")
        client.set_terminated(new.info.run_id, "FAILED")
        raise StageFailed(f"the command exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    again = client.get_run(new.info.run_id)
    result.metrics, exact = compare(dict(run.data.metrics), dict(again.data.metrics), tolerance)
    old_params, new_params = dict(run.data.params), dict(again.data.params)
    result.params_differ = {
        name: (old_params.get(name), new_params.get(name))
        for name in sorted(set(old_params) | set(new_params))
        if old_params.get(name) != new_params.get(name)
    }
    if all(item.within for item in result.metrics) and not result.params_differ:
        result.status = "identical" if exact else "within_tolerance"
    else:
        result.status = "different"
    client.set_tag(new.info.run_id, REPRODUCTION_STATUS, result.status)
    if again.info.status == "RUNNING":
        client.set_terminated(new.info.run_id, "FINISHED")
    return result
