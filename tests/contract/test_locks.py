"""Drift guards for requirements/: every lock is generated with hashes, and every install checks them.

Each `requirements/<name>.in` is the human-edited input; its lock (`server*.lock`, else `<name>.txt`) is
written by `pip-compile --generate-hashes`, whose command line heads the file. Every pip install of a
requirements file (Makefile, Ansible, the Dockerfile, the bench) passes `--require-hashes`, and pip refuses a
file whose sha256 the lock does not name.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
INPUTS = sorted(REQUIREMENTS.glob("*.in"))
LOCKS = sorted(p for p in REQUIREMENTS.iterdir() if p.suffix in (".lock", ".txt"))
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
HEADER = re.compile(r"^#\s+(pip-compile\s.*|uv pip compile\s.*)$", re.MULTILINE)


def lock_of(source: Path) -> Path:
    # server.lock and the previous MLflow's server-<minor>.lock (the upgrade test) are the server's locks.
    return source.with_suffix(".lock" if source.stem.split("-")[0] == "server" else ".txt")


def entries(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a lock; fails on any line that is not a pinned, hashed requirement."""
    logical = re.sub(r"\\\n", " ", lock.read_text())
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        match = PIN.match(words[0])
        assert match, f"{lock.name}: not a pinned requirement: {line}"
        hashes = frozenset(w for w in words[1:] if HASH.fullmatch(w))
        assert hashes, f"{lock.name}: {words[0]} has no --hash"
        assert len(hashes) == len(words) - 1, f"{lock.name}: {words[0]}: only --hash options may follow"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        found[name] = (match.group(2), hashes)
    return found


# --- the locks ----------------------------------------------------------------------------------------------


def test_every_input_has_its_lock_and_every_lock_its_input() -> None:
    assert INPUTS, "no requirements/*.in"
    assert sorted(lock_of(p) for p in INPUTS) == LOCKS


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_lock_names_its_generation_command(lock: Path) -> None:
    header = lock.read_text().split("\n\n", 1)[0][:2000]
    match = HEADER.search(header)
    assert match, f"{lock.name}: no pip-compile / uv pip compile command in its header"
    argv = shlex.split(match.group(1))
    assert "--generate-hashes" in argv, f"{lock.name}: generated without --generate-hashes: {argv}"
    source = f"requirements/{lock.with_suffix('.in').name}"
    assert argv[-1] == source, f"{lock.name}: generated from {argv[-1]}, expected {source}"
    output = [a.split("=", 1)[1] for a in argv if a.startswith("--output-file=")]
    assert output == [f"requirements/{lock.name}"], f"{lock.name}: the command writes {output}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_lock_line_is_pinned_with_hashes(lock: Path) -> None:
    assert entries(lock)


def test_layered_locks_agree() -> None:
    """dev.txt goes on top of server.lock in one pip call, and shares Ansible's packages with tools.txt:
    a package in two locks has one version and the same hashes in both."""
    dev = entries(REQUIREMENTS / "dev.txt")
    for other in ("server.lock", "tools.txt"):
        for name, pinned in entries(REQUIREMENTS / other).items():
            if name in dev:
                assert dev[name] == pinned, f"{name}: dev.txt and {other} differ"
    assert set(entries(REQUIREMENTS / "tools.txt")) <= set(dev), "dev.txt lacks packages of tools.txt"


def test_the_server_stays_on_its_mlflow() -> None:
    assert entries(REQUIREMENTS / "server.lock")["mlflow"][0] == "3.17.2"


# --- every install checks the hashes ------------------------------------------------------------------------


def _makefile_commands() -> list[str]:
    return [line.strip() for line in (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()]


def _dockerfile_commands() -> list[str]:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    return [part for line in text.splitlines() if line.startswith("RUN ") for part in line.split("&&")]


def _yaml_strings(node: object) -> list[str]:
    """Every string of a YAML document, and every list of strings joined as one command."""
    if isinstance(node, str):
        # A lone argv item such as "-r" is judged with its list, joined below.
        return [] if node in ("-r", "--requirement") else [node]
    if isinstance(node, list):
        joined = [" ".join(node)] if node and all(isinstance(i, str) for i in node) else []
        return joined + [s for item in node for s in _yaml_strings(item)]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _yaml_strings(value)]
    return []


def _ansible_pip_module_tasks(node: object) -> list[dict]:
    if isinstance(node, list):
        return [t for item in node for t in _ansible_pip_module_tasks(item)]
    if isinstance(node, dict):
        own = [node] if {"ansible.builtin.pip", "pip"} & set(node) else []
        return own + [t for value in node.values() for t in _ansible_pip_module_tasks(value)]
    return []


def _python_commands(path: Path) -> list[str]:
    """List literals of strings in a Python file (subprocess argv), joined."""
    commands = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.List):
            words = [
                e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else "X"
                for e in node.elts
            ]
            commands.append(" ".join(words))
    return commands


ANSIBLE_FILES = sorted((ROOT / "ansible").rglob("*.yml"))
BENCH_FILES = sorted((ROOT / "tests" / "bench").glob("*.py"))
# "-r FILE" / "--requirement FILE", as a shell word, a quoted item of a Jinja list or an item of an argv list.
REQUIREMENT_OPTION = re.compile(r"""(^|[\s'"\[,])(-r|--requirement)([\s'",\]=]|$)""")


def _commands() -> list[tuple[str, str]]:
    found = [("Makefile", c) for c in _makefile_commands()]
    found += [("docker/Dockerfile", c) for c in _dockerfile_commands()]
    for path in ANSIBLE_FILES:
        for document in yaml.safe_load_all(path.read_text()):
            found += [(str(path.relative_to(ROOT)), s) for s in _yaml_strings(document)]
    for path in BENCH_FILES:
        found += [(str(path.relative_to(ROOT)), c) for c in _python_commands(path)]
    return found


def test_the_scan_sees_the_installs() -> None:
    """The guard below is only as good as what it reads: it must find the known installs of each lock."""
    seen = {where for where, command in _commands() if REQUIREMENT_OPTION.search(command)}
    assert {"Makefile", "docker/Dockerfile", "ansible/roles/python_service/vars/main.yml"} <= seen, seen
    assert any(w.startswith("ansible/roles/object_store/") for w in seen), seen
    assert any(w.startswith("ansible/roles/systemd_compat/") for w in seen), seen


def test_every_install_of_a_requirements_file_requires_hashes() -> None:
    unchecked = [
        f"{where}: {command.strip()}"
        for where, command in _commands()
        if REQUIREMENT_OPTION.search(command) and "--require-hashes" not in command
    ]
    assert not unchecked, "pip installs without --require-hashes:\n" + "\n".join(unchecked)


def test_no_ansible_task_installs_with_the_pip_module() -> None:
    """ansible.builtin.pip cannot pass hashes for `name:` and always reports a change in check mode for a
    requirements file: the roles run pip with --require-hashes, after a --dry-run --report."""
    tasks = [
        str(path.relative_to(ROOT))
        for path in ANSIBLE_FILES
        for document in yaml.safe_load_all(path.read_text())
        if _ansible_pip_module_tasks(document)
    ]
    assert not tasks, tasks


def test_makefile_rebuilds_the_venvs_when_a_lock_changes() -> None:
    text = (ROOT / "Makefile").read_text()
    for target, locks in {
        "$(TOOLS_VENV)/.installed": ["requirements/tools.txt"],
        "$(DEV_VENV)/.installed": ["requirements/server.lock", "requirements/dev.txt"],
    }.items():
        prerequisites = re.search(rf"^{re.escape(target)}:(.*)$", text, re.MULTILINE)
        assert prerequisites, target
        installed = re.findall(
            rf"^\t{re.escape(target.split('/')[0])}/bin/pip install .*$", text, re.MULTILINE
        )
        for lock in locks:
            assert lock in prerequisites.group(1).split(), f"{target} does not depend on {lock}"
            assert any(f"-r {lock}" in line for line in installed), f"{target} does not install {lock}"


# --- pip refuses what the lock does not name ----------------------------------------------------------------


def _entry(lock: Path, name: str) -> str:
    block = re.search(
        rf"^{re.escape(name)}==\S+(?: \\\n\s+--hash=sha256:[0-9a-f]{{64}})+", lock.read_text(), re.M
    )
    assert block, f"{lock.name}: no hashed entry for {name}"
    return block.group(0) + "\n"


def _download(requirements: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "requirements.txt").write_text(requirements)
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-d", str(tmp_path / "dl"), "-r", str(tmp_path / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip


def test_pip_accepts_the_locked_file(tmp_path: Path) -> None:
    """The control: the entry as locked downloads (so a refusal below is the hash, not the network)."""
    result = _download(_entry(REQUIREMENTS / "server.lock", "six"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "dl").iterdir()], "nothing downloaded"


def test_pip_refuses_a_tampered_hash(tmp_path: Path) -> None:
    entry = _entry(REQUIREMENTS / "server.lock", "six")
    # Alter every hash of the entry (one of them is the file pip picks), by one hex digit each.
    tampered = re.sub(
        r"(sha256:[0-9a-f]{63})([0-9a-f])", lambda m: m.group(1) + ("0" if m.group(2) != "0" else "1"), entry
    )
    assert tampered != entry
    result = _download(tampered, tmp_path)
    assert result.returncode != 0, "pip accepted a file whose hash the requirements file does not name"
    assert "DO NOT MATCH THE HASHES" in result.stderr, result.stderr
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())
