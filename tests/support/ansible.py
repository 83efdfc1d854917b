"""Run the project's playbooks the way `make up` does, and read their recap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
INVENTORY = ANSIBLE_DIR / "inventories" / "local"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOG_DIR = REPO / "results" / "infra"

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: its exit code, per-host recap, duration and output."""

    label: str
    returncode: int
    recap: dict[str, dict[str, int]]
    seconds: float
    output: str
    log: Path

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self) -> int:
        # No recap at all means the run died before any host finished: count that as a failure.
        return sum(host["failed"] + host["unreachable"] for host in self.recap.values()) + (not self.recap)

    def changed_tasks(self) -> list[str]:
        """The tasks that reported a change, for assertion messages."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and current not in tasks:
                tasks.append(current)
        return tasks

    def summary(self) -> str:
        return f"{self.label}: rc={self.returncode} {self.recap} in {self.seconds:.0f}s (log: {self.log})"


def run_playbook(label: str, playbook: str = "site.yml", *extra: str, timeout: float = 1800) -> PlaybookRun:
    """Run one playbook against the local inventory; its full output goes to results/infra/<label>.log."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(ANSIBLE_DIR / playbook), *extra]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{label}.log"
    log.write_text(output, encoding="utf-8")
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in _RECAP.finditer(result.stdout)
    }
    return PlaybookRun(label, result.returncode, recap, seconds, output, log)
