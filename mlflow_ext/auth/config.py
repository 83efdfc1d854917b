"""The settings mlflow-ext-auth reads, built from the registry when the app is created.

Only these: the app may run under ``mlflow server`` started by hand, without the entrypoint's checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow_ext import settings


@dataclass(frozen=True)
class AuthSettings:
    cache_ttl_seconds: int = settings.field("MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS")
    cache_max_entries: int = settings.field("MLFLOW_EXT_AUTH_CACHE_MAX_ENTRIES")
    revocation_check_seconds: int = settings.field("MLFLOW_EXT_AUTH_REVOCATION_CHECK_SECONDS")
    open_create: tuple[str, ...] = settings.field("MLFLOW_EXT_AUTH_OPEN_CREATE")
    protected_aliases: tuple[str, ...] = settings.field("MLFLOW_EXT_PROTECTED_ALIASES")
    promotion_policy: str | None = settings.field("MLFLOW_EXT_PROMOTION_POLICY")
    lockout_user_failures: int = settings.field("MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES")
    lockout_address_failures: int = settings.field("MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES")
    lockout_window_seconds: int = settings.field("MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS")
    lockout_seconds: int = settings.field("MLFLOW_EXT_AUTH_LOCKOUT_SECONDS")
    slowdown_after: int = settings.field("MLFLOW_EXT_AUTH_SLOWDOWN_AFTER")
    trusted_proxies: tuple[str, ...] = settings.field("MLFLOW_EXT_AUTH_TRUSTED_PROXIES")
    audit_log: str = settings.field("MLFLOW_EXT_AUDIT_LOG")
    oidc_issuer: str | None = settings.field("MLFLOW_EXT_OIDC_ISSUER")
    oidc_client_id: str | None = settings.field("MLFLOW_EXT_OIDC_CLIENT_ID")
    oidc_client_secret_file: str | None = settings.field("MLFLOW_EXT_OIDC_CLIENT_SECRET_FILE")
    oidc_provider_name: str = settings.field("MLFLOW_EXT_OIDC_PROVIDER_NAME")
    oidc_scopes: tuple[str, ...] = settings.field("MLFLOW_EXT_OIDC_SCOPES")
    oidc_groups_claim: str = settings.field("MLFLOW_EXT_OIDC_GROUPS_CLAIM")
    oidc_username_claim: str = settings.field("MLFLOW_EXT_OIDC_USERNAME_CLAIM")
    oidc_group_mapping: str | None = settings.field("MLFLOW_EXT_OIDC_GROUP_MAPPING")
    oidc_sso_only: bool = settings.field("MLFLOW_EXT_OIDC_SSO_ONLY")
    oidc_session_seconds: int = settings.field("MLFLOW_EXT_OIDC_SESSION_SECONDS")
    oidc_redirect_uri: str | None = settings.field("MLFLOW_EXT_OIDC_REDIRECT_URI")


def load(environ: Mapping[str, str]) -> AuthSettings:
    return settings.build(AuthSettings, environ)
