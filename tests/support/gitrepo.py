"""Throwaway git repositories for tests of what runs record about their code."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def committed_repo(path: Path, files: dict[str, str], remote: str, message: str = "initial") -> Path:
    """A repository at ``path`` with ``files`` committed on ``main`` and ``remote`` as origin."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    git(path, "remote", "add", "origin", remote)
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", message)
    return path
