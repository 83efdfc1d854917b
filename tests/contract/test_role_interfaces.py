"""Drift guard: each role's meta/argument_specs.yml mirrors its defaults/main.yml, the role's public face."""

from __future__ import annotations

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
