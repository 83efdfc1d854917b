"""The lab's proofs that change the platform, run after the others (test_lab.py): PgBouncer turned on by a
rolling upgrade under load, and the backup that upgrade took first."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.lab.conftest import Platform, figure
from tests.lab.lab import POSTGRESQL, REPLICAS, exec_in
from tests.lab.test_lab import Load, access_log_lines, env_file, requests_per_replica, upstream_entries

# The lab's backup key (backup_age_generate_identity), on the PostgreSQL host.
IDENTITY = "/etc/mlflow-platform/backup-age-identity.txt"


def test_a_rolling_upgrade_onto_pgbouncer_fails_no_client_call_and_bounds_the_connections(
    platform: Platform,
) -> None:
    """The day-2 change of a growing platform: PgBouncer (transaction mode) installed on the PostgreSQL host,
    then upgrade.yml (backup first, then one replica at a time) moves the servers onto it with NullPool, under
    4 clients. No client call fails, and PostgreSQL serves at most one pool per database afterwards."""
    without, load_without = connections_under_load(platform)
    assert load_without.failures == [], load_without.failures[:5]
    pool_size = 20
    options = json.dumps({
        "postgresql_pgbouncer_enabled": True,
        "postgresql_pgbouncer_default_pool_size": pool_size,
        "mlflow_server_extra_env": {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"},
    })  # fmt: skip
    # PgBouncer first: the servers keep their direct connections until their own restart.
    result = platform.lab.converge("postgresql.yml", "-e", options, log_name="pgbouncer-postgresql")
    assert result.returncode == 0, (
        "postgresql.yml with PgBouncer failed: see results/lab/pgbouncer-postgresql.log"
    )

    # 4 clients through the upgrade: it restarts each replica once, and on a 2-core machine 8 clients make the
    # converge itself crawl (about 10 minutes); the counts below run under 8.
    load = Load(platform, clients=4)
    before = len(access_log_lines())
    outcome: dict[str, int] = {}
    started = time.monotonic()

    def upgrade() -> None:
        outcome["rc"] = platform.lab.converge("upgrade.yml", "-e", options, log_name="upgrade").returncode

    load.run_while(upgrade)
    seconds = time.monotonic() - started
    counts = requests_per_replica(upstream_entries(access_log_lines()[before:]))
    figure("rolling upgrade: upgrade.yml under load (s)", f"{seconds:.0f}")
    figure("rolling upgrade: client calls", load.calls)
    figure("rolling upgrade: failed client calls", len(load.failures))
    figure("rolling upgrade: requests answered per replica", dict(sorted(counts.items())))
    assert outcome["rc"] == 0, "upgrade.yml failed: see results/lab/upgrade.log"
    assert load.failures == [], load.failures[:5]
    for replica in REPLICAS:
        env = env_file(replica)
        assert ":6432/" in env["MLFLOW_BACKEND_STORE_URI"]
        assert env["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] == "NullPool"

    with_pgbouncer, load_with = connections_under_load(platform)
    figure("PgBouncer: most server connections under 8 clients, without", without)
    figure("PgBouncer: most server connections under 8 clients, with (transaction mode)", with_pgbouncer)
    figure("PgBouncer: client calls without / with", f"{load_without.calls} / {load_with.calls}")
    assert load_with.failures == [], load_with.failures[:5]
    # Two databases (tracking, auth), one pool each: PgBouncer never opens more.
    assert 0 < with_pgbouncer <= 2 * pool_size


def test_the_backup_before_the_upgrade_archived_every_hosts_secrets(platform: Platform) -> None:
    """upgrade.yml's backup ran on the PostgreSQL host, yet its encrypted archive holds the secrets of the
    hosts that use them: the controller's generated ones, each server's env file, the proxy's TLS key."""
    gathered = "var/lib/mlflow-platform/backup/hosts"
    archive = exec_in(
        POSTGRESQL, "sh", "-c",
        "ls /var/backups/mlflow-platform/secrets | tail -n 1",
    ).strip()  # fmt: skip
    assert archive.startswith("secrets-"), archive
    listing = exec_in(
        POSTGRESQL, "sh", "-c",
        f"age --decrypt --identity {IDENTITY} /var/backups/mlflow-platform/secrets/{archive} | tar --list",
    ).split()  # fmt: skip
    # The archive keeps absolute names (tar --absolute-names).
    archives = [name for name in listing if name.endswith(".tar")]
    hosts = sorted(Path(name).name for name in archives if name.lstrip("/").startswith(gathered + "/"))
    figure("backup before the upgrade: hosts' secrets in the archive", hosts)
    assert hosts == [
        "lab-mlflow-1.tar",
        "lab-mlflow-2.tar",
        "lab-object-store.tar",
        "lab-proxy.tar",
        "localhost.tar",
    ]
    server = exec_in(POSTGRESQL, "tar", "--list", "--file", f"/{gathered}/lab-mlflow-2.tar").split()
    assert "etc/mlflow/server.env" in server
    proxy = exec_in(POSTGRESQL, "tar", "--list", "--file", f"/{gathered}/lab-proxy.tar").split()
    assert any(name.startswith("etc/nginx/tls/") and name.endswith(".key") for name in proxy), proxy
    controller = exec_in(POSTGRESQL, "tar", "--list", "--file", f"/{gathered}/localhost.tar").split()
    assert any(name.endswith("/mlflow_admin_password") for name in controller), controller


def server_connections() -> int:
    """Connections of the application role that PostgreSQL serves (client backends, PgBouncer's included)."""
    out = exec_in(
        POSTGRESQL, "su", "postgres", "-c",
        "psql -At -c \"SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlflow'"
        " AND backend_type = 'client backend'\"",
    )  # fmt: skip
    return int(out.strip())


def connections_under_load(platform: Platform, seconds: float = 30) -> tuple[int, Load]:
    """The most application connections PostgreSQL served while 8 clients ran for `seconds`."""
    load = Load(platform, clients=8)
    samples: list[int] = []

    def sample() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(server_connections())
            time.sleep(1)

    load.run_while(sample)
    return max(samples), load
