"""The cost of auth: tracking calls with an access token against the same platform without auth.

Two platforms on loopback, identical but for MLFLOW_EXT_APP_NAME (mlflow-ext-auth vs none). The token
belongs to a non-admin service account that created its own experiment, so every call runs the full
path: token lookup (cached), generation check, MLflow's permission validators. Calls alternate between
the two servers in small rounds so drift on a noisy box hits both alike. Target: token latency within
1.2x of no-auth (ratio >= 0.83 in the table, where >1 means the platform is faster).
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.environ import patched_environ
from tests.support.services import running_platform

CALLS = int(os.environ.get("BENCH_AUTH_CALLS", "400"))
ROUND = 20
NOTE = (
    "auth: a non-admin service account's token (and an admin's, which skips MLflow's permission "
    "validators) on mlflow-ext-auth vs the same platform with MLFLOW_EXT_APP_NAME=none; "
    "target ratio >= 0.83 (token within 1.2x of no-auth)"
)


def _token_env(platform) -> dict[str, str]:
    admin = (platform.admin_username, platform.admin_password)
    url = platform.tracking_uri
    user = f"bench-{secrets.token_hex(3)}"
    requests.post(
        f"{url}/api/2.0/mlflow-ext/service-accounts/create", json={"username": user}, auth=admin, timeout=30
    ).raise_for_status()
    requests.post(
        f"{url}/api/2.0/mlflow-ext/rights/grant",
        json={"username": user, "right": "create_experiment"},
        auth=admin,
        timeout=30,
    ).raise_for_status()
    answer = requests.post(
        f"{url}/api/2.0/mlflow-ext/tokens/create",
        json={"username": user, "name": "bench"},
        auth=admin,
        timeout=30,
    )
    answer.raise_for_status()
    return {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_TOKEN": answer.json()["token"]}


def _prepare(env: dict[str, str]) -> Callable[[str, int], float]:
    """A timed call per measure, on one client and run (keep-alive, as a training loop has)."""
    from mlflow import MlflowClient

    with patched_environ(env):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"bench-auth-{uuid.uuid4().hex[:8]}")
        run_id = client.create_run(experiment_id).info.run_id

    def call(measure: str, step: int) -> float:
        with patched_environ(env):
            start = time.perf_counter()
            if measure == "log_metric":
                client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
            else:
                client.get_run(run_id)
            return time.perf_counter() - start

    return call


def run(results_dir: Path) -> list[dict]:
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    rows: list[dict] = []
    with running_platform(auth=True) as secured, running_platform(auth=False) as open_platform:
        admin_token = requests.post(
            f"{secured.tracking_uri}/api/2.0/mlflow-ext/tokens/create",
            json={"name": "bench-admin"},
            auth=(secured.admin_username, secured.admin_password),
            timeout=30,
        ).json()["token"]
        calls = {
            "a token": _prepare(_token_env(secured)),
            # Admins skip MLflow's permission validators: this isolates the cost of authentication.
            "an admin token": _prepare(
                {"MLFLOW_TRACKING_URI": secured.tracking_uri, "MLFLOW_TRACKING_TOKEN": admin_token}
            ),
            "none": _prepare({"MLFLOW_TRACKING_URI": open_platform.tracking_uri}),
        }
        for measure in ("log_metric", "get_run"):
            timings: dict[str, list[float]] = {name: [] for name in calls}
            for step in range(10):  # warm connections and caches
                for call in calls.values():
                    call(measure, step)
            for start in range(0, CALLS, ROUND):
                for name, call in calls.items():
                    for step in range(start, start + ROUND):
                        timings[name].append(call(measure, step))
            for who, label, pick in (
                ("a token", "p50", statistics.median),
                ("a token", "p95", lambda d: statistics.quantiles(d, n=20)[18]),
                ("an admin token", "p50", statistics.median),
            ):
                with_token, without = pick(timings[who]) * 1000, pick(timings["none"]) * 1000
                rows.append(
                    {
                        "section": "auth",
                        "measure": f"{measure} {label} latency with {who} vs no auth (ms)",
                        "platform": with_token,
                        "baseline": without,
                        "ratio": without / with_token,
                        "better": "lower",
                        "note": NOTE,
                    }
                )
    return rows
