"""The platform's server against vanilla `mlflow server`s and the database's own limit, side by side.

Target: the provisioned platform through its TLS proxy (`make up`), with the admin credentials from the
secrets directory. If it is not provisioned, the bench starts the platform's processes on loopback
(without the proxy) and says so in the results. Baselines, started and stopped here:

- `mlflow server` as pip installs it, with its defaults (SQLite, local disk): what a team tries first;
- a careful vanilla: `mlflow server` with `uvicorn[standard]` (httptools, uvloop) and psycopg2, as many
  workers as the platform, on the platform's own PostgreSQL database: what a careful user runs instead;
- raw `COPY` of the same metric rows into the same database, four client processes: the physical limit.

Every target is driven by the same client: MLflow's, with mlflow_ext installed, so http(s) URIs get the
client's store (mlflow_ext.rest_store; MLFLOW_EXT_FAST_CLIENT=false in the bench's environment gives
MLflow's own): its log_metric and log_batch bodies go out on kept-alive connections, to every target alike.
The body that store builds for log_batch(1000) is timed here against MLflow's ``message_to_json`` of the
same batch, in one process, side by side.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.environ import patched_environ
from tests.support.services import free_ports, http_ok, running_platform, s3_client, stop_process, wait_for

SECRETS_DIR = Path(os.environ.get("BENCH_SECRETS_DIR", "/etc/mlflow-platform/secrets"))
PLATFORM_URL = os.environ.get("BENCH_PLATFORM_URL", "https://localhost")
CA_FILE = os.environ.get("BENCH_CA_FILE", "/etc/nginx/tls/mlflow-platform.crt")
LOG_METRIC_CALLS = int(os.environ.get("BENCH_LOG_METRIC_CALLS", "300"))
BATCHES_PER_CLIENT = int(os.environ.get("BENCH_BATCHES_PER_CLIENT", "30"))
ARTIFACT_MIB = int(os.environ.get("BENCH_ARTIFACT_MIB", "256"))
UPLOAD_ROUNDS = int(os.environ.get("BENCH_UPLOAD_ROUNDS", "5"))
WARM_UPLOAD_MIB = 16
CLIENT_BODY_ROUNDS = int(os.environ.get("BENCH_CLIENT_BODY_ROUNDS", "40"))
WARM_SECONDS = float(os.environ.get("BENCH_WARM_SECONDS", "15"))


SERVER_ENV_FILE = Path(os.environ.get("BENCH_SERVER_ENV_FILE", "/etc/mlflow/server.env"))
PROXY_ACCESS_LOG = Path(os.environ.get("BENCH_PROXY_ACCESS_LOG", "/var/log/nginx/access.log"))
WORKERS = "2"  # the platform's default on this 2-core machine: one per core, at least two


@dataclass
class Target:
    label: str
    env: dict[str, str]
    s3_client: object | None = None
    bucket: str | None = None
    proxied: bool = False  # behind the provisioned nginx, whose access log times each request
    # How the platform's server reaches its PostgreSQL (MLFLOW_BACKEND_STORE_URI, PGPASSFILE): the careful
    # vanilla and raw COPY run on the same database.
    backend: dict[str, str] | None = None


def _secret(name: str) -> str:
    return (SECRETS_DIR / name).read_text().strip()


def _provisioned_platform() -> Target | None:
    """The platform `make up` provisioned, if it answers through the proxy."""
    try:
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=CA_FILE)
        with urllib.request.urlopen(PLATFORM_URL + "/health", timeout=5, context=context) as response:
            if response.status != 200:
                return None
        env = {
            "MLFLOW_TRACKING_URI": PLATFORM_URL,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": _secret("mlflow_admin_password"),
            "MLFLOW_TRACKING_SERVER_CERT_PATH": CA_FILE,
        }
    except OSError:
        return None
    s3 = s3_client(
        os.environ.get("BENCH_S3_ENDPOINT", "http://127.0.0.1:8333"),
        _secret("object_store_access_key"),
        _secret("object_store_secret_key"),
    )
    return Target(
        "platform (provisioned, through the TLS proxy)",
        env,
        s3,
        os.environ.get("BENCH_BUCKET", "mlflow-artifacts"),
        backend=_backend(SERVER_ENV_FILE),
        proxied=True,
    )


def _backend(env_file: Path) -> dict[str, str]:
    from mlflow_ext.settings import read_env_file

    values = read_env_file(str(env_file))
    return {name: values[name] for name in ("MLFLOW_BACKEND_STORE_URI", "PGPASSFILE") if name in values}


def vanilla_python(name: str = "bench-vanilla", extras: tuple[str, ...] = ()) -> str:
    """A venv with nothing but `pip install mlflow==<pinned> <extras>`, built once under .venv/<name>.

    Without extras: MLflow as a team would first install it. The dev venv carries the platform's extras,
    which would flatter (or handicap) a baseline, so each baseline has a venv of its own.
    """
    import mlflow

    venv = Path(__file__).resolve().parents[2] / ".venv" / name
    stamp = venv / f".mlflow-{mlflow.__version__}"
    if not stamp.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"mlflow=={mlflow.__version__}", *extras],
            check=True,
        )
        stamp.touch()
    return str(venv / "bin" / "python")


@contextlib.contextmanager
def _mlflow_server(label: str, python: str, options: list[str], env: dict[str, str]) -> Iterator[Target]:
    workdir = tempfile.mkdtemp(prefix="bench-vanilla-")
    (port,) = free_ports(1)
    log = open(Path(workdir) / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [python, "-m", "mlflow", "server", "--port", str(port), *options],
        cwd=workdir,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), label, 180, process)
        yield Target(label, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    finally:
        stop_process(process)
        log.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def vanilla_server() -> Iterator[Target]:
    """`mlflow server` as pip installs it, with its defaults (SQLite and ./mlartifacts in its working dir)."""
    with _mlflow_server("vanilla mlflow server (defaults)", vanilla_python(), [], {}) as target:
        yield target


@contextlib.contextmanager
def careful_vanilla_server(backend: dict[str, str]) -> Iterator[Target]:
    """`mlflow server` with uvicorn[standard] and psycopg2, the platform's worker count, on its database."""
    python = vanilla_python("bench-careful", ("uvicorn[standard]", "psycopg2-binary"))
    artifacts = tempfile.mkdtemp(prefix="bench-careful-artifacts-")
    options = [
        "--backend-store-uri",
        backend["MLFLOW_BACKEND_STORE_URI"],
        "--default-artifact-root",
        artifacts,
        "--workers",
        WORKERS,
    ]
    env = {"PGPASSFILE": backend["PGPASSFILE"]} if "PGPASSFILE" in backend else {}
    try:
        with _mlflow_server(
            "careful vanilla (uvicorn[standard], same PostgreSQL)", python, options, env
        ) as target:
            yield target
    finally:
        import shutil

        shutil.rmtree(artifacts, ignore_errors=True)


def raw_copy_metrics_per_s(backend: dict[str, str]) -> float:
    """COPY of log_batch's metric rows by four client processes into the platform's own database."""
    from tests.bench.tracking_store import throughput

    artifacts = tempfile.mkdtemp(prefix="bench-copy-")
    try:
        with patched_environ({"PGPASSFILE": backend["PGPASSFILE"]} if "PGPASSFILE" in backend else {}):
            return throughput("copy", backend["MLFLOW_BACKEND_STORE_URI"], artifacts)
    finally:
        import shutil

        shutil.rmtree(artifacts, ignore_errors=True)


@contextlib.contextmanager
def platform_target() -> Iterator[Target]:
    provisioned = _provisioned_platform()
    if provisioned is not None:
        yield provisioned
        return
    with running_platform() as started:
        yield Target(
            "platform processes on loopback (not provisioned: no proxy)",
            started.client_env(),
            started.s3.client(),
            started.bucket,
            backend=_backend(started.server.env_file),
        )


def purge_bench_experiments(backend: dict[str, str], since_ms: int) -> int:
    """Deletes for good the experiments named bench-* created since `since_ms` in the platform's database,
    with their runs' rows, as `mlflow gc` does: a bench run logs about a million metric rows there, which
    would otherwise stay in the platform's database and in each of its backups. Returns how many went."""
    from mlflow.entities import ViewType
    from mlflow.store.tracking import SEARCH_MAX_RESULTS_THRESHOLD as SEARCH_MAX_RESULTS
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifacts = tempfile.mkdtemp(prefix="bench-purge-")
    env = {"PGPASSFILE": backend["PGPASSFILE"]} if "PGPASSFILE" in backend else {}
    with patched_environ(env):
        store = SqlAlchemyStore(backend["MLFLOW_BACKEND_STORE_URI"], artifacts)
        try:
            # A bench run makes about a dozen experiments of a few runs each: one page of either is enough.
            doomed = store.search_experiments(
                view_type=ViewType.ALL,
                filter_string=f"name LIKE 'bench-%' AND creation_time >= {since_ms}",
                max_results=SEARCH_MAX_RESULTS,
            )
            for experiment in doomed:
                runs = store.search_runs([experiment.experiment_id], "", ViewType.ALL, SEARCH_MAX_RESULTS)
                if experiment.lifecycle_stage == "active":
                    store.delete_experiment(experiment.experiment_id)
                for run in runs:
                    store._hard_delete_run(run.info.run_id)
                store._hard_delete_experiment(experiment.experiment_id)
        finally:
            store.engine.dispose()
            os.rmdir(artifacts)
    return len(doomed)


def _new_run(prefix: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"{prefix}-{uuid.uuid4().hex[:8]}")
    return client.create_run(experiment_id).info.run_id


def _proxy_times(log_offset: int, path: str) -> tuple[list[float], list[float]]:
    """nginx's total and upstream times (s) of the requests to `path` logged after `log_offset`."""
    totals, upstreams = [], []
    with open(PROXY_ACCESS_LOG, "rb") as log:
        log.seek(log_offset)
        for line in log.read().decode(errors="replace").splitlines():
            fields = dict(
                part.split("=", 1) for part in line.split() if part.startswith(("rt=", "upstream_rt="))
            )
            if f" {path} " in line and fields.get("upstream_rt", "-") != "-":
                totals.append(float(fields["rt"]))
                upstreams.append(float(fields["upstream_rt"]))
    return totals, upstreams


def _print_where_time_goes(what: str, log_offset: int | None, path: str, client_ms: float) -> None:
    if log_offset is None:
        return
    totals, upstreams = _proxy_times(log_offset, path)
    if not totals:
        return
    # Medians of each request's parts, so the parts of one request are compared with each other.
    server = statistics.median(upstreams) * 1000
    nginx = (
        statistics.median(total - upstream for total, upstream in zip(totals, upstreams, strict=True)) * 1000
    )
    print(
        f"   where a {what}'s {client_ms:.2f} ms go (p50s): server (uvicorn, auth, MLflow's handler, store) "
        f"{server:.2f} ms, nginx {nginx:.2f} ms, client and TLS the rest",
        flush=True,
    )


# The provisioned platform's processes by what they are, from their command lines: the tracking server's
# workers (its venv), PostgreSQL's backends of the platform's cluster, nginx, SeaweedFS.
PROCESS_GROUPS = (
    ("server", "/opt/mlflow/venv/"),
    ("postgres", "postgres: 15/main"),
    ("nginx", "nginx"),
    ("seaweedfs", "/opt/seaweedfs/"),
)


def _cpu_seconds_by_group() -> dict[tuple[str, int], float]:
    """CPU seconds (user + system) so far of every platform process."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = next((name for name, marker in PROCESS_GROUPS if marker in command), None)
        if group is not None:
            seconds[(group, pid)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


@contextlib.contextmanager
def _cpu_split(what: str, operations: int, enabled: bool = True) -> Iterator[dict[str, float]]:
    """Print the CPU ms per operation that each platform process group spent during the block, and the
    clients: this process's own time, unless the block sets ``clients`` (client processes of their own).
    What the machine's two cores are spent on."""
    if not enabled:
        yield {}
        return
    before, cpu = _cpu_seconds_by_group(), time.process_time()
    spent: dict[str, float] = {}
    yield spent
    spent.setdefault("clients", time.process_time() - cpu)
    for (group, pid), seconds in _cpu_seconds_by_group().items():
        spent[group] = spent.get(group, 0.0) + seconds - before.get((group, pid), 0.0)
    parts = ", ".join(f"{name} {seconds / operations * 1000:.1f}" for name, seconds in sorted(spent.items()))
    print(
        f"   CPU ms per {what}: {parts}; in all {sum(spent.values()) / operations * 1000:.1f}",
        flush=True,
    )


def log_metric_latencies(targets: list[Target]) -> list[dict]:
    """One keep-alive client per target logging metrics one by one, the targets' calls alternating (in a
    rotating order), so that a machine that slows down or speeds up meanwhile weighs on each alike.

    The targets' environments are merged (an unauthenticated vanilla server ignores the platform's
    credentials); each client names its server. A proxied target also gets where the time went, and what
    each process spent on its calls in a pass of its own afterwards (the others share its database).
    """
    from mlflow import MlflowClient

    env: dict[str, str] = {}
    for target in reversed(targets):
        env.update(target.env)
    offsets = [
        PROXY_ACCESS_LOG.stat().st_size if target.proxied and PROXY_ACCESS_LOG.exists() else None
        for target in targets
    ]
    with patched_environ(env):
        clients = [MlflowClient(target.env["MLFLOW_TRACKING_URI"]) for target in targets]
        runs = [
            client.create_run(client.create_experiment(f"bench-latency-{uuid.uuid4().hex[:8]}")).info.run_id
            for client in clients
        ]
        # Warm the keep-alive connections and the servers' caches, and wait out a server's start: a vanilla
        # server just up answers log_metric at about three times its settled latency for several seconds.
        warm_until, step = time.monotonic() + WARM_SECONDS, 0
        while step < 10 or time.monotonic() < warm_until:
            for client, run_id in zip(clients, runs, strict=True):
                client.log_metric(run_id, "warmup", 0.0, step=step)
            step += 1
        durations: list[list[float]] = [[] for _ in targets]
        for step in range(LOG_METRIC_CALLS):
            for index in [(step + shift) % len(targets) for shift in range(len(targets))]:
                start = time.perf_counter()
                clients[index].log_metric(runs[index], "loss", 1.0 / (step + 1), step=step)
                durations[index].append(time.perf_counter() - start)
        for target, client, run_id in zip(targets, clients, runs, strict=True):
            if target.proxied:
                calls = max(LOG_METRIC_CALLS // 3, 1)
                with _cpu_split("log_metric", calls):
                    for step in range(calls):
                        client.log_metric(run_id, "cpu", 1.0, step=step)
    results = []
    for offset, measured in zip(offsets, durations, strict=True):
        result = {
            "p50_ms": statistics.median(measured) * 1000,
            "p95_ms": statistics.quantiles(measured, n=20)[18] * 1000,
            "req_per_s": len(measured) / sum(measured),
        }
        _print_where_time_goes("log_metric", offset, "/api/2.0/mlflow/runs/log-metric", result["p50_ms"])
        results.append(result)
    return results


def _batch_client(env: dict[str, str], run_id: str, barrier: Any, results: Any) -> None:
    import gc

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    # A training job starts with a heap of its own. A forked client inherits the bench's, which the garbage
    # collector would otherwise walk (and copy page by page) at every full collection.
    gc.freeze()

    with patched_environ(env):
        client = MlflowClient()
        now = int(time.time() * 1000)
        batches = [
            [Metric(f"m{i % 10}", float(i), now, batch * 1000 + i) for i in range(1000)]
            for batch in range(BATCHES_PER_CLIENT + 1)
        ]
        client.log_batch(run_id, metrics=batches[0])  # warm: connection, TLS session, the server's caches
        barrier.wait()
        started, cpu = time.perf_counter(), time.process_time()
        for metrics in batches[1:]:
            client.log_batch(run_id, metrics=metrics)
        results.put((time.perf_counter() - started, time.process_time() - cpu))


def log_batch_throughput(target: Target, clients: int) -> dict:
    """Metrics per second of `clients` processes (training jobs), each logging 1000-metric batches to its run.

    Processes, not threads: one Python process serialising the batches would measure its own GIL."""
    import multiprocessing

    log_offset = PROXY_ACCESS_LOG.stat().st_size if target.proxied and PROXY_ACCESS_LOG.exists() else None
    with patched_environ(target.env):
        run_ids = [_new_run("bench-batch") for _ in range(clients)]
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(clients + 1), context.Queue()
    processes = [
        context.Process(target=_batch_client, args=(target.env, run_id, barrier, results))
        for run_id in run_ids
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=300)
        started = time.perf_counter()
        what = f"log_batch(1000) with {clients} client(s)"
        with _cpu_split(what, clients * BATCHES_PER_CLIENT, target.proxied) as spent:
            spent["clients"] = sum(results.get(timeout=600)[1] for _ in processes)
            elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.join(timeout=60)
    if any(process.exitcode for process in processes):
        raise RuntimeError(f"a log_batch client failed: exit codes {[p.exitcode for p in processes]}")
    per_batch_ms = elapsed / BATCHES_PER_CLIENT * 1000
    _print_where_time_goes(
        f"log_batch(1000) with {clients} client(s)",
        log_offset,
        "/api/2.0/mlflow/runs/log-batch",
        per_batch_ms,
    )
    return {"metrics_per_s": clients * BATCHES_PER_CLIENT * 1000 / elapsed}


def _direct_put(target: Target, path: Path, keys: list[str]) -> float:
    """Seconds to PUT ``path`` straight into the target's bucket with boto3's ``upload_file``."""
    key = f"bench/{uuid.uuid4().hex}/{path.name}"
    keys.append(key)
    start = time.perf_counter()
    target.s3_client.upload_file(str(path), target.bucket, key)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def artifact_upload(target: Target, path: Path, rounds: int = UPLOAD_ROUNDS) -> dict:
    """MiB/s of ``path`` logged as an artifact through the server and, when the bench reaches the target's
    bucket, PUT straight into it beside: the median of ``rounds`` rounds, the two alternating, so that a
    machine that slows down or speeds up meanwhile weighs on both alike; their ratio is the median of the
    rounds' ratios (a round's two uploads share its moment's load, where the two medians may come from
    different rounds).

    Each way first takes a few uploads of ``WARM_UPLOAD_MIB`` (more than one part): a worker's first upload
    loads boto3's models and builds its S3 client, a one-off of a second or so that is not throughput.
    What the bench stored is deleted afterwards."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    size_mib = path.stat().st_size / 2**20
    warm = path.with_name("warm.bin")
    warm.write_bytes(os.urandom(WARM_UPLOAD_MIB * 2**20))
    through_server: list[float] = []
    direct: list[float] = []
    keys: list[str] = []
    try:
        with patched_environ(target.env):
            client = MlflowClient()
            run = client.get_run(_new_run("bench-artifact"))
            try:
                for worker in range(2 * int(WORKERS)):
                    client.log_artifact(run.info.run_id, str(warm), f"warm-{worker}")
                if target.s3_client is not None:
                    _direct_put(target, warm, keys)
                for round_ in range(rounds):
                    last = target.proxied and round_ == rounds - 1  # the CPU split of the last round
                    with _cpu_split(f"{size_mib:.0f} MiB upload through the server", 1, last):
                        start = time.perf_counter()
                        client.log_artifact(run.info.run_id, str(path), f"round-{round_}")
                        through_server.append(size_mib / (time.perf_counter() - start))
                    if target.s3_client is not None:
                        with _cpu_split(f"{size_mib:.0f} MiB direct S3 PUT", 1, last):
                            direct.append(size_mib / _direct_put(target, path, keys))
            finally:
                get_artifact_repository(run.info.artifact_uri).delete_artifacts()
                for key in keys:
                    target.s3_client.delete_object(Bucket=target.bucket, Key=key)  # type: ignore[attr-defined]
    finally:
        warm.unlink(missing_ok=True)
    rounds_text = ", ".join(f"{s:.0f}" for s in through_server)
    result = {"server_mib_per_s": statistics.median(through_server)}
    if direct:
        # A round's two uploads ran back to back, under the same load: their ratio is the round's measure.
        ratios = [s / d for s, d in zip(through_server, direct, strict=True)]
        rounds_text += "; direct S3 PUT " + ", ".join(f"{d:.0f}" for d in direct)
        rounds_text += "; ratio " + ", ".join(f"{r:.2f}" for r in ratios)
        result["direct_s3_mib_per_s"] = statistics.median(direct)
        result["ratio"] = statistics.median(ratios)
    print(f"   {size_mib:.0f} MiB upload MiB/s by round: through the server {rounds_text}", flush=True)
    return result


def client_body_ms(rounds: int = CLIENT_BODY_ROUNDS) -> dict:
    """CPU of the client's log_batch(1000) body, in this process, side by side: MLflow's RestStore (entities
    to protobuf, ``message_to_json``) and the platform's client store (mlflow_ext.rest_store), the same
    batch, alternating; the median of ``rounds`` each, in ms."""
    from mlflow.entities import Metric
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json

    from mlflow_ext.rest_store import log_batch_body

    now = int(time.time() * 1000)
    metrics = [Metric(f"m{i % 10}", float(i) + 0.5, now, i) for i in range(1000)]
    run_id = uuid.uuid4().hex

    def mlflow_body() -> str:
        protos = [metric.to_proto() for metric in metrics]
        return message_to_json(LogBatch(metrics=protos, params=[], tags=[], run_id=run_id))

    def platform_body() -> str:
        body = log_batch_body(run_id, metrics, [], [])
        assert body is not None, "the bench batch left the client's fast path"
        return body

    times: dict[str, list[float]] = {"mlflow": [], "platform": []}
    for _ in range(rounds):
        for name, build in (("mlflow", mlflow_body), ("platform", platform_body)):
            started = time.perf_counter()
            build()
            times[name].append((time.perf_counter() - started) * 1000)
    result = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"   log_batch(1000) client body: MLflow's message_to_json {result['mlflow']:.2f} ms, "
        f"platform client {result['platform']:.2f} ms",
        flush=True,
    )
    return result


def _row(measure: str, platform: float, baseline: float, better: str, ratio: float | None = None) -> dict:
    if ratio is None:
        ratio = baseline / platform if better == "lower" else platform / baseline
    return {"measure": measure, "platform": platform, "baseline": baseline, "ratio": ratio, "better": better}


@contextlib.contextmanager
def _purged_afterwards(backend: dict[str, str] | None, since_ms: int) -> Iterator[None]:
    assert backend is not None
    try:
        yield
    finally:
        print(f"   purged {purge_bench_experiments(backend, since_ms)} bench experiments", flush=True)


def run(results_dir: Path) -> list[dict]:
    """Rows of (measure, platform, baseline, ratio) for the report."""
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    blob = Path(tempfile.mkdtemp(prefix="bench-blob-")) / "model.bin"
    with open(blob, "wb") as handle:
        for _ in range(ARTIFACT_MIB):
            handle.write(os.urandom(2**20))
    body = client_body_ms()
    rows: list[dict] = [
        _row(
            "log_batch(1000) client CPU to build the body (ms), platform client vs MLflow's message_to_json",
            body["platform"],
            body["mlflow"],
            "lower",
        )
    ]
    started_ms = int(time.time() * 1000)
    try:
        with platform_target() as platform, _purged_afterwards(platform.backend, started_ms):
            note = platform.label
            assert platform.backend is not None
            with careful_vanilla_server(platform.backend) as careful:
                p, c = log_metric_latencies([platform, careful])
                print(
                    f"   log_metric p50/p95 ms: platform {p['p50_ms']:.2f}/{p['p95_ms']:.2f}, "
                    f"careful vanilla {c['p50_ms']:.2f}/{c['p95_ms']:.2f}",
                    flush=True,
                )
                rows.append(
                    _row(
                        "log_metric p50 latency (ms), 1 client, vs careful vanilla (target <= 0.5x)",
                        p["p50_ms"],
                        c["p50_ms"],
                        "lower",
                    )
                )
                rows.append(
                    _row(
                        "log_metric p95 latency (ms), 1 client, vs careful vanilla",
                        p["p95_ms"],
                        c["p95_ms"],
                        "lower",
                    )
                )
                # Raw COPY before and after the servers' runs, their mean the baseline: a machine that
                # slows down or speeds up meanwhile weighs on both sides alike.
                copies = [raw_copy_metrics_per_s(platform.backend)]
                batch = {
                    clients: log_batch_throughput(platform, clients)["metrics_per_s"] for clients in (1, 4)
                }
                careful_batch = log_batch_throughput(careful, 4)["metrics_per_s"]
            copies.append(raw_copy_metrics_per_s(platform.backend))
            copy = statistics.mean(copies)
            print(
                f"   log_batch(1000) metrics/s, 4 clients: platform {batch[4]:,.0f}, careful vanilla "
                f"{careful_batch:,.0f}, raw COPY {copy:,.0f} (before {copies[0]:,.0f}, "
                f"after {copies[1]:,.0f})",
                flush=True,
            )
            rows.append(
                _row(
                    "log_batch(1000) metrics/s, 4 clients, vs raw COPY (target >= 0.5x)",
                    batch[4],
                    copy,
                    "higher",
                )
            )
            rows.append(
                _row(
                    "log_batch(1000) metrics/s, 4 clients, vs careful vanilla",
                    batch[4],
                    careful_batch,
                    "higher",
                )
            )
            upload = artifact_upload(platform, blob)
            if "direct_s3_mib_per_s" in upload:
                rows.append(
                    _row(
                        f"artifact upload {ARTIFACT_MIB} MiB (MiB/s, medians; ratio: the median round's) vs "
                        "direct S3 PUT (target >= 0.8x)",
                        upload["server_mib_per_s"],
                        upload["direct_s3_mib_per_s"],
                        "higher",
                        ratio=upload["ratio"],
                    )
                )
            with vanilla_server() as vanilla:
                (v,) = log_metric_latencies([vanilla])
                rows.append(
                    _row(
                        "log_metric p50 latency (ms), 1 client, vs vanilla defaults",
                        p["p50_ms"],
                        v["p50_ms"],
                        "lower",
                    )
                )
                for clients in (1, 4):
                    v_b = log_batch_throughput(vanilla, clients)["metrics_per_s"]
                    rows.append(
                        _row(
                            f"log_batch(1000) metrics/s, {clients} client(s), vs vanilla defaults",
                            batch[clients],
                            v_b,
                            "higher",
                        )
                    )
                vanilla_upload = artifact_upload(vanilla, blob)
                rows.append(
                    _row(
                        f"artifact upload {ARTIFACT_MIB} MiB (MiB/s) vs vanilla defaults (local disk)",
                        upload["server_mib_per_s"],
                        vanilla_upload["server_mib_per_s"],
                        "higher",
                    )
                )
    finally:
        blob.unlink(missing_ok=True)
        blob.parent.rmdir()
    for row in rows:
        row["section"] = "server"
        row["note"] = note
    return rows
