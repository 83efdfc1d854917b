"""Drift guards: each role's meta/argument_specs.yml mirrors its defaults/main.yml, the role's public face,
and its README's Role Variables table lists exactly the argument spec's variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _documented(role: str) -> dict[str, dict]:
    """Options of every entry point; entry points other than main may only narrow main's set."""
    specs = _load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    return options


def test_every_role_is_checked():
    assert {"postgresql", "object_store", "mlflow_server", "proxy", "python_service"} <= set(ROLE_NAMES)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_argument_specs_mirror_defaults(role):
    defaults = _load(ROLES / role / "defaults" / "main.yml")
    options = _documented(role)
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"{role}: defaults missing from meta/argument_specs.yml: {undocumented}"
    for name, value in defaults.items():
        spec = options[name]
        assert "default" in spec, f"{role}: {name} default missing from argument_specs"
        assert spec["default"] == value, f"{role}: {name} default differs from argument_specs"
        assert spec.get("description"), f"{role}: {name} is not described"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_public_variables_carry_the_role_prefix(role):
    defaults = _load(ROLES / role / "defaults" / "main.yml")
    strays = [name for name in defaults if not name.startswith(role + "_")]
    assert not strays, f"{role}: variables without the '{role}_' prefix: {strays}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_required_options_have_no_default(role):
    for name, spec in _documented(role).items():
        if spec.get("required"):
            defaults = _load(ROLES / role / "defaults" / "main.yml")
            assert name not in defaults, f"{role}: required option {name} must not have a default"


# A README's "Role Variables" section is a table with one row per variable: | `name` | default | meaning |
_VARIABLE_CELL = re.compile(r"`([a-z][a-z0-9_]*)`")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # Markdown escapes a pipe inside a cell as \|
_RULE_CELL = re.compile(r":?-+:?")


def _readme_sections(role: str) -> dict[str, list[str]]:
    """The README's level-2 sections by lower-cased title; code blocks are kept, marked by their fences."""
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    fenced = False
    for line in (ROLES / role / "README.md").read_text().splitlines():
        fenced = fenced != line.startswith("```")
        if line.startswith("## ") and not fenced:
            lines = sections.setdefault(line[3:].strip().lower(), [])
        else:
            lines.append(line)
    return sections


def _readme_rows(role: str) -> list[list[str]]:
    """Cells of the Role Variables tables' rows, without header and rule rows and without code blocks."""
    section = _readme_sections(role).get("role variables")
    assert section is not None, f"{role}: README has no '## Role Variables' section"
    rows: list[list[str]] = []
    fenced = False
    for line in section:
        fenced = fenced != line.startswith("```")
        if fenced or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in _CELL_SEPARATOR.split(line.strip().strip("|"))]
        if all(_RULE_CELL.fullmatch(cell) for cell in cells):
            del rows[-1:]  # the header row above the rule
        else:
            rows.append(cells)
    return rows


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_readme_lists_the_argument_spec(role):
    listed = [name for cells in _readme_rows(role) for name in _VARIABLE_CELL.findall(cells[0])]
    twice = sorted({name for name in listed if listed.count(name) > 1})
    missing = sorted(set(_documented(role)) - set(listed))
    extra = sorted(set(listed) - set(_documented(role)))
    assert not (twice or missing or extra), (
        f"{role}: README Role Variables differ from meta/argument_specs.yml: "
        f"missing {missing}, not in the spec {extra}, listed twice {twice}"
    )


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_readme_rows_give_one_variable_its_default_and_meaning(role):
    for cells in _readme_rows(role):
        assert len(cells) == 3 and all(cells) and _VARIABLE_CELL.fullmatch(cells[0]), (
            f"{role}: a README Role Variables row is | `variable` | default | meaning |, not {cells}"
        )


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_readme_has_an_example_playbook(role):
    example = _readme_sections(role).get("example playbook", [])
    assert any(line.startswith("```yaml") for line in example), (
        f"{role}: README has no '## Example Playbook' section with a YAML block"
    )
