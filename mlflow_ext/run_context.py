"""Lineage tags on every run: the ``mlflow.run_context_provider`` plugin (see docs/run-tags.md).

MLflow calls :class:`LineageRunContext` from ``mlflow.start_run()`` before the run exists. It returns
``lineage.*`` tags for the groups named by ``MLFLOW_EXT_RUN_TAGS`` (code, ci, env, notebook, host).
Two things are artifacts, not tags: the uncommitted diff (``lineage/code.diff``) and the environment
listing (``lineage/environment.txt``, once per environment hash and experiment). They need the run id,
so a background thread attaches them as soon as the run appears, and the process waits for it at exit.

The provider never raises: a group that fails is skipped with a warning and the run goes on.
Importing this module does no work; MLflow imports it on every ``import mlflow``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import getpass
import hashlib
import logging
import os
import platform
import queue
import re
import shlex
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mlflow_ext import mlflow_internals, settings
from mlflow_ext.errors import ConfigError

_logger = logging.getLogger(__name__)

GROUPS = ("code", "ci", "env", "notebook", "host")


@dataclass(frozen=True)
class Tag:
    """One key of the ``lineage.`` namespace. ``<...>`` in a key stands for a name filled in per run."""

    key: str
    group: str
    doc: str


# --- the namespace: every key the platform sets, one place (docs/run-tags.md is generated from it) ---
COLLECTED_AT = "lineage.collected_at"
CODE_COMMIT = "lineage.code.commit"
CODE_BRANCH = "lineage.code.branch"
CODE_REMOTE_URL = "lineage.code.remote_url"
CODE_ROOT = "lineage.code.root"
CODE_DIRTY = "lineage.code.dirty"
CODE_UNTRACKED = "lineage.code.untracked_files"
CODE_DIFF = "lineage.code.diff"
CODE_DIFF_BYTES = "lineage.code.diff_bytes"
CODE_DIFF_TRUNCATED = "lineage.code.diff_truncated"
CODE_COMMAND = "lineage.code.command"
CODE_WORKDIR = "lineage.code.workdir"
CODE_WORKDIR_IN_REPO = "lineage.code.workdir_in_repo"
CI_SYSTEM = "lineage.ci.system"
CI_PIPELINE = "lineage.ci.pipeline"
CI_COUNTER = "lineage.ci.counter"
CI_LABEL = "lineage.ci.label"
CI_STAGE = "lineage.ci.stage"
CI_STAGE_COUNTER = "lineage.ci.stage_counter"
CI_JOB = "lineage.ci.job"
CI_TRIGGER_USER = "lineage.ci.trigger_user"
CI_ENVIRONMENT = "lineage.ci.environment"
CI_URL = "lineage.ci.url"
CI_REVISION = "lineage.ci.revision"
CI_REVISION_PREFIX = "lineage.ci.revision."
CI_UPSTREAM_PREFIX = "lineage.ci.upstream."
ENV_PYTHON = "lineage.env.python"
ENV_PLATFORM = "lineage.env.platform"
ENV_MLFLOW = "lineage.env.mlflow"
ENV_HASH = "lineage.env.hash"
ENV_PACKAGES = "lineage.env.packages"
ENV_LISTING = "lineage.env.listing"
ENV_LIB_PREFIX = "lineage.env.lib."
NOTEBOOK_PATH = "lineage.notebook.path"
HOST_NAME = "lineage.host.name"
HOST_USER = "lineage.host.user"
DATA_PREFIX = "lineage.data."


def data_fingerprints(tags: Mapping[str, str]) -> dict[str, str]:
    """name -> fingerprint of every dataset a run's tags record (``lineage.data.<name>.fingerprint``)."""
    suffix = ".fingerprint"
    return {
        key[len(DATA_PREFIX) : -len(suffix)]: value
        for key, value in tags.items()
        if key.startswith(DATA_PREFIX) and key.endswith(suffix) and len(key) > len(DATA_PREFIX) + len(suffix)
    }


DIFF_ARTIFACT = "lineage/code.diff"
ENV_ARTIFACT = "lineage/environment.txt"

TAGS: tuple[Tag, ...] = (
    Tag(COLLECTED_AT, "all", "UTC time the provider collected these tags (ISO 8601, unique per process)."),
    Tag(
        CODE_COMMIT,
        "code",
        "Commit checked out in the repository of the entry point (or the working directory).",
    ),
    Tag(CODE_BRANCH, "code", "Branch checked out; absent on a detached HEAD, as in CI checkouts."),
    Tag(
        CODE_REMOTE_URL, "code", "URL of remote `origin` (else the first remote), user and password removed."
    ),
    Tag(CODE_ROOT, "code", "Top-level directory of the working tree on the machine that ran."),
    Tag(CODE_DIRTY, "code", "`true` when tracked files differ from the commit or untracked files exist."),
    Tag(CODE_UNTRACKED, "code", "Untracked, not ignored paths (a new folder counts once); not in the diff."),
    Tag(
        CODE_DIFF, "code", f"Artifact path of `git diff HEAD` when tracked files changed: `{DIFF_ARTIFACT}`."
    ),
    Tag(CODE_DIFF_BYTES, "code", "Size of the whole diff in bytes, before any cut."),
    Tag(
        CODE_DIFF_TRUNCATED,
        "code",
        "`true` when the diff exceeded `MLFLOW_EXT_RUN_DIFF_MAX_BYTES` and was cut.",
    ),
    Tag(
        CODE_COMMAND,
        "code",
        "Command line of the process, shell-quoted, as the interpreter got it (`sys.orig_argv`), e.g. "
        "`/venv/bin/python train.py --C 1.0`; credentials in URL arguments removed. Set without git too.",
    ),
    Tag(CODE_WORKDIR, "code", "Working directory of the process when the run started. Set without git too."),
    Tag(
        CODE_WORKDIR_IN_REPO,
        "code",
        "The working directory relative to `lineage.code.root` (`.` at the top): where to run the command "
        "in another checkout.",
    ),
    Tag(CI_SYSTEM, "ci", "`gocd` inside a GoCD job (`GO_PIPELINE_NAME` set); the other ci tags need it."),
    Tag(CI_PIPELINE, "ci", "`GO_PIPELINE_NAME`."),
    Tag(CI_COUNTER, "ci", "`GO_PIPELINE_COUNTER`."),
    Tag(CI_LABEL, "ci", "`GO_PIPELINE_LABEL`."),
    Tag(CI_STAGE, "ci", "`GO_STAGE_NAME`."),
    Tag(CI_STAGE_COUNTER, "ci", "`GO_STAGE_COUNTER`."),
    Tag(CI_JOB, "ci", "`GO_JOB_NAME`."),
    Tag(CI_TRIGGER_USER, "ci", "`GO_TRIGGER_USER`."),
    Tag(CI_ENVIRONMENT, "ci", "`GO_ENVIRONMENT_NAME`, when the pipeline is in a GoCD environment."),
    Tag(
        CI_URL,
        "ci",
        "`<GO_SERVER_URL>/pipelines/value_stream_map/<pipeline>/<counter>`: the instance's page.",
    ),
    Tag(
        CI_REVISION, "ci", "`GO_REVISION`: revision of the only material, when there is one unnamed material."
    ),
    Tag(
        CI_REVISION_PREFIX + "<material>", "ci", "`GO_REVISION_<MATERIAL>`, the material name in lower case."
    ),
    Tag(
        CI_UPSTREAM_PREFIX + "<pipeline>",
        "ci",
        "`GO_DEPENDENCY_LOCATOR_<PIPELINE>` of each upstream pipeline.",
    ),
    Tag(ENV_PYTHON, "env", "Python version, e.g. `3.11.2`."),
    Tag(ENV_PLATFORM, "env", "Python's platform tag, e.g. `linux-x86_64`."),
    Tag(ENV_MLFLOW, "env", "Installed MLflow version."),
    Tag(
        ENV_LIB_PREFIX + "<distribution>",
        "env",
        "Version of each ML library installed (list in `ML_LIBRARIES`).",
    ),
    Tag(
        ENV_HASH,
        "env",
        "sha256 of the environment listing: Python, platform and every installed distribution.",
    ),
    Tag(ENV_PACKAGES, "env", "Number of installed distributions."),
    Tag(
        ENV_LISTING,
        "env",
        f"`runs:/<id>/{ENV_ARTIFACT}`: the listing, logged by the experiment's first run with this hash.",
    ),
    Tag(
        NOTEBOOK_PATH, "notebook", "Path of the notebook, when the run starts in a Jupyter or VS Code kernel."
    ),
    Tag(HOST_NAME, "host", "Host name of the machine that ran."),
    Tag(HOST_USER, "host", "Operating-system user that ran."),
    Tag(
        DATA_PREFIX + "<name>.fingerprint",
        "data",
        "`mlflow_ext.log_data`: `sha256:<hex>` of the contents, or `s3-etag:<hex>`.",
    ),
    Tag(DATA_PREFIX + "<name>.role", "data", "`log_data(role=...)`: training, test, processed, ..."),
    Tag(DATA_PREFIX + "<name>.uri", "data", "Absolute path or URI that was fingerprinted."),
    Tag(DATA_PREFIX + "<name>.files", "data", "Number of files (objects for S3)."),
    Tag(DATA_PREFIX + "<name>.bytes", "data", "Total size in bytes."),
    Tag(DATA_PREFIX + "<name>.format", "data", "`csv` or `parquet` when every data file has that format."),
    Tag(DATA_PREFIX + "<name>.rows", "data", "Row count (CSV and Parquet)."),
    Tag(
        DATA_PREFIX + "<name>.schema",
        "data",
        "Column names and Arrow types (CSV and Parquet), cut at 8000 characters.",
    ),
)

# Distributions reported one by one as lineage.env.lib.<name> when installed (never imported).
ML_LIBRARIES = (
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "catboost",
    "torch",
    "tensorflow",
    "keras",
    "jax",
    "pyspark",
    "fasttext",
    "fasttext-wheel",
    "transformers",
    "sentence-transformers",
    "onnx",
    "onnxruntime",
    "statsmodels",
    "prophet",
    "spacy",
    "optuna",
    "numpy",
    "scipy",
    "pandas",
    "polars",
    "pyarrow",
)

_MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value
_GIT_TIMEOUT = 10.0
_ATTACH_WAIT = 60.0  # seconds to wait for the run to appear before giving up on its artifacts
_EXIT_WAIT = 30.0  # seconds the process waits at exit for pending artifacts
_POLL = 0.02


def tag_table_markdown() -> str:
    """The table of docs/run-tags.md, generated from TAGS (a unit test keeps the doc equal to it)."""
    rows = ["| key | group | meaning |", "|---|---|---|"]
    rows += [f"| `{tag.key}` | {tag.group} | {tag.doc} |" for tag in TAGS]
    return "\n".join(rows) + "\n"


# --- settings ---


def enabled_groups(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Groups chosen by MLFLOW_EXT_RUN_TAGS. Raises ConfigError when it names an unknown group."""
    return tuple(settings.get("MLFLOW_EXT_RUN_TAGS", environ))


# --- code: git ---


@dataclass
class CodeInfo:
    tags: dict[str, str]
    diff: bytes | None = None


def _git(directory: str, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", directory, *args],
        capture_output=True,
        timeout=_GIT_TIMEOUT,
        check=False,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


def _git_diff(directory: str, limit: int) -> tuple[bytes, int]:
    """``git diff HEAD``, read in chunks: the first ``limit`` bytes and the full size."""
    process = subprocess.Popen(
        ["git", "-C", directory, "diff", "HEAD", "--no-color", "--no-ext-diff"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
    )
    kept = bytearray()
    total = 0
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + _GIT_TIMEOUT
        while chunk := process.stdout.read(1 << 16):
            total += len(chunk)
            if len(kept) < limit:
                kept += chunk[: limit - len(kept)]
            if time.monotonic() > deadline:
                raise RuntimeError("git diff took too long")
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait()
    return bytes(kept), total


def redact_url(url: str) -> str:
    """A remote or server URL without user name and password (tokens often hide there)."""
    parts = urlsplit(url)
    if parts.scheme and parts.netloc and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def code_directories() -> list[str]:
    """Where to look for the repository: the entry-point script's folder, then the working directory."""
    found = []
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and os.path.isfile(main):
        found.append(os.path.dirname(os.path.abspath(main)))
    cwd = os.getcwd()
    if cwd not in found:
        found.append(cwd)
    return found


def collect_code(directory: str, diff_limit: int) -> CodeInfo:
    """Git facts about ``directory``. Raises when it is not in a work tree with a commit."""
    root, commit, branch = _git(
        directory, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"
    ).splitlines()
    tags = {CODE_ROOT: root, CODE_COMMIT: commit}
    if branch != "HEAD":
        tags[CODE_BRANCH] = branch
    remotes = {}
    with contextlib.suppress(RuntimeError):  # exit 1: no remote configured
        for line in _git(directory, "config", "--get-regexp", r"^remote\..*\.url$").splitlines():
            key, _, value = line.partition(" ")
            remotes[key[len("remote.") : -len(".url")]] = value
    if remotes:
        tags[CODE_REMOTE_URL] = redact_url(remotes.get("origin") or next(iter(remotes.values())))
    status = _git(directory, "status", "--porcelain=v1", "-z", "--untracked-files=normal").split("\0")
    entries = [entry for entry in status if entry]
    untracked = sum(1 for entry in entries if entry.startswith("?? "))
    changed = any(not entry.startswith("?? ") for entry in entries)
    tags[CODE_DIRTY] = "true" if (changed or untracked) else "false"
    tags[CODE_UNTRACKED] = str(untracked)
    info = CodeInfo(tags)
    if changed:
        diff, size = _git_diff(directory, max(diff_limit, 0))
        tags[CODE_DIFF_BYTES] = str(size)
        tags[CODE_DIFF_TRUNCATED] = "true" if size > len(diff) else "false"
        if diff:
            info.diff = diff
    return info


def collect_command() -> dict[str, str]:
    """How the process was started: its command line (shell-quoted) and working directory."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return {CODE_COMMAND: shlex.join(redact_url(arg) for arg in argv), CODE_WORKDIR: os.getcwd()}


def workdir_in_repo(workdir: str, root: str) -> str | None:
    """``workdir`` relative to the work tree's ``root``, or None when it lies outside."""
    try:
        relative = os.path.relpath(os.path.realpath(workdir), os.path.realpath(root))
    except ValueError:
        return None
    return None if relative == ".." or relative.startswith(".." + os.sep) else relative


def _first_repository(diff_limit: int) -> CodeInfo:
    """Code facts of the first of code_directories() in a git work tree (a console script's folder,
    say, is not; the directory it was started from may be)."""
    problem: Exception | None = None
    for directory in code_directories():
        try:
            return collect_code(directory, diff_limit)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            problem = exc
    raise RuntimeError(f"no git work tree with a commit: {problem}")


# --- ci: GoCD ---


def collect_ci(environ: Mapping[str, str]) -> dict[str, str]:
    """GoCD job variables as tags; empty outside a GoCD job."""
    pipeline = environ.get("GO_PIPELINE_NAME")
    if not pipeline:
        return {}
    tags = {CI_SYSTEM: "gocd", CI_PIPELINE: pipeline}
    simple = {
        "GO_PIPELINE_COUNTER": CI_COUNTER,
        "GO_PIPELINE_LABEL": CI_LABEL,
        "GO_STAGE_NAME": CI_STAGE,
        "GO_STAGE_COUNTER": CI_STAGE_COUNTER,
        "GO_JOB_NAME": CI_JOB,
        "GO_TRIGGER_USER": CI_TRIGGER_USER,
        "GO_ENVIRONMENT_NAME": CI_ENVIRONMENT,
        "GO_REVISION": CI_REVISION,
    }
    for variable, key in simple.items():
        if environ.get(variable):
            tags[key] = environ[variable]
    for variable, value in environ.items():
        if variable.startswith("GO_REVISION_") and value:
            tags[CI_REVISION_PREFIX + variable[len("GO_REVISION_") :].lower()] = value
        elif variable.startswith("GO_DEPENDENCY_LOCATOR_") and value:
            tags[CI_UPSTREAM_PREFIX + variable[len("GO_DEPENDENCY_LOCATOR_") :].lower()] = value
    server, counter = environ.get("GO_SERVER_URL"), environ.get("GO_PIPELINE_COUNTER")
    if server and counter:
        tags[CI_URL] = pipeline_url(server, pipeline, counter)
    return tags


def pipeline_url(server_url: str, pipeline: str, counter: str) -> str:
    """GoCD's page of one pipeline instance (its value stream map)."""
    base = redact_url(server_url).rstrip("/")
    return f"{base}/pipelines/value_stream_map/{quote(pipeline, safe='')}/{quote(counter, safe='')}"


# --- env: Python, MLflow, libraries, hash of everything installed ---


@dataclass(frozen=True)
class EnvInfo:
    tags: dict[str, str]
    listing: str


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Normalised name -> version of every distribution on sys.path (first one wins, as for imports)."""
    import importlib.metadata

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(_normalise(name), dist.version or "")
    return found


@functools.lru_cache(maxsize=1)
def collect_env() -> EnvInfo:
    """Computed once per process: what is installed rarely changes while a program runs."""
    dists = installed_distributions()
    python = platform.python_version()
    plat = sysconfig.get_platform()
    header = f"# python {python} {platform.python_implementation()} {plat}\n"
    listing = header + "".join(f"{name}=={version}\n" for name, version in sorted(dists.items()))
    tags = {
        ENV_PYTHON: python,
        ENV_PLATFORM: plat,
        ENV_HASH: hashlib.sha256(listing.encode()).hexdigest(),
        ENV_PACKAGES: str(len(dists)),
    }
    mlflow_version = dists.get("mlflow") or dists.get("mlflow-skinny")
    if mlflow_version:
        tags[ENV_MLFLOW] = mlflow_version
    for library in ML_LIBRARIES:
        if library in dists:
            tags[ENV_LIB_PREFIX + library] = dists[library]
    return EnvInfo(tags, listing)


# --- notebook and host ---


def notebook_path(environ: Mapping[str, str]) -> str | None:
    """The notebook's path inside a Jupyter (or VS Code) kernel; None elsewhere. Never imports IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    if shell is None or not (type(shell).__name__ == "ZMQInteractiveShell" or hasattr(shell, "kernel")):
        return None
    namespace = getattr(shell, "user_ns", None) or {}
    for candidate in (
        namespace.get("__vsc_ipynb_file__"),
        environ.get("__vsc_ipynb_file__"),
        environ.get("JPY_SESSION_NAME"),  # set by jupyter_server for each kernel it starts
    ):
        if candidate:
            return str(candidate)
    try:  # ask the running Jupyter servers which session owns this kernel (MLflow's helper)
        return mlflow_internals.notebook_path_from_sessions()
    except Exception:  # pragma: no cover - depends on a live Jupyter server
        return None


def collect_host() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        user = str(os.getuid())
    return {HOST_NAME: socket.gethostname(), HOST_USER: user}


# --- artifacts: attached to the run once it exists ---


@dataclass
class _Pending:
    marker: str
    thread_ident: int
    tracking_uri: str
    diff: bytes | None
    env: EnvInfo | None
    checked: set[str] = field(default_factory=set)


class _Attacher:
    """One daemon thread that attaches pending artifacts to their runs, in the order runs started."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        self.exiting = threading.Event()
        self.listings: dict[tuple[str, str, str], str] = {}
        self.thread = threading.Thread(target=self._work, name="mlflow-ext-lineage", daemon=True)
        self.thread.start()
        atexit.register(self.drain)

    def submit(self, pending: _Pending) -> None:
        self.queue.put(pending)

    def drain(self) -> None:
        """At exit (before MLflow ends the active run): finish what can be finished, briefly."""
        self.exiting.set()
        self.queue.put_nowait(None)  # wakes the worker when idle
        self.thread.join(_EXIT_WAIT)

    def _work(self) -> None:
        while True:
            try:
                pending = self.queue.get(timeout=1.0)
            except queue.Empty:
                if self.exiting.is_set():
                    return
                continue
            if pending is None:
                if self.exiting.is_set() and self.queue.empty():
                    return
                continue
            try:
                self._attach(pending)
            except Exception as exc:  # never let the worker die; the run itself is unaffected
                _logger.warning("mlflow_ext: could not attach lineage artifacts: %s", exc)

    def _find_run(self, pending: _Pending) -> tuple[str, str] | None:
        stack = mlflow_internals.active_runs_by_thread().get(pending.thread_ident) or []
        for active in stack:
            if active.data.tags.get(COLLECTED_AT) == pending.marker:
                return active.info.run_id, active.info.experiment_id
        last = mlflow_internals.last_active_run_ids_by_thread().get(pending.thread_ident)
        if last and last not in pending.checked:
            pending.checked.add(last)
            run = self._client(pending).get_run(last)
            if run.data.tags.get(COLLECTED_AT) == pending.marker:
                return run.info.run_id, run.info.experiment_id
        return None

    @staticmethod
    def _client(pending: _Pending) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=pending.tracking_uri)

    def _attach(self, pending: _Pending) -> None:
        deadline = time.monotonic() + _ATTACH_WAIT
        found = self._find_run(pending)
        while found is None and not self.exiting.is_set() and time.monotonic() < deadline:
            time.sleep(_POLL)
            found = self._find_run(pending)
        if found is None:
            found = self._find_run(pending)  # last look: the exit handler runs before MLflow ends the run
        if found is None:
            _logger.debug("mlflow_ext: run %s never appeared; lineage artifacts dropped", pending.marker)
            return
        run_id, experiment_id = found
        client = self._client(pending)
        tags: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="mlflow-ext-lineage-") as tmp:
            if pending.diff is not None:
                path = os.path.join(tmp, os.path.basename(DIFF_ARTIFACT))
                with open(path, "wb") as handle:
                    handle.write(pending.diff)
                client.log_artifact(run_id, path, os.path.dirname(DIFF_ARTIFACT))
                tags[CODE_DIFF] = DIFF_ARTIFACT
            if pending.env is not None:
                tags[ENV_LISTING] = self._listing_uri(client, pending, run_id, experiment_id, tmp)
        if tags:
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def _listing_uri(self, client: Any, pending: _Pending, run_id: str, experiment_id: str, tmp: str) -> str:
        """The listing's URI: an earlier run's of this experiment with the same hash, else this run's."""
        assert pending.env is not None
        env_hash = pending.env.tags[ENV_HASH]
        key = (pending.tracking_uri, experiment_id, env_hash)
        if key in self.listings:
            return self.listings[key]
        earlier = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ENV_HASH}` = '{env_hash}' AND tags.`{ENV_LISTING}` LIKE 'runs:/%'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if earlier:
            uri = str(earlier[0].data.tags[ENV_LISTING])
        else:
            path = os.path.join(tmp, os.path.basename(ENV_ARTIFACT))
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(pending.env.listing)
            client.log_artifact(run_id, path, os.path.dirname(ENV_ARTIFACT))
            uri = f"runs:/{run_id}/{ENV_ARTIFACT}"
        self.listings[key] = uri
        return uri


_attacher: _Attacher | None = None
_attacher_lock = threading.Lock()
_last_marker: datetime | None = None


def _get_attacher() -> _Attacher:
    global _attacher
    with _attacher_lock:
        if _attacher is None or _attacher.pid != os.getpid():  # none yet, or inherited through fork
            _attacher = _Attacher()
        return _attacher


def _new_marker() -> str:
    """The collection time, bumped by a microsecond if needed so that it is unique in this process."""
    global _last_marker
    with _attacher_lock:
        now = datetime.now(UTC)
        if _last_marker is not None and now <= _last_marker:
            now = _last_marker + timedelta(microseconds=1)
        _last_marker = now
        return now.isoformat(timespec="microseconds")


def _called_from_start_run() -> bool:
    """True for ``mlflow.start_run``; MLflow also resolves context tags for logged models (no artifacts)."""
    frame = sys._getframe(1)
    for _ in range(6):
        if frame is None:
            return False
        if mlflow_internals.is_start_run_frame(frame):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _clean(tags: dict[str, str]) -> dict[str, str]:
    return {key: str(value)[:_MAX_TAG_VALUE] for key, value in tags.items() if value is not None}


# --- the provider ---


def collect(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], _Pending | None]:
    """Tags for a new run and the artifacts still to attach. Never raises: a failing group is skipped."""
    environ = os.environ if environ is None else environ
    try:
        groups = enabled_groups(environ)
    except ConfigError as exc:
        _logger.warning("mlflow_ext: %s; using every lineage tag group", exc)
        groups = GROUPS
    if not groups:
        return {}, None
    tags: dict[str, str] = {COLLECTED_AT: _new_marker()}
    diff: bytes | None = None
    env: EnvInfo | None = None
    for group in groups:
        try:
            if group == "code":
                try:
                    limit = int(settings.get("MLFLOW_EXT_RUN_DIFF_MAX_BYTES", environ))
                except ConfigError as exc:
                    _logger.warning("mlflow_ext: %s; using the default", exc)
                    limit = int(settings.get("MLFLOW_EXT_RUN_DIFF_MAX_BYTES", {}))
                tags.update(collect_command())
                code = _first_repository(limit)
                tags.update(code.tags)
                inside = workdir_in_repo(tags[CODE_WORKDIR], code.tags[CODE_ROOT])
                if inside is not None:
                    tags[CODE_WORKDIR_IN_REPO] = inside
                diff = code.diff
            elif group == "ci":
                tags.update(collect_ci(environ))
            elif group == "env":
                env = collect_env()
                tags.update(env.tags)
            elif group == "notebook":
                path = notebook_path(environ)
                if path:
                    tags[NOTEBOOK_PATH] = path
            elif group == "host":
                tags.update(collect_host())
        except Exception as exc:
            level = logging.DEBUG if group == "code" else logging.WARNING  # no repository is common
            _logger.log(level, "mlflow_ext: lineage tags of group %s skipped: %s", group, exc)
    pending = None
    if diff is not None or env is not None:
        from mlflow.tracking import get_tracking_uri

        pending = _Pending(tags[COLLECTED_AT], threading.get_ident(), get_tracking_uri(), diff, env)
    return _clean(tags), pending


class LineageRunContext:
    """Registered under the ``mlflow.run_context_provider`` entry point: active wherever installed.

    It has the two methods of ``mlflow.tracking.context.abstract_context.RunContextProvider`` without
    subclassing it, so that importing this module never imports mlflow (which loads this entry point).
    """

    def in_context(self) -> bool:
        try:
            return bool(enabled_groups())
        except Exception:
            return True  # tags() warns about the bad setting and uses every group

    def tags(self) -> dict[str, str]:
        try:
            tags, pending = collect()
            if pending is not None and _called_from_start_run():
                _get_attacher().submit(pending)
            return tags
        except Exception as exc:  # the user's run matters more than its lineage
            _logger.warning("mlflow_ext: lineage tags skipped: %s", exc)
            return {}
