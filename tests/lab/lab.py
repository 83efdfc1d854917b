"""The lab: the platform converged by the real playbooks onto containers, one per host of
ansible/inventories/lab/, on a network of their own.

`Lab` (a context manager) builds the lab host image once (tests/lab/host/, cached by the engine), creates
the network 172.30.14.0/24, starts the forward proxy the hosts reach apt and PyPI through at the network's
gateway, and one container per host with the inventory's name and address, plus `lab-client` for the
clients. On exit it removes all of it, whatever failed. `converge` runs a playbook of ansible/ on it through
Ansible's docker connection.

    python -m tests.lab.lab up      # the lab, converged, left running (for debugging)
    python -m tests.lab.lab down    # remove it
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import engine
from tests.lab.forward_proxy import ForwardProxy

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "ansible" / "inventories" / "lab"
TOOLS_BIN = REPO / ".venv" / "tools" / "bin"
HOST_IMAGE = "mlflow-platform/lab-host:bookworm"
NETWORK = "mlflow-lab"
SUBNET = "172.30.14.0/24"
GATEWAY = "172.30.14.1"
FORWARD_PROXY_PORT = 3128
LABEL = "mlflow-platform.lab"
RESULTS = REPO / "results" / "lab"

# Inventory host name -> address (ansible/inventories/lab/hosts.yml); lab-client runs the clients.
HOSTS = {
    "lab-postgresql": "172.30.14.10",
    "lab-object-store": "172.30.14.11",
    "lab-mlflow-1": "172.30.14.21",
    "lab-mlflow-2": "172.30.14.22",
    "lab-proxy": "172.30.14.30",
    "lab-client": "172.30.14.40",
}
REPLICAS = ("lab-mlflow-1", "lab-mlflow-2")
PROXY = "lab-proxy"
POSTGRESQL = "lab-postgresql"
CLIENT = "lab-client"
PUBLIC_URL = f"https://{HOSTS[PROXY]}"


def log(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float = 120, check: bool = True, capture: bool = True) -> str:
    result = subprocess.run(
        [engine.DOCKER, *args], text=True, timeout=timeout, check=False, capture_output=capture
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed ({result.returncode}): {result.stderr}")
    return result.stdout if capture else ""


def exec_in(host: str, *command: str, timeout: float = 120, check: bool = True) -> str:
    """Run a command in a lab host; its stdout."""
    return docker("exec", host, *command, timeout=timeout, check=check)


def build_host_image() -> None:
    engine.ensure_base_image()
    RESULTS.mkdir(parents=True, exist_ok=True)
    engine.build(REPO / "tests" / "lab" / "host", HOST_IMAGE, output=RESULTS / "host-image-build.log")


def remove_everything() -> None:
    """Every lab container (by label) and the network; nothing else."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if ids:
        docker("rm", "-f", *ids, timeout=300)
    if docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$").strip():
        docker("network", "rm", NETWORK)


@dataclass
class Lab:
    secrets_dir: Path = RESULTS / "secrets"
    forward_proxy: ForwardProxy | None = None

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def up(self) -> None:
        started = time.monotonic()
        build_host_image()
        remove_everything()
        # A fresh lab gets fresh secrets (generated on the controller by the first converge).
        shutil.rmtree(self.secrets_dir, ignore_errors=True)
        docker("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY, "--label", LABEL, NETWORK)
        self.forward_proxy = ForwardProxy(GATEWAY, FORWARD_PROXY_PORT).start()
        for host, address in HOSTS.items():
            docker(
                "run", "--detach", "--name", host, "--hostname", host, "--network", NETWORK, "--ip", address,
                "--label", LABEL, HOST_IMAGE,
            )  # fmt: skip
        log(f"network {SUBNET} and {len(HOSTS)} hosts up in {time.monotonic() - started:.0f}s")

    def down(self) -> None:
        try:
            remove_everything()
        finally:
            if self.forward_proxy is not None:
                self.forward_proxy.stop()
                self.forward_proxy = None

    def converge(self, playbook: str = "site.yml", *extra: str, log_name: str | None = None,
                 timeout: float = 1800) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """ansible-playbook -i inventories/lab <playbook>; its output in results/lab/<log_name>.log."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
            "MLFLOW_LAB_SECRETS_DIR": str(self.secrets_dir),
            # Each task's time in the log: where a converge spends its minutes.
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            # The docker connection runs `docker exec`: Debian's client, which speaks the engine's API.
            "PATH": f"{Path(engine.DOCKER).parent}:{os.environ.get('PATH', '')}",
        }
        output = RESULTS / f"{log_name or Path(playbook).stem}.log"
        started = time.monotonic()
        with output.open("w") as out:
            result = subprocess.run(
                [str(TOOLS_BIN / "ansible-playbook"), "-i", str(INVENTORY), str(REPO / "ansible" / playbook),
                 *extra],
                env=env, text=True, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False,
            )  # fmt: skip
        seconds = time.monotonic() - started
        log(f"{playbook} {' '.join(extra)}: rc={result.returncode} in {seconds:.0f}s ({output})")
        return result


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "down":
        remove_everything()
        return
    lab = Lab()
    lab.up()
    if lab.converge().returncode != 0:
        sys.exit(1)
    log("converged; the forward proxy stops with this process: Ctrl-C to end (the hosts stay until `down`)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if lab.forward_proxy is not None:
            lab.forward_proxy.stop()


if __name__ == "__main__":
    main()
