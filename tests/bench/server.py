"""The platform's server against a vanilla `mlflow server`, side by side, on this machine.

Target: the provisioned platform through its TLS proxy (`make up`), with the admin credentials from the
secrets directory. If it is not provisioned, the bench starts the platform's processes on loopback
(without the proxy) and says so in the results. Baseline: `mlflow server` with its defaults.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.environ import patched_environ
from tests.support.services import free_ports, http_ok, running_platform, s3_client, stop_process, wait_for

SECRETS_DIR = Path(os.environ.get("BENCH_SECRETS_DIR", "/etc/mlflow-platform/secrets"))
PLATFORM_URL = os.environ.get("BENCH_PLATFORM_URL", "https://localhost")
CA_FILE = os.environ.get("BENCH_CA_FILE", "/etc/nginx/tls/mlflow-platform.crt")
LOG_METRIC_CALLS = int(os.environ.get("BENCH_LOG_METRIC_CALLS", "300"))
BATCHES_PER_CLIENT = int(os.environ.get("BENCH_BATCHES_PER_CLIENT", "10"))
ARTIFACT_MIB = int(os.environ.get("BENCH_ARTIFACT_MIB", "256"))


@dataclass
class Target:
    label: str
    env: dict[str, str]
    s3_client: object | None = None
    bucket: str | None = None


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
    )


def vanilla_python() -> str:
    """A venv with nothing but `pip install mlflow==<pinned>`: MLflow as a team would first install it.

    The dev venv carries the platform's extras (uvicorn[standard], psycopg2, ...), which would flatter
    the baseline; the bench keeps this venv under .venv/ and builds it once.
    """
    import mlflow

    venv = Path(__file__).resolve().parents[2] / ".venv" / "bench-vanilla"
    stamp = venv / f".mlflow-{mlflow.__version__}"
    if not stamp.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"mlflow=={mlflow.__version__}"],
            check=True,
        )
        stamp.touch()
    return str(venv / "bin" / "python")


@contextlib.contextmanager
def vanilla_server() -> Iterator[Target]:
    """`mlflow server` as pip installs it, with its defaults (SQLite and ./mlartifacts in its working dir)."""
    python = vanilla_python()
    workdir = tempfile.mkdtemp(prefix="bench-vanilla-")
    (port,) = free_ports(1)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = open(Path(workdir) / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [python, "-m", "mlflow", "server", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "vanilla mlflow server", 180, process)
        yield Target("vanilla mlflow server (defaults)", {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    finally:
        stop_process(process)
        log.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


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
        )


def _new_run(prefix: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"{prefix}-{uuid.uuid4().hex[:8]}")
    return client.create_run(experiment_id).info.run_id


def log_metric_latency(target: Target) -> dict:
    from mlflow import MlflowClient

    with patched_environ(target.env):
        client = MlflowClient()
        run_id = _new_run("bench-latency")
        for step in range(10):  # warm the keep-alive connection and the server's caches
            client.log_metric(run_id, "warmup", 0.0, step=step)
        durations = []
        for step in range(LOG_METRIC_CALLS):
            start = time.perf_counter()
            client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
            durations.append(time.perf_counter() - start)
    return {
        "p50_ms": statistics.median(durations) * 1000,
        "p95_ms": statistics.quantiles(durations, n=20)[18] * 1000,
        "req_per_s": len(durations) / sum(durations),
    }


def log_batch_throughput(target: Target, clients: int) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    with patched_environ(target.env):
        run_ids = [_new_run("bench-batch") for _ in range(clients)]
        errors: list[BaseException] = []

        def worker(run_id: str) -> None:
            try:
                client = MlflowClient()
                now = int(time.time() * 1000)
                for batch in range(BATCHES_PER_CLIENT):
                    metrics = [Metric(f"m{i % 10}", float(i), now, batch * 1000 + i) for i in range(1000)]
                    client.log_batch(run_id, metrics=metrics)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(run_id,)) for run_id in run_ids]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"metrics_per_s": clients * BATCHES_PER_CLIENT * 1000 / elapsed}


def artifact_upload(target: Target, path: Path) -> dict:
    from mlflow import MlflowClient

    size_mib = path.stat().st_size / 2**20
    with patched_environ(target.env):
        run_id = _new_run("bench-artifact")
        start = time.perf_counter()
        MlflowClient().log_artifact(run_id, str(path))
        through_server = time.perf_counter() - start
    result = {"server_mib_per_s": size_mib / through_server}
    if target.s3_client is not None:
        start = time.perf_counter()
        target.s3_client.upload_file(str(path), target.bucket, f"bench/{uuid.uuid4().hex}/{path.name}")
        result["direct_s3_mib_per_s"] = size_mib / (time.perf_counter() - start)
    return result


def run(results_dir: Path) -> list[dict]:
    """Rows of (measure, platform, vanilla, ratio) for the report."""
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    blob = Path(tempfile.mkdtemp(prefix="bench-blob-")) / "model.bin"
    with open(blob, "wb") as handle:
        for _ in range(ARTIFACT_MIB):
            handle.write(os.urandom(2**20))
    rows: list[dict] = []
    try:
        with platform_target() as platform, vanilla_server() as vanilla:
            note = platform.label
            p, v = log_metric_latency(platform), log_metric_latency(vanilla)
            rows.append(
                {
                    "measure": "log_metric p50 latency, 1 client (ms)",
                    "platform": p["p50_ms"],
                    "baseline": v["p50_ms"],
                    "ratio": v["p50_ms"] / p["p50_ms"],
                    "better": "lower",
                }
            )
            rows.append(
                {
                    "measure": "log_metric p95 latency, 1 client (ms)",
                    "platform": p["p95_ms"],
                    "baseline": v["p95_ms"],
                    "ratio": v["p95_ms"] / p["p95_ms"],
                    "better": "lower",
                }
            )
            for clients in (1, 4):
                p_b = log_batch_throughput(platform, clients)["metrics_per_s"]
                v_b = log_batch_throughput(vanilla, clients)["metrics_per_s"]
                rows.append(
                    {
                        "measure": f"log_batch(1000) metrics/s, {clients} client(s)",
                        "platform": p_b,
                        "baseline": v_b,
                        "ratio": p_b / v_b,
                        "better": "higher",
                    }
                )
            upload = artifact_upload(platform, blob)
            if "direct_s3_mib_per_s" in upload:
                rows.append(
                    {
                        "measure": f"artifact upload {ARTIFACT_MIB} MiB (MiB/s) vs direct S3 PUT",
                        "platform": upload["server_mib_per_s"],
                        "baseline": upload["direct_s3_mib_per_s"],
                        "ratio": upload["server_mib_per_s"] / upload["direct_s3_mib_per_s"],
                        "better": "higher",
                    }
                )
            vanilla_upload = artifact_upload(vanilla, blob)
            rows.append(
                {
                    "measure": f"artifact upload {ARTIFACT_MIB} MiB (MiB/s) vs vanilla (local disk)",
                    "platform": upload["server_mib_per_s"],
                    "baseline": vanilla_upload["server_mib_per_s"],
                    "ratio": upload["server_mib_per_s"] / vanilla_upload["server_mib_per_s"],
                    "better": "higher",
                }
            )
    finally:
        blob.unlink(missing_ok=True)
        blob.parent.rmdir()
    for row in rows:
        row["section"] = "server"
        row["note"] = note
    return rows
