"""The lab for the session: built, converged with site.yml, torn down at the end whatever failed.

Set MLFLOW_LAB_KEEP=1 to leave the hosts running after the session (`python -m tests.lab.lab down` removes
them), and MLFLOW_LAB_REUSE=1 to test hosts already converged (by `python -m tests.lab.lab up`) instead of a
fresh lab.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab import engine
from tests.lab.lab import PROXY, PUBLIC_URL, RESULTS, Lab, exec_in, log

TLS_CERT = "/etc/nginx/tls/mlflow-platform.crt"


@dataclass(frozen=True)
class Platform:
    lab: Lab
    url: str
    admin_password: str
    ca_path: Path
    converge_seconds: float

    def client_env(self, username: str = "admin", password: str | None = None) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": self.admin_password if password is None else password,
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.ca_path),
        }


def figure(name: str, value: object) -> None:
    """A measured figure: printed, and appended to results/lab/figures.txt."""
    line = f"FIGURE {name}: {value}"
    print(line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "figures.txt").open("a") as out:
        out.write(line + "\n")


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    import time

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "figures.txt").unlink(missing_ok=True)
    if os.environ.get("MLFLOW_LAB_REUSE") == "1":
        lab = Lab()
        ca_path = RESULTS / "proxy-ca.crt"
        ca_path.write_text(exec_in(PROXY, "cat", TLS_CERT))
        password = (lab.secrets_dir / "mlflow_admin_password").read_text().strip()
        yield Platform(lab, PUBLIC_URL, password, ca_path, 0.0)
        return
    with engine.Engine(log_path=RESULTS / "dockerd.log"):
        lab = Lab()
        lab.up()
        try:
            started = time.monotonic()
            result = lab.converge("site.yml")
            seconds = time.monotonic() - started
            assert result.returncode == 0, f"site.yml failed on the lab: see {RESULTS / 'site.log'}"
            figure("site.yml converge of 5 hosts (s)", f"{seconds:.0f}")
            ca_path = RESULTS / "proxy-ca.crt"
            ca_path.write_text(exec_in(PROXY, "cat", TLS_CERT))
            password = (lab.secrets_dir / "mlflow_admin_password").read_text().strip()
            yield Platform(lab, PUBLIC_URL, password, ca_path, seconds)
        finally:
            if os.environ.get("MLFLOW_LAB_KEEP") == "1":
                log("MLFLOW_LAB_KEEP=1: the hosts stay up")
                if lab.forward_proxy is not None:
                    lab.forward_proxy.stop()
            else:
                lab.down()
