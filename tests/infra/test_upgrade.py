"""`make upgrade` (upgrade.yml) for real on the converged host.

First without a fresh backup: it must stop before touching anything. Then in full (backup, migration,
one-at-a-time restart) while a client keeps logging metrics and searching through https://localhost: every
entity populated before must be intact, every acknowledged write kept, the server restarted, and the client's
failed calls and the time they spanned are printed. Once in place on the current lock, once from the
previous MLflow minor: the server provisioned with requirements/server-3.16.lock on databases of its own
(the host's databases are at the current schema, which the older MLflow refuses), populated, then upgraded
to the current lock; whatever happens, the host is converged back onto its own databases and the current lock.

Like every converge, run it under the host's lock: `flock /tmp/mlflow-platform-infra.lock ...`.
"""

from __future__ import annotations

import json
import secrets as random_secrets
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.infra.conftest import TLS_CERT, TRACKING_URI, _vars_file
from tests.support.ansible import REPO, run_playbook
from tests.support.environ import patched_environ

pytestmark = pytest.mark.usefixtures("converged")

PLAYBOOK_TIMEOUT = 600
SERVER_PYTHON = "/opt/mlflow/venv/bin/python"
PREVIOUS_LOCK = REPO / "requirements" / "server-3.16.lock"
# The previous minor's own databases (dropped at the end), next to the host's.
PREVIOUS_DATABASES = {
    "mlflow_server_db_name": "mlflow_upgrade_from",
    "mlflow_server_auth_db_name": "mlflow_upgrade_from_auth",
}
HOST_DATABASES = ["mlflow", "mlflow_auth"]
# Created by a tracking migration of MLflow 3.17 (dc11669786a5): present beforehand, it fails the migration.
BLOCKING_TABLE = "scheduler_leases"


def _populate(client) -> dict:
    """An experiment, runs with params, metric histories, tags and an artifact, a registered model with two
    versions, an alias and tags: what the upgrade must keep."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = str(int(time.time()))
    experiment_id = client.create_experiment(f"upgrade-{stamp}", tags={"team": "upgrade"})
    run_ids = []
    for index in range(3):
        run = client.create_run(experiment_id, tags={"index": str(index)})
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step) for step in range(20)],
            params=[Param("lr", str(0.1 * (index + 1)))],
            tags=[RunTag("stage", "train")],
        )
        client.log_text(run.info.run_id, f"artifact of run {index}\n", "notes/readme.txt")
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)
    name = f"upgrade-model-{stamp}"
    client.create_registered_model(name, tags={"owner": "upgrade"})
    for run_id in run_ids[:2]:
        client.create_model_version(name, f"runs:/{run_id}/notes", run_id=run_id, tags={"checked": "yes"})
    client.set_registered_model_alias(name, "champion", "2")
    return {"experiment_id": experiment_id, "run_ids": run_ids, "model": name}


def _snapshot(client, population: dict) -> dict:
    """Everything populated, read back as plain values."""
    runs = {}
    for run_id in population["run_ids"]:
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "loss")
        with tempfile.TemporaryDirectory() as scratch:
            text = Path(client.download_artifacts(run_id, "notes/readme.txt", scratch)).read_text()
        runs[run_id] = {
            "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "status": run.info.status,
            "loss": sorted((m.step, m.value, m.timestamp) for m in history),
            "artifact": text,
        }
    model = client.get_registered_model(population["model"])
    versions = client.search_model_versions(f"name = '{population['model']}'")
    experiment = client.get_experiment(population["experiment_id"])
    return {
        "experiment": (experiment.name, experiment.tags.get("team")),
        "runs": runs,
        "model_tags": model.tags,
        "aliases": model.aliases,
        "versions": sorted((v.version, v.run_id, v.source, v.tags.get("checked")) for v in versions),
    }


class Prober(threading.Thread):
    """A client that keeps reading and writing through the proxy; records every failed call and when."""

    def __init__(self, client, run_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.run_id = client, run_id
        self.stop = threading.Event()
        self.calls, self.failures, self.written = 0, [], []

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.client.log_metric(self.run_id, "during_upgrade", float(step), step=step)
                self.written.append(step)
                self.client.search_experiments(max_results=5)
            except Exception as exc:
                self.failures.append((started, time.monotonic(), f"{type(exc).__name__}: {str(exc)[:200]}"))
            self.calls += 1
            step += 1
            self.stop.wait(0.2)

    def report(self) -> str:
        if not self.failures:
            return f"client: {self.calls} call rounds, none failed"
        span = self.failures[-1][1] - self.failures[0][0]
        return (
            f"client: {self.calls} call rounds, {len(self.failures)} failed over {span:.1f} s; "
            f"first: {self.failures[0][2]}"
        )


def _bridge_vars_file(converged, directory: Path) -> Path:
    """The GoCD bridge settings of the converge (a fake GoCD); none when the host was converged without."""
    setup = converged.bridge
    return _vars_file(directory, setup.extra_vars() if setup.gocd_token else {})


def _server_main_pid() -> str:
    result = subprocess.run(
        ["systemctl", "show", "--property=MainPID", "mlflow-server.service"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return result.stdout.strip().removeprefix("MainPID=")


def test_no_upgrade_without_a_fresh_backup(converged, tmp_path):
    pid = _server_main_pid()
    bridge = _bridge_vars_file(converged, tmp_path)
    refused = run_playbook("upgrade-no-backup", "upgrade.yml", "-e", f"@{bridge}", "--skip-tags", "backup",
                           timeout=PLAYBOOK_TIMEOUT)  # fmt: skip
    assert refused.returncode != 0, refused.summary()
    assert "No upgrade without a fresh backup" in refused.output
    assert "Report the schema revisions" not in refused.output
    assert _server_main_pid() == pid, "the server restarted although the upgrade was refused"


def test_upgrade_keeps_every_entity_and_the_client_working(converged, admin_env, tmp_path):
    from mlflow import MlflowClient

    pid = _server_main_pid()
    bridge = _bridge_vars_file(converged, tmp_path)
    with patched_environ(admin_env):
        client = MlflowClient()
        population = _populate(client)
        before = _snapshot(client, population)
        prober = Prober(client, population["run_ids"][0])
        prober.start()
        try:
            upgrade = run_playbook("upgrade", "upgrade.yml", "-e", f"@{bridge}", timeout=PLAYBOOK_TIMEOUT)
            time.sleep(2)
        finally:
            prober.stop.set()
            prober.join(timeout=60)
        print(f"\n{upgrade.summary()}\n{prober.report()}")
        assert upgrade.returncode == 0, f"{upgrade.summary()}\n{upgrade.output[-3000:]}"
        assert "tracking: " in upgrade.output and "auth_ext: " in upgrade.output
        assert _server_main_pid() != pid, "the upgrade did not restart the server"
        assert _snapshot(client, population) == before
        logged = client.get_metric_history(population["run_ids"][0], "during_upgrade")
        assert {int(m.step) for m in logged} >= set(prober.written), "an acknowledged write was lost"
    assert not prober.failures, prober.report()


def _vars_in(directory: Path, values: dict) -> Path:
    directory.mkdir()
    return _vars_file(directory, values)


def _pinned(lock: Path, name: str) -> str:
    line = next(line for line in lock.read_text().splitlines() if line.startswith(f"{name}=="))
    return line.split("==", 1)[1].split()[0]


def _server_mlflow_version() -> str:
    result = subprocess.run(
        [SERVER_PYTHON, "-c", "from mlflow.version import VERSION; print(VERSION)"],
        capture_output=True, text=True, check=True, timeout=120, env={"MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    return result.stdout.strip()


def _psql(sql: str) -> str:
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-d", "postgres", "-Atc", sql]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def _drop_previous_databases() -> None:
    for name in PREVIOUS_DATABASES.values():
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _in_previous_tracking_database(sql: str) -> None:
    database = PREVIOUS_DATABASES["mlflow_server_db_name"]
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        database,
        "-c",
        sql,
    ]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)


def _served_version(admin_env: dict) -> str:
    """The MLflow version the running server answers (through the proxy)."""
    admin = (admin_env["MLFLOW_TRACKING_USERNAME"], admin_env["MLFLOW_TRACKING_PASSWORD"])
    answer = requests.get(f"{TRACKING_URI}/version", auth=admin, verify=TLS_CERT, timeout=60)
    assert answer.ok, f"/version: {answer.status_code}"
    return answer.text.strip()


def _user_and_token(admin_env: dict) -> dict:
    """A user and a token of theirs: rows of MLflow's auth tables and of mlflow-ext-auth's."""
    admin = (admin_env["MLFLOW_TRACKING_USERNAME"], admin_env["MLFLOW_TRACKING_PASSWORD"])
    username = f"upgrade-user-{random_secrets.token_hex(3)}"
    password = random_secrets.token_urlsafe(18)

    def call(path: str, body: dict) -> dict:
        answer = requests.post(TRACKING_URI + path, json=body, auth=admin, verify=TLS_CERT, timeout=60)
        assert answer.ok, f"{path}: {answer.status_code} {answer.text[:300]}"
        return answer.json()

    call("/api/2.0/mlflow/users/create", {"username": username, "password": password})
    token = call("/api/2.0/mlflow-ext/tokens/create", {"username": username, "name": "upgrade"})["token"]
    return {"username": username, "password": password, "token": token}


def _reads(population: dict, authorization: dict) -> tuple[int, int]:
    """What a user's experiment read and run read answer (the run's goes through the run resolver)."""
    experiment = requests.get(
        f"{TRACKING_URI}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": population["experiment_id"]},
        verify=TLS_CERT, timeout=60, **authorization,
    )  # fmt: skip
    run = requests.get(
        f"{TRACKING_URI}/api/2.0/mlflow/runs/get",
        params={"run_id": population["run_ids"][0]},
        verify=TLS_CERT, timeout=60, **authorization,
    )  # fmt: skip
    return experiment.status_code, run.status_code


def test_upgrade_from_the_previous_mlflow_minor(converged, admin_env, tmp_path):
    """Provision MLflow 3.16 (server-3.16.lock), populate, `upgrade.yml` to the current lock under load."""
    from mlflow import MlflowClient

    previous, current = (
        _pinned(PREVIOUS_LOCK, "mlflow"),
        _pinned(REPO / "requirements" / "server.lock", "mlflow"),
    )
    bridge = _bridge_vars_file(converged, tmp_path)
    bridge_vars = json.loads(bridge.read_text(encoding="utf-8"))
    upgrade_vars = _vars_in(tmp_path / "upgrade", {**bridge_vars, **PREVIOUS_DATABASES})
    provision_vars = _vars_in(tmp_path / "provision", {
        **bridge_vars,
        **PREVIOUS_DATABASES,
        "mlflow_server_requirements_lock": str(PREVIOUS_LOCK),
        "postgresql_databases": HOST_DATABASES + list(PREVIOUS_DATABASES.values()),
    })  # fmt: skip
    _drop_previous_databases()
    try:
        # The previous minor's databases (postgresql.yml: created, and let in by pg_hba), then its server.
        for label, playbook in (
            ("previous-databases", "postgresql.yml"),
            ("previous-server", "mlflow_server.yml"),
        ):
            provisioned = run_playbook(label, playbook, "-e", f"@{provision_vars}", timeout=PLAYBOOK_TIMEOUT)
            assert provisioned.returncode == 0, f"{provisioned.summary()}\n{provisioned.output[-3000:]}"
        assert _server_mlflow_version() == previous
        pid = _server_main_pid()
        with patched_environ(admin_env):
            client = MlflowClient()
            population = _populate(client)
            account = _user_and_token(admin_env)
            for run_id in population["run_ids"][:1]:
                client.set_tag(run_id, "written_by", previous)
            before = _snapshot(client, population)
            bearer = {"headers": {"Authorization": f"Bearer {account['token']}"}}
            basic = {"auth": (account["username"], account["password"])}
            # NO_PERMISSIONS by default: nothing to read before a grant, then the experiment and its runs.
            assert _reads(population, bearer) == (403, 403)
            granted = requests.post(
                f"{TRACKING_URI}/api/3.0/mlflow/users/permissions/grant",
                json={"username": account["username"], "resource_type": "experiment",
                      "resource_id": population["experiment_id"], "permission": "READ"},
                auth=(admin_env["MLFLOW_TRACKING_USERNAME"], admin_env["MLFLOW_TRACKING_PASSWORD"]),
                verify=TLS_CERT, timeout=60,
            )  # fmt: skip
            assert granted.ok, granted.text[:300]
            assert _reads(population, bearer) == _reads(population, basic) == (200, 200)
            assert _served_version(admin_env) == previous

            # A migration that fails (a table the new version's migration creates is already there) stops the
            # upgrade before any restart: the old version keeps serving, and the message says how to go back.
            _in_previous_tracking_database(f"CREATE TABLE {BLOCKING_TABLE} (lease_key text)")
            failed = run_playbook("upgrade-failing-migration", "upgrade.yml", "-e", f"@{upgrade_vars}",
                                  timeout=PLAYBOOK_TIMEOUT)  # fmt: skip
            print(f"\nfailing migration: {failed.summary()}")
            assert failed.returncode != 0, failed.summary()
            assert "The schema migration failed" in failed.output, failed.output[-3000:]
            assert "No server was restarted" in failed.output and "make restore" in failed.output
            assert _server_main_pid() == pid, "a failed migration restarted the server"
            assert _served_version(admin_env) == previous
            assert _snapshot(client, population) == before
            _in_previous_tracking_database(f"DROP TABLE {BLOCKING_TABLE}")

            prober = Prober(client, population["run_ids"][0])
            prober.start()
            started = time.monotonic()
            try:
                upgrade = run_playbook("upgrade-from-previous", "upgrade.yml", "-e", f"@{upgrade_vars}",
                                       timeout=PLAYBOOK_TIMEOUT)  # fmt: skip
                time.sleep(2)
            finally:
                prober.stop.set()
                prober.join(timeout=60)
            took = time.monotonic() - started
            print(f"\nMLflow {previous} -> {current}: {upgrade.summary()} ({took:.0f} s)\n{prober.report()}")
            for began, ended, message in prober.failures:
                print(f"  failed call at +{began - started:.1f} s .. +{ended - started:.1f} s: {message}")
            assert upgrade.returncode == 0, f"{upgrade.summary()}\n{upgrade.output[-3000:]}"
            assert "tracking: " in upgrade.output and "auth_ext: " in upgrade.output
            assert _server_mlflow_version() == current
            assert _server_main_pid() != pid, "the upgrade did not restart the server"
            assert _snapshot(client, population) == before
            assert _reads(population, bearer) == _reads(population, basic) == (200, 200)
            logged = client.get_metric_history(population["run_ids"][0], "during_upgrade")
            assert {int(m.step) for m in logged} >= set(prober.written), "an acknowledged write was lost"
        assert not prober.failures, prober.report()
    finally:
        # Back onto the host's own databases and the current lock, whatever happened above.
        back = run_playbook("converge-back", "site.yml", "-e", f"@{bridge}", timeout=1800)
        if back.returncode == 0:
            _drop_previous_databases()
        assert back.returncode == 0, f"{back.summary()}\n{back.output[-3000:]}"
        assert _server_mlflow_version() == current
