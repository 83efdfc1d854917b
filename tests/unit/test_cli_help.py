"""`mlflow-ext --help` lists every command from the table in mlflow_ext.cli, importing none of them."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from mlflow_ext.cli import COMMANDS, main

_HELP_THEN_MODULES = """
import sys
sys.argv = ["mlflow-ext", "--help"]
from mlflow_ext.cli import run
try:
    run()
finally:
    print("LOADED", " ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "mlflow_ext"))))
"""


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_help_is_the_commands_own(name):
    command = main.get_command(click.Context(main), name)
    assert command is not None
    assert COMMANDS[name][1] == command.get_short_help_str(limit=200), f"update COMMANDS[{name!r}]"


def test_help_lists_every_command_without_importing_mlflow():
    result = subprocess.run(
        [sys.executable, "-c", _HELP_THEN_MODULES], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    help_text, loaded = result.stdout.rsplit("LOADED", 1)
    for name, (_, summary) in COMMANDS.items():
        assert name in help_text and summary.split()[0] in help_text
    modules = loaded.split()
    assert not [m for m in modules if m.split(".")[0] == "mlflow"], "--help imported MLflow"
    assert not [m for m in modules if m.startswith("mlflow_ext.commands.")], "--help imported a command"
