"""`make upgrade` (upgrade.yml) for real on the converged host, with the current lock.

First without a fresh backup: it must stop before touching anything. Then in full (backup, migration,
one-at-a-time restart) while a client keeps logging metrics and searching through https://localhost: every
entity populated before must be intact, every acknowledged write kept, the server restarted, and the client's
failed calls and the time they spanned are printed.

Like every converge, run it under the host's lock: `flock /tmp/mlflow-platform-infra.lock ...`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.infra.conftest import _vars_file
from tests.support.ansible import run_playbook
from tests.support.environ import patched_environ

pytestmark = pytest.mark.usefixtures("converged")

PLAYBOOK_TIMEOUT = 600


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
        artifact = client.download_artifacts(run_id, "notes/readme.txt")
        runs[run_id] = {
            "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "status": run.info.status,
            "loss": sorted((m.step, m.value, m.timestamp) for m in history),
            "artifact": Path(artifact).read_text(),
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
