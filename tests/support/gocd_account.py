"""The `gocd` service account as the mlflow_server role provisions it, for tests that play its agents.

The role's default entry of `mlflow_server_service_accounts` (with `mlflow_server_gocd_rights` and
`mlflow_server_gocd_models`) is read from the role's defaults and turned into the `mlflow-ext tokens
ensure-service-account` command line of tasks/accounts.yml; the server's protected aliases, default
permission and promotion policy come from the role's defaults too.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.services import VENV_BIN

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "mlflow_server"


def role_defaults() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def _resolved(value: Any, defaults: dict[str, Any]) -> Any:
    """A default that is just another role variable ("{{ name }}") takes that variable's default."""
    if isinstance(value, str) and (match := re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", value)):
        return defaults[match.group(1)]
    return value


def role_gocd_account() -> dict[str, Any]:
    """The role's default gocd entry, its variables resolved (the token file is the test's own)."""
    defaults = role_defaults()
    (entry,) = [e for e in defaults["mlflow_server_service_accounts"] if e["username"] == "gocd"]
    return {key: _resolved(value, defaults) for key, value in entry.items()}


def role_server_env(workdir: Path) -> dict[str, str]:
    """The server settings the role sets from its defaults that decide what gocd may do: the promotion
    policy (written into ``workdir``), the protected aliases and the default permission."""
    defaults = role_defaults()
    policy = workdir / "promotion-policy.yaml"
    policy.write_text(yaml.safe_dump(defaults["mlflow_server_promotion_policy"]))
    return {
        "MLFLOW_EXT_PROMOTION_POLICY": str(policy),
        "MLFLOW_EXT_PROTECTED_ALIASES": ",".join(defaults["mlflow_server_protected_aliases"]),
        "MLFLOW_EXT_AUTH_DEFAULT_PERMISSION": defaults["mlflow_server_auth_default_permission"],
    }


def provision_argv(account: dict[str, Any], env_file: Path, token_file: Path) -> list[str]:
    """The command line of tasks/accounts.yml for one entry of mlflow_server_service_accounts."""
    return (
        [str(VENV_BIN / "mlflow-ext"), "tokens", "ensure-service-account", "--env-file", str(env_file)]
        + ["--username", account["username"], "--token-name", account["token_name"]]
        + ["--token-file", str(token_file), "--output", "json"]
        + [f"--right={right}" for right in account.get("rights", [])]
        + [f"--promote-model={model}" for model in account.get("promote_models", [])]
    )


def provision(argv: list[str]) -> dict[str, Any]:
    """Run the provisioning command; its JSON report."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
