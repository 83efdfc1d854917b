"""Backups and the restore drill on the converged host.

The drill populates the platform, backs it up (make backup), writes once, notes the time, writes again, wipes
the platform (services stopped, the three databases dropped, the bucket emptied, the secrets removed) and
restores it (make restore) to the noted time. It then compares what a user relies on: the row count of every
table of every database, the checksum of every artifact, the old admin password, user password and token, the
first write present and the second gone. It prints the counts and checksums. Whatever fails, the platform is
restored and healthy at the end. Bounded: about 6 minutes, most of it the restore's converge.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.infra.conftest import (
    BUCKET,
    S3_ENDPOINT,
    TLS_CERT,
    TLS_KEY,
    TRACKING_URI,
    _vars_file,
    platform_call,
)
from tests.support.ansible import run_playbook
from tests.support.environ import patched_environ
from tests.support.tls_front import TlsFront

pytestmark = pytest.mark.usefixtures("converged")

DATABASES = ("mlflow", "mlflow_auth", "mlflow_bridge")
BACKUP_CONFIG = Path("/etc/mlflow-platform/backup/backup.json")
BACKUP_CLI = "/usr/local/sbin/mlflow-platform-backup"
METRICS = Path("/var/lib/mlflow-platform/metrics/backup.prom")
SECRETS_ARCHIVES = Path("/var/backups/mlflow-platform/secrets")
JOBS = (
    "mlflow-backup-postgres-full",
    "mlflow-backup-postgres-diff",
    "mlflow-backup-artifacts",
    "mlflow-backup-secrets",
)
WIPED_PATHS = ("/etc/mlflow-platform/secrets", "/etc/mlflow", "/etc/gocd-bridge", "/etc/nginx/tls")
SERVICES = ("mlflow-server", "gocd-bridge")
AGE_IDENTITY = "/etc/mlflow-platform/backup-age-identity.txt"
# The S3 location test: buckets of its own on the bundled SeaweedFS.
S3_BACKUP_BUCKET = "mlflow-platform-backups"
S3_SOURCE_BUCKET = "mlflow-platform-backup-source"
S3_PREFIX = "infra-test"


def psql(database: str, sql: str) -> str:
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-d", database, "-Atc", sql]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def table_counts() -> dict[str, int]:
    """Rows of every table of every database of the platform: every entity, whatever MLflow calls it."""
    counts = {}
    present = set(psql("postgres", "select datname from pg_database").split())
    for database in sorted(present & set(DATABASES)):
        tables = psql(
            database, "select tablename from pg_tables where schemaname = 'public' order by 1"
        ).split()
        if tables:
            # Table names come from pg_tables itself.
            union = " union all ".join(f"select '{t}', count(*) from public.\"{t}\"" for t in tables)  # noqa: S608
            for line in psql(database, union).splitlines():
                table, count = line.split("|")
                counts[f"{database}.{table}"] = int(count)
    return counts


def artifact_checksums(s3_client) -> dict[str, str]:
    sums = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            body = s3_client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            sums[item["Key"]] = hashlib.sha256(body).hexdigest()
    return sums


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def populate(admin_env: dict[str, str], tag: str) -> dict[str, str]:
    """Experiments, runs with metrics, params and artifacts, a registered model with versions, aliases and
    tags, a user with a token, a disabled webhook. Returns the user, password, token and webhook id."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.server import get_app_client

    password = "Drill" + hashlib.sha256(tag.encode()).hexdigest()[:20]
    with patched_environ(admin_env):
        client = MlflowClient()
        for e in range(2):
            experiment = client.create_experiment(f"drill-{tag}-{e}")
            for r in range(3):
                run = client.create_run(experiment)
                now = int(time.time() * 1000)
                metrics = [Metric("loss", 1.0 / (s + 1), now, s) for s in range(50)]
                client.log_batch(
                    run.info.run_id, metrics=metrics, params=[mlflow.entities.Param("r", str(r))]
                )
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "model.txt").write_text(f"{tag} {e} {r}\n" * 100)
                    client.log_artifact(run.info.run_id, str(Path(tmp) / "model.txt"), "model")
                client.set_terminated(run.info.run_id)
        name = f"drill-{tag}-model"
        client.create_registered_model(name, tags={"team": "drill"})
        for _ in range(2):
            version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
            client.set_model_version_tag(name, version.version, "validated", "true")
        client.set_registered_model_alias(name, "champion", version.version)
        # Disabled, so it never fires: a webhook to a dead address would hold MLflow's delivery workers in
        # retries for every version created on this host after the drill, the bridge's deliveries included.
        webhook = client.create_webhook(
            f"drill-{tag}", "http://127.0.0.1:9/hook", events=["model_version.created"], status="DISABLED"
        )
        get_app_client("basic-auth", tracking_uri=TRACKING_URI).create_user(f"drill-{tag}", password)
    status, token = platform_call(
        "POST", "/api/2.0/mlflow-ext/tokens/create", basic(f"drill-{tag}", password), {"name": f"drill-{tag}"}
    )
    assert status == 200, f"creating the drill user's token: HTTP {status}"
    return {
        "user": f"drill-{tag}",
        "password": password,
        "token": token["token"],
        "webhook": webhook.webhook_id,
    }


def healthy() -> bool:
    with contextlib.suppress(OSError):
        context = ssl.create_default_context(cafile=TLS_CERT)
        with urllib.request.urlopen(TRACKING_URI + "/health", timeout=5, context=context) as response:
            return response.status == 200
    return False


def wipe(s3_client) -> None:
    subprocess.run(["systemctl", "stop", *SERVICES], check=True, timeout=120)
    for database in DATABASES:
        psql("postgres", f'drop database if exists "{database}" with (force)')
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]  # fmt: skip
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        s3_client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch})
    for path in WIPED_PATHS:
        for child in Path(path).glob("*"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def metric(kind: str) -> str:
    found = re.search(rf'^mlflow_backup_last_run_success{{kind="{kind}"}} (\S+)$', METRICS.read_text(), re.M)
    return found[1] if found else "missing"


def test_timers_are_installed_and_hardened(host):
    for job in JOBS:
        unit = host.file(f"/etc/systemd/system/{job}.service")
        assert unit.exists, f"{job}.service missing"
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ReadWritePaths="):
            assert line in unit.content_string, f"{job}.service lacks {line}"
        assert "OnCalendar=" in host.file(f"/etc/systemd/system/{job}.timer").content_string
        assert host.run(f"systemctl is-enabled {job}.timer").stdout.strip() == "enabled", (
            f"{job}.timer disabled"
        )


def test_backup_to_an_unreachable_location_fails_loudly(tmp_path):
    config = json.loads(BACKUP_CONFIG.read_text())
    config.update(
        artifacts_target="target:/proc/mlflow-backup-unwritable", artifacts_location="/proc/mlflow-backup"
    )
    bad = tmp_path / "backup.json"
    bad.write_text(json.dumps(config))
    result = subprocess.run([BACKUP_CLI, "--config", str(bad), "artifacts"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "artifacts: FAILED" in result.stderr and "/proc/mlflow-backup" in result.stderr, result.stderr
    assert metric("artifacts") == "0"


def server_metrics() -> str:
    """The server's /metrics on loopback, where Prometheus scrapes it."""
    with urllib.request.urlopen("http://127.0.0.1:5000/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_a_backup_timer_failing_on_a_full_location_shows_in_metrics():
    """The secrets timer's unit, its location on a full filesystem (a 1 MiB tmpfs under backup_root, filled
    to the last byte): the unit fails, its log names the location and the full disk, and the server's /metrics
    says the kind's last run failed. Then the live configuration is put back and the unit run again."""
    location = Path(json.loads(BACKUP_CONFIG.read_text())["secrets_location"]).parent / "full-location-probe"
    unit = "mlflow-backup-secrets.service"
    original = BACKUP_CONFIG.read_text()
    location.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(location)], check=True)
    try:
        with contextlib.suppress(OSError), open(location / "ballast", "wb") as ballast:
            while True:
                ballast.write(bytes(4096))
                ballast.flush()
        config = json.loads(original)
        config.update(secrets_target=f"target:{location}/secrets", secrets_location=f"{location}/secrets")
        BACKUP_CONFIG.write_text(json.dumps(config))
        run = subprocess.run(["systemctl", "start", unit], capture_output=True, text=True, timeout=300)
        log = Path(f"/var/log/journal/{unit}.log")
        tail = log.read_text()[-4000:] if log.exists() else ""
        assert run.returncode != 0, f"the unit did not fail: {run.stdout} {run.stderr} {tail}"
        assert "secrets: FAILED" in tail and str(location) in tail, tail
        # rclone says so before writing when it can preallocate, else the write fails with ENOSPC.
        assert re.search(r"no space left on device|too big for remaining disk space", tail, re.I), tail
        assert 'mlflow_backup_last_run_success{kind="secrets"} 0' in server_metrics()
    finally:
        BACKUP_CONFIG.write_text(original)
        subprocess.run(["umount", str(location)], check=True)
        location.rmdir()
    again = subprocess.run(["systemctl", "start", unit], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert 'mlflow_backup_last_run_success{kind="secrets"} 1' in server_metrics()


def _postgres_backup_sets(stanza: str) -> list[dict]:
    """pgBackRest's backup sets of the stanza, oldest first."""
    listing = subprocess.run(
        ["runuser", "-u", "postgres", "--", "pgbackrest", f"--stanza={stanza}", "--output=json", "info"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(listing.stdout)[0]["backup"]


def test_a_restore_pointed_at_a_damaged_postgres_backup_stops_before_touching_anything():
    """One byte flipped in a file of the newest pgBackRest backup set (the file is put back afterwards):
    restore.yml stops at its check, naming the set and the invalid checksum; the platform keeps serving."""
    config = json.loads(BACKUP_CONFIG.read_text())
    sets = _postgres_backup_sets(config["stanza"])
    if not sets:  # no backup set on this host yet: take one first
        backup = run_playbook("backup-for-damage", "backup.yml")
        assert backup.returncode == 0, f"{backup.summary()}\n{backup.output[-3000:]}"
        sets = _postgres_backup_sets(config["stanza"])
    label = sets[-1]["label"]
    files = Path(config["postgres_location"], "backup", config["stanza"], label, "pg_data").rglob("*")
    victim = max((f for f in files if f.is_file()), key=lambda f: f.stat().st_size)
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    try:
        victim.write_bytes(bytes(damaged))
        restore = run_playbook("restore-damaged", "restore.yml", "-e", f"backup_restore_set={label}")
    finally:
        victim.write_bytes(original)
    assert restore.returncode != 0
    assert f"PostgreSQL backup {label}" in restore.output and "is damaged" in restore.output, restore.output[
        -3000:
    ]
    assert "checksum invalid: 1" in restore.output, restore.output[-3000:]
    assert healthy(), "the platform stopped serving"


def empty_bucket(s3_client, bucket: str) -> None:
    """Create the bucket, or empty it of what an earlier run left."""
    if bucket not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=bucket)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        batch = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if batch:
            s3_client.delete_objects(Bucket=bucket, Delete={"Objects": batch})


def keys(s3_client, bucket: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_backup_to_s3_and_restore_check_from_it(secrets, s3_client, tmp_path):
    """backup_location_type s3 on the bundled SeaweedFS, a bucket of its own, behind a TLS terminator with the
    proxy's certificate (pgBackRest speaks only HTTPS to S3; its CA goes in backup_s3_ca_certificate). The
    artifact mirror reads a small bucket of its own so the test stays short. Every kind backs up; the restore
    check passes against the S3 copy; a deleted object comes back from the mirror; with the endpoint gone, a
    backup fails naming it. Then the path location is converged back. Bounded: about a minute."""
    empty_bucket(s3_client, S3_BACKUP_BUCKET)
    empty_bucket(s3_client, S3_SOURCE_BUCKET)
    objects = {
        f"exp/{i}/artifacts/model-{i}.bin": hashlib.sha256(bytes([i])).digest() * 4096 for i in range(5)
    }
    for key, body in objects.items():
        s3_client.put_object(Bucket=S3_SOURCE_BUCKET, Key=key, Body=body)
    port = int(S3_ENDPOINT.rsplit(":", 1)[1])
    # A prefix of this run's own: SeaweedFS keeps an emptied prefix's directories, where pgBackRest would see
    # a stanza without its info files.
    prefix = f"{S3_PREFIX}-{time.strftime('%Y%m%d%H%M%S')}"
    try:
        with TlsFront(port, TLS_CERT, TLS_KEY) as front:
            endpoint = f"https://localhost:{front.port}"
            s3_vars = {
                "backup_location_type": "s3",
                "backup_s3_endpoint_url": endpoint,
                "backup_s3_bucket": S3_BACKUP_BUCKET,
                "backup_s3_prefix": prefix,
                "backup_s3_access_key": secrets["object_store_access_key"],
                "backup_s3_secret_key": secrets["object_store_secret_key"],
                "backup_s3_ca_certificate": Path(TLS_CERT).read_text(),
                "backup_source_bucket": S3_SOURCE_BUCKET,
            }
            backup = run_playbook("backup-s3", "backup.yml", "-e", f"@{_vars_file(tmp_path, s3_vars)}")
            assert backup.returncode == 0, f"{backup.summary()}\n{backup.output[-3000:]}"
            assert {metric(kind) for kind in ("postgres", "artifacts", "secrets")} == {"1"}
            stored = keys(s3_client, S3_BACKUP_BUCKET)
            for part in ("pgbackrest/backup/mlflow/", "pgbackrest/archive/mlflow/", "artifacts/current/exp/",
                         "secrets/secrets-"):  # fmt: skip
                assert any(k.startswith(f"{prefix}/{part}") for k in stored), f"nothing under {part}"

            check = subprocess.run(
                [BACKUP_CLI, "verify", f"--identity={AGE_IDENTITY}"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert check.returncode == 0, check.stderr
            print(f"\nS3 backup: {backup.seconds:.0f} s; restore check: {check.stdout.strip()}")

            lost = next(iter(objects))
            s3_client.delete_object(Bucket=S3_SOURCE_BUCKET, Key=lost)
            restore = subprocess.run(
                [BACKUP_CLI, "restore-artifacts"], capture_output=True, text=True, timeout=300
            )
            assert restore.returncode == 0, restore.stderr
            assert s3_client.get_object(Bucket=S3_SOURCE_BUCKET, Key=lost)["Body"].read() == objects[lost]

        # The endpoint is gone now: a backup fails, naming it (its metrics go to a file of the test's own).
        config = json.loads(BACKUP_CONFIG.read_text())
        config["metrics_file"] = str(tmp_path / "backup.prom")
        unreachable = tmp_path / "backup.json"
        unreachable.write_text(json.dumps(config))
        failed = subprocess.run(
            [BACKUP_CLI, "--config", str(unreachable), "artifacts"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert failed.returncode == 1
        assert "artifacts: FAILED" in failed.stderr and endpoint in failed.stderr, failed.stderr
        assert 'mlflow_backup_last_run_success{kind="artifacts"} 0' in (tmp_path / "backup.prom").read_text()
    finally:
        back = run_playbook("backup-path", "backup.yml", "-e", "backup_run=false")
        assert back.returncode == 0, f"{back.summary()}\n{back.output[-3000:]}"
        assert "repo1-type=s3" not in Path("/etc/pgbackrest.conf").read_text()
        for bucket in (S3_BACKUP_BUCKET, S3_SOURCE_BUCKET):
            empty_bucket(s3_client, bucket)
            s3_client.delete_bucket(Bucket=bucket)


def test_restore_drill(admin_env, secrets, s3_client, converged, tmp_path):
    started = time.monotonic()
    # The restore's converge points the bridge where the session's converge did (a host converged without a
    # GoCD token keeps the inventory's bridge settings).
    bridge_vars = (
        ["-e", f"@{_vars_file(tmp_path, converged.bridge.extra_vars())}"]
        if converged.bridge.gocd_token
        else []
    )
    tag = time.strftime("%H%M%S")
    account = populate(admin_env, tag)
    gocd_token = Path("/etc/mlflow/gocd_token").read_text().strip()
    cert = Path(TLS_CERT).read_bytes()

    backup = run_playbook("backup", "backup.yml")
    assert backup.returncode == 0, f"{backup.summary()}\n{backup.output[-3000:]}"
    assert {metric(kind) for kind in ("postgres", "artifacts", "secrets")} == {"1"}

    # A restore pointed at a backup that is not there, or a secrets archive that does not decrypt, fails in
    # its checks and leaves the live platform as it was.
    missing = run_playbook("restore-missing", "restore.yml", "-e", "backup_restore_set=20000101-000000F")
    assert missing.returncode != 0 and "20000101-000000F not found" in missing.output, missing.output[-2000:]
    corrupt = SECRETS_ARCHIVES / "secrets-29991231T000000Z.tar.age"
    corrupt.write_bytes(b"age-encryption.org/v1\n-> X25519 garbage\n" + bytes(256))
    try:
        bad = run_playbook(
            "restore-corrupt", "restore.yml", "-e", f"backup_restore_secrets_archive={corrupt.name}"
        )
    finally:
        corrupt.unlink()
    assert bad.returncode != 0 and "does not decrypt" in bad.output, bad.output[-2000:]
    assert (
        healthy()
        and platform_call("GET", "/api/2.0/mlflow/experiments/search?max_results=1", f"Bearer {gocd_token}")[
            0
        ]
        == 200
    )

    # Two writes with a moment between them; the restore goes back to that moment.
    with patched_environ(admin_env):
        from mlflow import MlflowClient

        MlflowClient().create_experiment(f"drill-{tag}-first")
        before_counts, before_sums = table_counts(), artifact_checksums(s3_client)
        time.sleep(2)
        moment = psql(
            "postgres", "select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
        )
        time.sleep(2)
        MlflowClient().create_experiment(f"drill-{tag}-second")
    subprocess.run(["runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=mlflow", "check"], check=True)

    wiped = restored = False
    try:
        wipe(s3_client)
        wiped = True
        assert not healthy() and table_counts() == {}
        restore = run_playbook(
            "restore",
            "restore.yml",
            *bridge_vars,
            "-e",
            json.dumps({"backup_restore_target": moment}),
        )
        assert restore.returncode == 0, f"{restore.summary()}\n{restore.output[-4000:]}"
        restored = True
        after_counts, after_sums = table_counts(), artifact_checksums(s3_client)
        print(
            f"\nrestore drill: backup {backup.seconds:.0f} s, restore {restore.seconds:.0f} s, "
            f"point in time {moment}"
        )
        print(f"{'table':<50} {'before':>8} {'after':>8}")
        for table in sorted(before_counts.keys() | after_counts.keys()):
            print(f"{table:<50} {before_counts.get(table, '-'):>8} {after_counts.get(table, '-'):>8}")
        digest = hashlib.sha256(json.dumps(before_sums, sort_keys=True).encode()).hexdigest()
        print(
            f"artifacts: {len(before_sums)} objects before, {len(after_sums)} after; "
            f"sha256 of the list {digest}"
        )
        for key in sorted(before_sums)[:5]:
            print(f"  {before_sums[key][:16]}  {key}")
        # Every table keeps its rows; the restore's converge may only add a schema version table (a migration
        # the live host had not run yet).
        assert {table: after_counts.get(table) for table in before_counts} == before_counts
        added = set(after_counts) - set(before_counts)
        assert all(table.split(".")[1].startswith("alembic_version") for table in added), added
        assert after_sums == before_sums
        assert Path(TLS_CERT).read_bytes() == cert, "the proxy's certificate was not restored"
        search = "/api/2.0/mlflow/experiments/search?max_results=1000"
        status, found = platform_call("GET", search, basic("admin", secrets["mlflow_admin_password"]))
        assert status == 200, "the old admin password no longer works"
        names = {e["name"] for e in found.get("experiments", [])}
        assert f"drill-{tag}-first" in names and f"drill-{tag}-second" not in names
        assert platform_call("GET", search, f"Bearer {gocd_token}")[0] == 200, (
            "the service account's old token no longer works"
        )
        assert platform_call("GET", search, f"Bearer {account['token']}")[0] == 200, (
            "the drill user's token no longer works"
        )
        assert platform_call("GET", search, basic(account["user"], account["password"]))[0] == 200
        print(f"restore drill: {time.monotonic() - started:.0f} s in all")
    finally:
        if wiped and not restored:
            # Whatever failed, leave the platform restored: the end of the backup this drill made.
            again = run_playbook("restore-after-failure", "restore.yml", *bridge_vars)
            print(again.summary())
        assert healthy(), "the platform is not healthy after the drill"
        with patched_environ(admin_env):
            from mlflow import MlflowClient

            MlflowClient().delete_webhook(account["webhook"])
