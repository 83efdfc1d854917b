"""The settings mlflow-ext-auth reads, parsed with the registry's own parsers when the app is created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_ext import settings
from mlflow_ext.errors import ConfigError

AUTH_SETTINGS = (
    "MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS",
    "MLFLOW_EXT_AUTH_CACHE_MAX_ENTRIES",
    "MLFLOW_EXT_AUTH_REVOCATION_CHECK_SECONDS",
    "MLFLOW_EXT_AUTH_OPEN_CREATE",
    "MLFLOW_EXT_PROTECTED_ALIASES",
    "MLFLOW_EXT_PROMOTION_POLICY",
    "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES",
    "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES",
    "MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS",
    "MLFLOW_EXT_AUTH_LOCKOUT_SECONDS",
    "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER",
    "MLFLOW_EXT_AUTH_TRUSTED_PROXIES",
    "MLFLOW_EXT_AUDIT_LOG",
)


@dataclass(frozen=True)
class AuthSettings:
    cache_ttl_seconds: int
    cache_max_entries: int
    revocation_check_seconds: int
    open_create: tuple[str, ...]
    protected_aliases: tuple[str, ...]
    promotion_policy: str | None
    lockout_user_failures: int
    lockout_address_failures: int
    lockout_window_seconds: int
    lockout_seconds: int
    slowdown_after: int
    trusted_proxies: tuple[str, ...]
    audit_log: str


def parse(environ: Mapping[str, str]) -> dict[str, Any]:
    """Only the auth settings: the app may run under ``mlflow server`` started by hand."""
    values: dict[str, Any] = {}
    problems = []
    for name in AUTH_SETTINGS:
        setting = settings.BY_NAME[name]
        raw = environ.get(name, "") or (setting.default or "")
        try:
            values[name] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{name} {exc}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return values


def load(environ: Mapping[str, str]) -> AuthSettings:
    v = parse(environ)
    return AuthSettings(
        cache_ttl_seconds=v["MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS"],
        cache_max_entries=v["MLFLOW_EXT_AUTH_CACHE_MAX_ENTRIES"],
        revocation_check_seconds=v["MLFLOW_EXT_AUTH_REVOCATION_CHECK_SECONDS"],
        open_create=v["MLFLOW_EXT_AUTH_OPEN_CREATE"],
        protected_aliases=v["MLFLOW_EXT_PROTECTED_ALIASES"],
        promotion_policy=v["MLFLOW_EXT_PROMOTION_POLICY"],
        lockout_user_failures=v["MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES"],
        lockout_address_failures=v["MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES"],
        lockout_window_seconds=v["MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS"],
        lockout_seconds=v["MLFLOW_EXT_AUTH_LOCKOUT_SECONDS"],
        slowdown_after=v["MLFLOW_EXT_AUTH_SLOWDOWN_AFTER"],
        trusted_proxies=v["MLFLOW_EXT_AUTH_TRUSTED_PROXIES"],
        audit_log=v["MLFLOW_EXT_AUDIT_LOG"],
    )
