"""What every fault row is made of: real clients through https://localhost whose calls are counted and whose
acknowledged writes go into a ledger, a probe that measures recovery, the platform's units and processes,
and the checks afterwards.

A call is *failed* when it raised, or when any answer on the wire before its final one was other than a
retryable 503/429: MLflow's client also retries 500, 502, 504 and broken connections, so a call it saved
after a 500 still counts as failed. Retried 503/429 answers are counted on their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from urllib3.util.retry import Retry

from tests.support.lineage import POLICY_LINEAGE

TRACKING_URI = "https://localhost"
CA_CERT = "/etc/nginx/tls/mlflow-platform.crt"
RETRYABLE = frozenset({429, 503})
RECOVERY_LIMIT = 10.0  # seconds; a row whose recovery takes longer fails

# The platform's units (role defaults, kept by the local inventory).
POSTGRES_UNIT = "postgresql@15-main"
SERVER_UNIT = "mlflow-server"
OBJECT_STORE_UNIT = "seaweedfs"
BRIDGE_UNIT = "gocd-bridge"
SEAWEEDFS_DATA = Path("/var/lib/seaweedfs/data")
BRIDGE_HEALTH = "http://127.0.0.1:5100/health"
OBJECT_STORE_HEALTH = "http://127.0.0.1:8333/healthz"
SERVER_HEALTH = "http://127.0.0.1:5000/health"


# --- what the client saw on the wire ----------------------------------------------------------------------

_calls = threading.local()
_spy_installed = False


def install_retry_spy() -> None:
    """Record, for the call in progress on this thread, every answer or error urllib3 retried."""
    global _spy_installed
    if _spy_installed:
        return
    original = Retry.increment

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        seen = getattr(_calls, "seen", None)
        if seen is not None:
            seen.append(response.status if response is not None else type(error).__name__)
        return original(self, method, url, response, error, _pool, _stacktrace)

    Retry.increment = increment  # type: ignore[method-assign]
    _spy_installed = True


def _short(exc: BaseException) -> str:
    """The error on one line; a long one keeps its start and its end, where the client names the cause
    ("API request to <url> failed with exception ... (Caused by ...)")."""
    text = " ".join(str(exc).split())
    if len(text) > 240:
        text = f"{text[:60]} ... {text[-180:]}"
    return f"{type(exc).__name__}: {text}"


# --- acknowledged writes ----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every write the server acknowledged, as the client recorded it."""

    metrics: dict[tuple[str, str], set[tuple[int, float]]] = field(default_factory=lambda: defaultdict(set))
    params: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    tags: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    artifacts: list[tuple[str, str, str]] = field(default_factory=list)  # run id, path, sha256
    versions: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (model, version) -> tags
    promotions: list[tuple[str, str]] = field(default_factory=list)  # (model, version) aliased
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return (
                sum(len(v) for v in self.metrics.values())
                + sum(len(v) for v in self.params.values())
                + sum(len(v) for v in self.tags.values())
                + len(self.artifacts)
                + len(self.versions)
                + sum(len(v) for v in self.versions.values())
                + len(self.promotions)
            )


# --- one row of the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    calls: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    promotions: int = 0
    promotions_lost: int = 0
    promotions_doubled: int = 0
    recovery: float | None = None
    recovery_measured: bool = False
    show_latency: bool = False
    completed: bool = False  # the test reached its checks; a row that did not is an error
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Run one client call, count it, and say whether it was acknowledged."""
        _calls.seen = []
        started = time.perf_counter()
        result, error = None, None
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            error = exc
        elapsed = time.perf_counter() - started
        seen, _calls.seen = _calls.seen, None
        bad = [s for s in seen if s not in RETRYABLE]
        with self.lock:
            self.calls += 1
            self.latencies.append(elapsed)
            self.retried += len(seen) - len(bad)
            if error is not None or bad:
                self.failed += 1
                reason = _short(error) if error is not None else f"answered {bad[0]} before succeeding"
                retried = f"; retried after: {', '.join(map(str, seen))}" if seen else ""
                reason += f" ({elapsed:.1f} s{retried})"
                self.errors[f"{what}: {reason}"] += 1
        return error is None, result

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)

    def set_recovery(self, seconds: float | None, why: str = "") -> None:
        """The slowest recovery measured in this row wins; None means it never recovered."""
        if why:
            self.note(why)
        if self.recovery_measured and (self.recovery is None or seconds is None):
            self.recovery = None
        elif self.recovery_measured:
            self.recovery = max(self.recovery, seconds)  # type: ignore[type-var]
        else:
            self.recovery = seconds
        self.recovery_measured = True

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def problems(self) -> list[str]:
        found = []
        if self.failed:
            found.append(f"{self.failed} calls failed other than with a retried 503/429")
        if self.lost:
            found.append(f"{self.lost} acknowledged writes lost")
        if self.promotions_lost or self.promotions_doubled:
            found.append(
                f"promotions: {self.promotions_lost} lost, {self.promotions_doubled} scheduled more than once"
            )
        if self.recovery_measured and (self.recovery is None or self.recovery > RECOVERY_LIMIT):
            shown = "never" if self.recovery is None else f"{self.recovery:.1f} s"
            found.append(f"recovery {shown} (limit {RECOVERY_LIMIT:.0f} s)")
        return found

    def report(self) -> str:
        verdict = "; ".join(self.problems()) or "ok"
        if not self.completed:
            verdict = "the test ended before its checks (see its error); " + verdict
        lines = [f"{self.fault}: {verdict}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {count} x {message}" for message, count in self.errors.most_common(8)]
        return "\n".join(lines)


def format_table(rows: list[Row], footnotes: list[str]) -> str:
    header = (
        "fault",
        "calls",
        "failed",
        "503/429",
        "acked",
        "acked lost",
        "promotions",
        "promo lost/doubled",
        "recovery s",
        "p50/p99 ms",
        "result",
    )
    body = []
    for row in rows:
        recovery = (
            "-" if not row.recovery_measured else "never" if row.recovery is None else f"{row.recovery:.1f}"
        )
        body.append(
            (
                row.fault,
                str(row.calls),
                str(row.failed),
                str(row.retried),
                str(row.ledger.count()),
                str(row.lost),
                str(row.promotions) if row.promotions else "-",
                f"{row.promotions_lost}/{row.promotions_doubled}" if row.promotions else "-",
                recovery,
                f"{row.percentile(0.5) * 1000:.0f}/{row.percentile(0.99) * 1000:.0f}"
                if row.show_latency
                else "-",
                "ERROR" if not row.completed else "FAIL" if row.problems() else "ok",
            )
        )
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line(header), rule, *[line(cells) for cells in body]]
    out += ["", *[row.report() for row in rows], *[f"note: {f}" for f in footnotes]]
    return "\n".join(out)


# --- load -------------------------------------------------------------------------------------------------


def new_client():
    from mlflow import MlflowClient

    return MlflowClient(TRACKING_URI, registry_uri=TRACKING_URI)


def _random_file(directory: Path, name: str, size: int) -> tuple[Path, str]:
    path = directory / name
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return path, digest.hexdigest()


class Load:
    """Client threads writing through https://localhost until stopped; each acknowledged write is recorded.

    ``tracking`` threads log metrics, params, tags and batches to runs of their own; ``registry`` threads
    create model versions and tag them; ``artifacts`` threads upload files of ``artifact_size`` bytes.
    """

    def __init__(
        self,
        row: Row,
        experiment_id: str,
        tracking: int = 0,
        registry: int = 0,
        artifacts: int = 0,
        artifact_size: int = 64 * 1024,
        pause: float = 0.0,
    ) -> None:
        self.row = row
        self.experiment_id = experiment_id
        self.stop_event = threading.Event()
        self.pause = pause
        self.artifact_size = artifact_size
        self.directory = Path(tempfile.mkdtemp(prefix="chaos-load-"))
        self.threads = [
            threading.Thread(target=self._tracking, args=(i,), daemon=True) for i in range(tracking)
        ]
        self.threads += [
            threading.Thread(target=self._registry, args=(i,), daemon=True) for i in range(registry)
        ]
        self.threads += [
            threading.Thread(target=self._artifacts, args=(i,), daemon=True) for i in range(artifacts)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 90) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t for t in self.threads if t.is_alive()]
        if stuck:
            self.row.note(
                f"{len(stuck)} client threads still inside a call {timeout:.0f} s after the row ended"
            )
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, client) -> str | None:
        ok, run = self.row.call("create_run", client.create_run, self.experiment_id)
        return run.info.run_id if ok else None

    def _tracking(self, worker: int) -> None:
        client = new_client()
        run_id = None
        ledger = self.row.ledger
        step = 0
        while not self.stop_event.is_set():
            if run_id is None:
                run_id = self._run(client)
                if run_id is None:
                    time.sleep(0.5)
                    continue
            step += 1
            key = f"m{worker}"
            ok, _ = self.row.call("log_metric", client.log_metric, run_id, key, float(step), step=step)
            if ok:
                with ledger.lock:
                    ledger.metrics[(run_id, key)].add((step, float(step)))
            if step % 3 == 0:
                ok, _ = self.row.call("log_param", client.log_param, run_id, f"p{step}", str(step))
                if ok:
                    with ledger.lock:
                        ledger.params[run_id][f"p{step}"] = str(step)
            if step % 5 == 0:
                ok, _ = self.row.call("set_tag", client.set_tag, run_id, f"t{step}", f"v{step}")
                if ok:
                    with ledger.lock:
                        ledger.tags[run_id][f"t{step}"] = f"v{step}"
            if step % 10 == 0:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                batch = [Metric(f"b{worker}", float(step * 10 + k), now, step * 10 + k) for k in range(10)]
                ok, _ = self.row.call("log_batch", client.log_batch, run_id, metrics=batch)
                if ok:
                    with ledger.lock:
                        ledger.metrics[(run_id, f"b{worker}")].update((m.step, m.value) for m in batch)
            if self.pause:
                time.sleep(self.pause)

    def _registry(self, worker: int) -> None:
        client = new_client()
        ledger = self.row.ledger
        name = f"chaos-registry-{os.getpid()}-{random.getrandbits(32):08x}-{worker}"
        ok, _ = self.row.call("create_registered_model", client.create_registered_model, name)
        run_id = self._run(client) if ok else None
        if run_id is None:
            return
        source = f"mlflow-artifacts:/{self.experiment_id}/{run_id}/artifacts/model"
        while not self.stop_event.is_set():
            ok, version = self.row.call(
                "create_model_version", client.create_model_version, name, source, run_id=run_id
            )
            if not ok:
                time.sleep(0.2)
                continue
            key = (name, str(version.version))
            with ledger.lock:
                ledger.versions[key] = {}
            ok, _ = self.row.call(
                "set_model_version_tag", client.set_model_version_tag, name, key[1], "chaos", "tagged"
            )
            if ok:
                with ledger.lock:
                    ledger.versions[key]["chaos"] = "tagged"
            time.sleep(0.1)

    def _artifacts(self, worker: int) -> None:
        client = new_client()
        run_id = None
        count = 0
        while not self.stop_event.is_set():
            if run_id is None:
                run_id = self._run(client)
                if run_id is None:
                    time.sleep(0.5)
                    continue
            count += 1
            self.upload(client, run_id, f"w{worker}", f"a{count}.bin", self.artifact_size)
            if self.pause:
                time.sleep(self.pause)

    def upload(self, client, run_id: str, directory: str, name: str, size: int) -> bool:
        """Upload one file of random bytes; record it if the server acknowledged it."""
        folder = self.directory / f"{threading.get_ident()}"
        folder.mkdir(exist_ok=True)
        path, digest = _random_file(folder, name, size)
        try:
            ok, _ = self.row.call("log_artifact", client.log_artifact, run_id, str(path), directory)
        finally:
            path.unlink(missing_ok=True)
        if ok:
            with self.row.ledger.lock:
                self.row.ledger.artifacts.append((run_id, f"{directory}/{name}", digest))
        return ok


# --- recovery probe ---------------------------------------------------------------------------------------


class Probe(threading.Thread):
    """One write every ``interval`` seconds without any retry: a tag (database) or, with ``artifacts``, an
    upload of ``size`` bytes (object store). Its timeline says when the platform served again."""

    def __init__(
        self, auth: tuple[str, str], experiment_id: str, run_id: str, artifacts: bool = False, size: int = 16
    ) -> None:
        super().__init__(daemon=True)
        self.auth = auth
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.artifacts = artifacts
        self.body = os.urandom(size)  # small bodies may live in the filer's metadata, not in a volume
        self.interval = 0.2
        self.samples: list[tuple[float, float, bool]] = []  # started, ended, ok
        self.stop_event = threading.Event()

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override the platform's CA
        session.auth = self.auth
        session.verify = CA_CERT
        return session

    def run(self) -> None:
        session = self._session()
        count = 0
        while not self.stop_event.is_set():
            count += 1
            started = time.monotonic()
            try:
                if self.artifacts:
                    path = f"{self.experiment_id}/{self.run_id}/artifacts/probe/{count}.txt"
                    answer = session.put(
                        f"{TRACKING_URI}/api/2.0/mlflow-artifacts/artifacts/{path}", data=self.body, timeout=5
                    )
                else:
                    answer = session.post(
                        f"{TRACKING_URI}/api/2.0/mlflow/runs/set-tag",
                        json={"run_id": self.run_id, "key": "probe", "value": str(count)},
                        timeout=5,
                    )
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
                session = self._session()
            self.samples.append((started, time.monotonic(), ok))
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)

    def failures_since(self, since: float) -> int:
        return sum(1 for started, _, ok in list(self.samples) if started >= since and not ok)

    def recovered_at(self, since: float) -> float | None:
        """When the first success after the last failure (started at or after ``since``) ended; ``since``
        itself when nothing failed; None while the last probe still fails."""
        samples = [s for s in list(self.samples) if s[1] >= since]
        failures = [started for started, _, ok in samples if not ok]
        if not failures:
            return since
        last = failures[-1]
        return next((ended for started, ended, ok in samples if ok and started > last), None)

    def wait_recovered(self, since: float, timeout: float, settle: float = 2.0) -> float | None:
        """Seconds from ``since`` until the probe served again and kept serving for ``settle`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.recovered_at(since)
            if at is not None and time.monotonic() - at >= settle:
                return at - since
            time.sleep(0.1)
        at = self.recovered_at(since)
        return None if at is None else at - since


# --- checks afterwards ------------------------------------------------------------------------------------


def verify(row: Row) -> None:
    """Read back every acknowledged write; count the missing or wrong ones into ``row.lost``."""
    client = new_client()
    ledger = row.ledger
    lost: list[str] = []
    for (run_id, key), expected in ledger.metrics.items():
        found = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        lost += [f"metric {run_id}/{key} step {s}" for s, v in sorted(expected - found)]
    for run_id in set(ledger.params) | set(ledger.tags):
        data = client.get_run(run_id).data
        lost += [f"param {run_id}/{k}" for k, v in ledger.params[run_id].items() if data.params.get(k) != v]
        lost += [f"tag {run_id}/{k}" for k, v in ledger.tags[run_id].items() if data.tags.get(k) != v]
    for (name, version), tags in ledger.versions.items():
        try:
            found_tags = client.get_model_version(name, version).tags
        except Exception as exc:
            lost.append(f"model version {name}/{version}: {_short(exc)}")
            continue
        lost += [f"version tag {name}/{version}/{k}" for k, v in tags.items() if found_tags.get(k) != v]
    with tempfile.TemporaryDirectory(prefix="chaos-verify-") as scratch:
        for index, (run_id, path, digest) in enumerate(ledger.artifacts):
            try:
                local = client.download_artifacts(run_id, path, f"{scratch}/{index}")
                got = hashlib.sha256(Path(local).read_bytes()).hexdigest()
                Path(local).unlink()
            except Exception as exc:
                lost.append(f"artifact {run_id}/{path}: {_short(exc)}")
                continue
            if got != digest:
                lost.append(f"artifact {run_id}/{path}: content differs")
    row.lost = len(lost)
    for item in lost[:5]:
        row.note(f"lost: {item}")


# --- the platform's units and processes -------------------------------------------------------------------

REPLACEMENT_SCRIPT = Path(
    "/opt/systemctl-replacement/venv/lib/python3.11/site-packages/systemctl2/systemctl3.py"
)


class Units:
    """The platform's units through systemctl (the systemd_compat role's replacement on this host)."""

    def __init__(self) -> None:
        self.argv = ["systemctl"]
        self.note = ""
        version = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=False)
        if "systemctl.py" not in version.stdout and REPLACEMENT_SCRIPT.exists():
            self.argv = ["/usr/bin/python3", str(REPLACEMENT_SCRIPT)]
            self.note = (
                "/usr/bin/systemctl is not the systemctl replacement (systemd's package put its own binary "
                f"back); units were driven with {REPLACEMENT_SCRIPT}"
            )

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def restart(self, unit: str) -> float:
        started = time.monotonic()
        result = self.run("restart", unit)
        if result.returncode != 0:
            raise RuntimeError(
                f"systemctl restart {unit}: {result.returncode} {result.stderr.strip()[-400:]}"
            )
        return time.monotonic() - started

    def start(self, unit: str) -> None:
        result = self.run("start", unit)
        if result.returncode != 0:
            raise RuntimeError(f"systemctl start {unit}: {result.returncode} {result.stderr.strip()[-400:]}")

    def stop(self, unit: str) -> None:
        result = self.run("stop", unit)
        if result.returncode != 0:
            raise RuntimeError(f"systemctl stop {unit}: {result.returncode} {result.stderr.strip()[-400:]}")

    def is_active(self, unit: str) -> bool:
        return self.run("is-active", unit).stdout.strip() == "active"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    args: str


def processes() -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            uid = entry.stat().st_uid
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if args:
                found.append(Proc(int(entry.name), ppid, uid, args))
    return found


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


@dataclass(frozen=True)
class ServerShape:
    master: int | None
    workers: tuple[int, ...]
    orphans: tuple[int, ...]  # server workers whose uvicorn master is gone

    def whole(self, workers: int, without: int | None = None) -> bool:
        """A master with ``workers`` workers and no orphans, none of them the process ``without``."""
        return (
            self.master is not None
            and len(self.workers) == workers
            and not self.orphans
            and without not in (self.master, *self.workers)
        )


def server_shape() -> ServerShape:
    """The uvicorn master of the MLflow server, its worker processes, and workers left without a master."""
    uid = _uid("mlflow")
    mine = [p for p in processes() if p.uid == uid]
    masters = [p for p in mine if "-m uvicorn" in p.args]
    master = masters[0].pid if masters else None
    spawned = [p for p in mine if "multiprocessing.spawn" in p.args]
    workers = tuple(p.pid for p in spawned if p.ppid == master)
    orphans = tuple(p.pid for p in spawned if p.ppid not in {m.pid for m in masters})
    return ServerShape(master, workers, orphans)


def bridge_pids() -> list[int]:
    uid = _uid("gocd-bridge")
    return [p.pid for p in processes() if p.uid == uid and "bridge serve" in p.args]


def http_ok(url: str, verify: str | bool = True) -> bool:
    try:
        return requests.get(url, timeout=2, verify=verify).status_code == 200
    except requests.RequestException:
        return False


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


@contextlib.contextmanager
def probing(probe: Probe) -> Iterator[Probe]:
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()


# --- promotions through the bridge ------------------------------------------------------------------------


@dataclass
class GoCDTarget:
    """The fake GoCD the provisioned bridge delivers to for this session, and the routes that lead there: one
    route from the session's prefix to its pipeline, or, inside ``own_pipelines``, each model to its own."""

    gocd: Any  # tests.support.fake_gocd.FakeGoCD
    pipeline: str
    prefix: str
    alias: str = "production"
    routes_path: Path | None = None  # the provisioned bridge's routing file, rewritten in place
    own: dict[str, str] = field(default_factory=dict)  # model -> its own release pipeline

    def pipeline_of(self, model: str) -> str:
        return self.own.get(model, self.pipeline)

    def schedules(self) -> list[Any]:
        pipelines = {self.pipeline, *self.own.values()}
        return [s for s in self.gocd.schedules() if s.pipeline in pipelines]

    def write_routes(self) -> None:
        """The routing file for the current layout (owner and mode kept: the file is rewritten, not replaced;
        the bridge reloads it when it changes)."""
        assert self.routes_path is not None
        if self.own:
            routes = [{"model": m, "alias": self.alias, "pipeline": p} for m, p in self.own.items()]
        else:
            routes = [{"model": self.prefix + "*", "alias": self.alias, "pipeline": self.pipeline}]
        text = "# make chaos: restored when the suite ends\n" + json.dumps({"routes": routes}) + "\n"
        self.routes_path.write_text(text, encoding="utf-8")

    @contextlib.contextmanager
    def own_pipelines(self, models: list[tuple[str, str]], variables: tuple[str, ...]) -> Iterator[None]:
        """Each model routed to a release pipeline of its own, as `mlflow-ext gocd generate` lays them out.
        (Triggers into one pipeline are serial by GoCD's contract: 409 while one is forced and not yet
        scheduled; many promotions of one pipeline measure GoCD, not the platform.)"""
        for model, _ in models:
            self.own[model] = f"{model}-release"
            self.gocd.add_pipeline(self.own[model], variables=variables)
        self.write_routes()
        try:
            yield
        finally:
            self.own.clear()
            self.write_routes()


def prepare_models(
    row: Row, experiment_id: str, target: GoCDTarget, count: int, threads: int = 6
) -> list[tuple[str, str]]:
    """``count`` registered models, each with one version whose run carries the lineage the policy needs."""
    names = [f"{target.prefix}{random.getrandbits(40):010x}" for _ in range(count)]
    made: list[tuple[str, str]] = []
    lock = threading.Lock()

    def make(chunk: list[str]) -> None:
        client = new_client()
        for name in chunk:
            ok, _ = row.call("create_registered_model", client.create_registered_model, name)
            ok2, run = row.call("create_run", client.create_run, experiment_id, tags=POLICY_LINEAGE)
            if not (ok and ok2):
                continue
            row.call("set_terminated", client.set_terminated, run.info.run_id)
            source = f"mlflow-artifacts:/{experiment_id}/{run.info.run_id}/artifacts/model"
            ok, version = row.call(
                "create_model_version", client.create_model_version, name, source, run_id=run.info.run_id
            )
            if ok:
                with lock:
                    made.append((name, str(version.version)))

    workers = [threading.Thread(target=make, args=(names[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    made.sort(key=lambda item: names.index(item[0]))
    return made


def promote(row: Row, client, target: GoCDTarget, model: str, version: str) -> bool:
    ok, _ = row.call(
        "set_registered_model_alias", client.set_registered_model_alias, model, target.alias, version
    )
    if ok:
        with row.ledger.lock:
            row.ledger.promotions.append((model, version))
    return ok


def check_promotions(
    row: Row, target: GoCDTarget, since: float, timeout: float, settle: float = 5.0
) -> float | None:
    """Wait until every acknowledged promotion was scheduled; then count the lost and the doubled.

    Returns the seconds from ``since`` until the last acknowledged promotion was scheduled (None if some
    never were within ``timeout``). A schedule counts only with the right pipeline, alias and version.
    """
    acked = list(row.ledger.promotions)
    row.promotions = len(acked)

    def by_model() -> Counter[tuple[str, str]]:
        return Counter(
            (s.variables.get("MLFLOW_MODEL_NAME", ""), s.variables.get("MLFLOW_MODEL_VERSION", ""))
            for s in target.schedules()
            if s.pipeline == target.pipeline_of(s.variables.get("MLFLOW_MODEL_NAME", ""))
            and s.variables.get("MLFLOW_MODEL_ALIAS") == target.alias
            and s.variables.get("MLFLOW_MODEL_NAME", "").startswith(target.prefix)
        )

    done = wait_until(lambda: all(by_model()[p] for p in acked), timeout, interval=0.2)
    drained = time.monotonic() - since if done else None
    time.sleep(settle)  # a duplicate would be sent by now
    counts = by_model()
    row.promotions_lost = sum(1 for p in acked if not counts[p])
    row.promotions_doubled = sum(1 for n in counts.values() if n > 1)
    for model, version in [p for p in acked if not counts[p]][:3]:
        row.note(f"promotion of {model} v{version} never scheduled")
    return drained
