"""One test per fault, against the provisioned platform (`make chaos`, after `make test-infra`).

Each row drives real clients through https://localhost while the fault happens, records every acknowledged
write, measures recovery with a probe, restores whatever the fault broke, then reads every acknowledged
write back. A row fails on a client call that failed other than with a retried 503/429, on a lost
acknowledged write, on a promotion lost or scheduled twice, or on a recovery slower than 10 s.

Recovery is measured from the end of the fault (the unit back from its restart, the process killed, GoCD
answering again, the disk freed) until the platform serves every probe again, is whole again (the killed
process replaced) and, for promotions, has scheduled every acknowledged one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mlflow_ext.routing import BRIDGE_VARIABLES
from tests.chaos import harness
from tests.chaos.harness import Load, Probe, probing, verify
from tests.support.environ import patched_environ

pytestmark = pytest.mark.chaos

MIB = 1 << 20


def _assert(row: harness.Row) -> None:
    row.completed = True
    assert not row.problems(), row.report()


def test_load_32_clients_for_60_s(platform, table):
    row = table.add("load: 32 clients, 60 s", show_latency=True)
    with Load(row, platform.experiment_id, tracking=32):
        time.sleep(60)
    verify(row)
    _assert(row)


def test_postgresql_restart(platform, table, units):
    row = table.add("PostgreSQL restart")
    probe = Probe(platform.auth, platform.experiment_id, platform.probe_run())
    with Load(row, platform.experiment_id, tracking=4, registry=1), probing(probe):
        time.sleep(3)
        took = units.restart(harness.POSTGRES_UNIT)
        back = time.monotonic()
        row.note(f"systemctl restart {harness.POSTGRES_UNIT} took {took:.1f} s")
        row.set_recovery(probe.wait_recovered(back, timeout=30))
        time.sleep(3)
    verify(row)
    _assert(row)


def _restore_server(units, row: harness.Row, workers: int, orphans_of: set[int]) -> None:
    """Bring the MLflow server back whole: stop the unit, end the killed master's orphaned workers (by the
    ids recorded before the kill), start the unit."""
    if harness.server_shape().whole(workers) and harness.http_ok(harness.SERVER_HEALTH):
        return
    row.note("restored by the suite: systemctl stop, the orphaned workers killed, systemctl start")
    units.run("stop", harness.SERVER_UNIT)
    for pid in sorted(orphans_of & set(harness.server_shape().orphans)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    harness.wait_until(lambda: not harness.server_shape().orphans, 10)
    units.start(harness.SERVER_UNIT)
    whole = harness.wait_until(
        lambda: harness.server_shape().whole(workers) and harness.http_ok(harness.SERVER_HEALTH), 90
    )
    if not whole:
        pytest.fail(f"the MLflow server is not whole after its restore: {harness.server_shape()}")


def _kill_server_process(platform, table, units, fault: str, master: bool) -> None:
    row = table.add(fault)
    shape = harness.server_shape()
    workers = len(shape.workers)
    assert shape.whole(workers) and workers, f"the server is not whole before the fault: {shape}"
    victim = shape.master if master else shape.workers[0]
    probe = Probe(platform.auth, platform.experiment_id, platform.probe_run())
    try:
        # Eight writers keep both workers busy, so the kill catches requests in flight.
        with Load(row, platform.experiment_id, tracking=8, registry=1), probing(probe):
            time.sleep(3)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            whole = harness.wait_until(lambda: harness.server_shape().whole(workers, without=victim), 30)
            whole_after = time.monotonic() - killed if whole else None
            # Only now: the old processes serve on for a second or two after their master died, and a
            # probe asked earlier, having seen no failure yet, would call the server recovered at once.
            served = probe.wait_recovered(killed, timeout=30)
            if not whole:
                now = harness.server_shape()
                row.note(
                    f"not whole 30 s after the kill: uvicorn master {now.master}, workers "
                    f"{list(now.workers)}, orphaned workers {list(now.orphans)}, unit active: "
                    f"{units.is_active(harness.SERVER_UNIT)}"
                )
            row.set_recovery(None if served is None or whole_after is None else max(served, whole_after))
            time.sleep(3)
    finally:
        _restore_server(units, row, workers, set(shape.workers))
    verify(row)
    _assert(row)


def test_kill_9_of_a_server_worker(platform, table, units):
    _kill_server_process(platform, table, units, "kill -9 of a server worker", master=False)


def test_kill_9_of_the_uvicorn_master(platform, table, units):
    _kill_server_process(platform, table, units, "kill -9 of the uvicorn master", master=True)


def test_seaweedfs_restart_during_a_50_mb_upload(platform, table, units):
    row = table.add("SeaweedFS restart, 50 MB upload")
    probe = Probe(platform.auth, platform.experiment_id, platform.probe_run(), artifacts=True)
    load = Load(row, platform.experiment_id, artifacts=2, artifact_size=256 * 1024)
    big_runs: list[tuple[float, float, bool]] = []  # started, ended, acknowledged
    in_flight = threading.Event()

    def big_uploads() -> None:
        client = harness.new_client()
        run_id = client.create_run(platform.experiment_id).info.run_id
        count = 0
        while not load.stop_event.is_set():
            count += 1
            started = time.monotonic()
            in_flight.set()
            ok = load.upload(client, run_id, "big", f"big{count}.bin", 50 * MIB)
            in_flight.clear()
            big_runs.append((started, time.monotonic(), ok))

    uploader = threading.Thread(target=big_uploads, daemon=True)
    try:
        with load, probing(probe):
            uploader.start()
            in_flight.wait(30)
            time.sleep(0.5)
            during = in_flight.is_set()
            took = units.restart(harness.OBJECT_STORE_UNIT)
            back = time.monotonic()
            row.note(f"systemctl restart seaweedfs took {took:.1f} s; a 50 MB upload in flight: {during}")
            row.set_recovery(probe.wait_recovered(back, timeout=30))
            # One more 50 MB upload that starts after the store is back must go through.
            harness.wait_until(lambda: any(s > back for s, _, _ in big_runs), 60, interval=0.5)
            load.stop_event.set()
            uploader.join(90)
    finally:
        if not units.is_active(harness.OBJECT_STORE_UNIT):
            units.start(harness.OBJECT_STORE_UNIT)
    row.note(f"50 MB uploads: {len(big_runs)}, acknowledged: {sum(1 for *_, ok in big_runs if ok)}")
    verify(row)
    _assert(row)


def _bridge_main_pid() -> int:
    pids = harness.bridge_pids()
    assert pids, "no bridge process"
    parents = {p.pid: p.ppid for p in harness.processes() if p.pid in pids}
    return next(pid for pid in pids if parents.get(pid) not in pids)


def test_bridge_killed_mid_delivery(platform, table, units, gocd_target):
    row = table.add("bridge kill -9 mid-delivery")
    client = harness.new_client()
    models = harness.prepare_models(row, platform.experiment_id, gocd_target, 25)
    before, during = models[:20], models[20:]
    gocd = gocd_target.gocd
    gocd.hold_schedules()
    restarted_by_suite = False
    try:
        for model, version in before:
            harness.promote(row, client, gocd_target, model, version)
        held = harness.wait_until(lambda: gocd_target.schedules(), 30)
        assert held, "the bridge sent no trigger within 30 s"
        time.sleep(2)  # the other webhooks reach the outbox
        os.kill(_bridge_main_pid(), signal.SIGKILL)
        killed = time.monotonic()
    finally:
        gocd.release_schedules()
    for model, version in during:  # while the bridge is dead
        harness.promote(row, client, gocd_target, model, version)
    back = harness.wait_until(lambda: harness.http_ok(harness.BRIDGE_HEALTH), 20, interval=0.2)
    if not back:
        row.note("the bridge was not restarted within 20 s of its kill -9; restarted by the suite")
        units.restart(harness.BRIDGE_UNIT)
        restarted_by_suite = True
        harness.wait_until(lambda: harness.http_ok(harness.BRIDGE_HEALTH), 60)
    drained = harness.check_promotions(row, gocd_target, since=killed, timeout=100)
    row.set_recovery(None if restarted_by_suite else drained)
    if restarted_by_suite and drained is not None:
        row.note(f"after the suite's restart, every promotion was scheduled {drained:.1f} s after the kill")
    verify(row)
    _assert(row)


def test_gocd_answers_503_for_60_s_during_100_promotions(platform, table, gocd_target):
    row = table.add("GoCD 503 for 60 s, 100 promotions")
    client = harness.new_client()
    models = harness.prepare_models(row, platform.experiment_id, gocd_target, 100)
    gocd = gocd_target.gocd
    with gocd_target.own_pipelines(models, BRIDGE_VARIABLES):
        failing_from = time.monotonic()
        gocd.fail_for(60)
        try:
            for model, version in models:
                harness.promote(row, client, gocd_target, model, version)
                time.sleep(0.2)
            time.sleep(max(0.0, failing_from + 60 - time.monotonic()))
        finally:
            gocd.fail_for(0)
        answering = time.monotonic()
        row.set_recovery(harness.check_promotions(row, gocd_target, since=answering, timeout=60))
    verify(row)
    _assert(row)


def _du(path: Path) -> int:
    return int(
        subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    )


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_artifact_store_disk_full(platform, table, units):
    """SeaweedFS's data directory on a small tmpfs for the length of the row: its data is copied there,
    the tmpfs is bind-mounted over the real directory (which stays untouched underneath), a ballast file
    fills it, uploads go on, the ballast is removed. Afterwards the unit is stopped, both mounts are
    undone and the unit starts again on its real data; the row's own uploads live only in the tmpfs."""
    row = table.add("artifact store disk full")
    data = harness.SEAWEEDFS_DATA
    assert not os.path.ismount(data), f"{data} is a mount point already (left by an interrupted run?)"
    staging = Path(tempfile.mkdtemp(prefix="chaos-seaweedfs-", dir="/run"))
    owner = data.stat()
    # SeaweedFS sizes its volumes from the disk (1 GiB here) and takes no write without room for one: the
    # tmpfs leaves room for one volume and more, then the ballast takes that room away.
    size_mib = _du(data) // MIB + 1536
    mounted: list[Path] = []
    probe = None
    try:
        units.stop(harness.OBJECT_STORE_UNIT)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0750", "chaos-seaweedfs", str(staging)],
            check=True,
        )
        mounted.append(staging)
        subprocess.run(["cp", "-a", f"{data}/.", str(staging)], check=True)
        os.chown(staging, owner.st_uid, owner.st_gid)
        subprocess.run(["mount", "--bind", str(staging), str(data)], check=True)
        mounted.insert(0, data)
        units.start(harness.OBJECT_STORE_UNIT)
        probe = Probe(platform.auth, platform.experiment_id, platform.probe_run(), artifacts=True, size=MIB)
        with probing(probe):
            served = harness.wait_until(lambda: probe.samples and probe.samples[-1][2], 60)
            assert served, "SeaweedFS on the tmpfs does not take uploads"
            ballast = staging / "chaos-ballast"
            subprocess.run(
                ["fallocate", "-l", str(max(0, _free(staging) - 4 * MIB)), str(ballast)], check=True
            )
            row.note(f"tmpfs of {size_mib} MiB, {_free(staging) // MIB} MiB left free by the ballast")
            # A call that starts as the disk fills must outlast the full window (15 s), the recovery limit and
            # SeaweedFS taking its volumes back (after a full disk some uploads still fail while others pass):
            # more than the suite's 5 retries (about 30 s of backoff) give; 6 give about 62 s.
            with (
                patched_environ({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6"}),
                Load(row, platform.experiment_id, artifacts=2, artifact_size=1 * MIB, pause=0.2),
            ):
                time.sleep(15)
                ballast.unlink()
                freed = time.monotonic()
                row.note(f"1 MiB probe uploads refused while full: {probe.failures_since(freed - 15)}")
                row.set_recovery(probe.wait_recovered(freed, timeout=30))
                time.sleep(3)
            verify(row)  # the row's uploads live in the tmpfs: read them back before it goes
    finally:
        units.run("stop", harness.OBJECT_STORE_UNIT)
        for path in mounted:
            for attempt in range(10):
                if subprocess.run(["umount", str(path)], check=False).returncode == 0:
                    break
                time.sleep(1 + attempt)
            else:
                row.note(f"{path} could not be unmounted: left as it is, SeaweedFS not restarted")
                pytest.fail(f"{path} is still mounted; stop seaweedfs, umount it, start seaweedfs")
        staging.rmdir()
        units.start(harness.OBJECT_STORE_UNIT)
        if not harness.wait_until(lambda: harness.http_ok(harness.OBJECT_STORE_HEALTH), 60):
            pytest.fail("SeaweedFS does not answer after the restore")
    _assert(row)
