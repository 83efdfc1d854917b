"""`mlflow-ext bridge serve` as a real subprocess, with its own env file, routing file and outbox database.

Used by the bridge's integration tests and its benchmark. The process can be stopped politely, killed with
SIGKILL, and started again on the same port with the same outbox.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import VENV_BIN, Platform, free_ports, http_ok, stop_process, wait_for

GOCD_USER = "mlflow-bridge"


def webhook_env() -> dict[str, str]:
    """What the MLflow server needs to deliver webhooks to a bridge on loopback."""
    from cryptography.fernet import Fernet

    return {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }


@dataclass
class Bridge:
    platform: Platform
    gocd_url: str
    gocd_token: str
    routes: str
    database: str = "mlflow_bridge"
    extra_env: dict[str, str] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_hex(20))
    port: int = 0
    directory: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env_file(self) -> Path:
        assert self.directory is not None
        return self.directory / "bridge.env"

    def prepare(self) -> Bridge:
        """Database, env file, routing file, schema and webhook; not yet running."""
        self.directory = Path(tempfile.mkdtemp(prefix="bridgetest-"))
        (self.port,) = free_ports(1)
        pg = self.platform.postgres
        pg.psql(f"CREATE DATABASE {self.database} OWNER mlflow")
        routes = self.directory / "routes.yaml"
        routes.write_text(self.routes)
        values = {
            "MLFLOW_EXT_BRIDGE_HOST": "127.0.0.1",
            "MLFLOW_EXT_BRIDGE_PORT": str(self.port),
            "MLFLOW_EXT_BRIDGE_DATABASE_URI": f"postgresql+psycopg2://mlflow@127.0.0.1:{pg.port}/{self.database}",
            "PGPASSFILE": self.platform.server.env["PGPASSFILE"],
            "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET": self.secret,
            "MLFLOW_EXT_BRIDGE_ROUTES": str(routes),
            "MLFLOW_EXT_BRIDGE_GOCD_URL": self.gocd_url,
            "MLFLOW_EXT_BRIDGE_GOCD_USERNAME": GOCD_USER,
            "MLFLOW_EXT_BRIDGE_GOCD_TOKEN": self.gocd_token,
            "MLFLOW_EXT_BRIDGE_GOCD_TIMEOUT": "5",
            "MLFLOW_EXT_BRIDGE_RECONCILE_SECONDS": "1",
            "MLFLOW_EXT_BRIDGE_RETRY_MAX_SECONDS": "1",
            "MLFLOW_EXT_BRIDGE_IN_DOUBT_SECONDS": "2",
            "MLFLOW_EXT_BRIDGE_PAUSED_RECHECK_SECONDS": "1",
            "MLFLOW_EXT_BRIDGE_PUBLIC_TRACKING_URI": "https://mlflow.example.com",
            **self.platform.client_env(),
            **self.extra_env,
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.env_file.chmod(0o600)
        self.cli("migrate")
        self.registration = self.cli("register-webhook", "--url", f"{self.url}/webhook")
        return self

    def cli(self, *args: str, check: bool = True) -> dict:
        result = subprocess.run(
            [
                str(VENV_BIN / "mlflow-ext"),
                "bridge",
                *args,
                "--env-file",
                str(self.env_file),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_EXT"))},
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"mlflow-ext bridge {args[0]} failed ({result.returncode}): {result.stderr}")
        return json.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr}

    def start(self, timeout: float = 60) -> Bridge:
        assert self.directory is not None
        log = open(self.directory / "bridge.log", "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [str(VENV_BIN / "mlflow-ext"), "bridge", "serve", "--env-file", str(self.env_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
        )
        wait_for(lambda: http_ok(self.url + "/health"), "bridge", timeout, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or the OOM killer does."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def status(self) -> dict:
        return self.cli("status", "--limit", "1000")

    def log(self) -> str:
        assert self.directory is not None
        return (self.directory / "bridge.log").read_text(errors="replace")

    def cleanup(self) -> None:
        self.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
