"""What one setting is, and the parsers that turn its raw text into a value.

A parser raises ValueError with a message that completes the sentence "<VARIABLE> ...", and never
repeats the value: secrets pass through the same parsers.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Scope = Literal["server", "client", "bridge"]

# Docker and systemd parse env files differently; values free of these parse the same in both.
UNSAFE_ENV_CHARS = re.compile(r"[\s\"'$#`\\]")


def text(value: str) -> str:
    return value


def integer(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def seconds(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number of seconds") from None
        if not number >= minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return number

    return parse


def secret_text(value: str) -> str:
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def database_uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError("must be a database URI such as postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow")
    if scheme in ("postgresql", "postgres"):
        raise ValueError(
            "must name the driver: use postgresql+psycopg2:// "
            "(SQLAlchemy would pick psycopg 3, not installed)"
        )
    if scheme not in ("postgresql+psycopg2", "sqlite"):
        raise ValueError("must use postgresql+psycopg2:// or sqlite://")
    userinfo = rest.split("@", 1)[0] if "@" in rest else ""
    if ":" in userinfo:
        raise ValueError("must not carry a password: put it in PGPASSFILE (or PGPASSWORD) instead")
    return value


def s3_uri(value: str) -> str:
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", value):
        raise ValueError("must be an S3 URI such as s3://mlflow-artifacts/")
    return value


def http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", value):
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8333")
    return value


def issuer_url(value: str) -> str:
    """An http(s) URL that may carry a path (an OpenID issuer such as https://host/realms/ml)."""
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError("must be an http(s) URL such as https://sso.example.com/realms/ml")
    return value


def name_list(value: str) -> tuple[str, ...]:
    """Comma-separated names, blanks around them and empty parts dropped (every list setting's parts)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def password(value: str) -> str:
    if len(value) < 12:
        raise ValueError("must be at least 12 characters")
    return value


def fernet_key(value: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError):
        raise ValueError("must be a Fernet key (url-safe base64 of 32 bytes)") from None
    if len(raw) != 32:
        raise ValueError("must be a Fernet key (url-safe base64 of 32 bytes)")
    return value


def subset(*choices: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names, each one of ``choices``; ``none`` means the empty selection."""

    def parse(value: str) -> tuple[str, ...]:
        if value.strip().lower() == "none":
            return ()
        names = tuple(dict.fromkeys(part.lower() for part in name_list(value)))
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise ValueError(f"must be a comma-separated subset of {', '.join(choices)} (or none)")
        return names

    return parse


def alias_names(value: str) -> tuple[str, ...]:
    if value.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(name_list(value)))
    if not names or any(not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", name) for name in names):
        raise ValueError("must be comma-separated alias names (letters, digits, '_', '-') or none")
    return names


def address_list(value: str) -> tuple[str, ...]:
    if value.strip().lower() == "none":
        return ()
    try:
        return tuple(str(ipaddress.ip_address(part)) for part in name_list(value))
    except ValueError:
        raise ValueError("must be comma-separated IP addresses or none") from None


def audit_destination(value: str) -> str:
    if value != "stderr" and not value.startswith("/"):
        raise ValueError("must be stderr or an absolute file path")
    return value


def optional_absolute_path(value: str) -> str | None:
    """An absolute path, or None when empty. What the file holds is checked by its reader."""
    if not value:
        return None
    if not value.startswith("/"):
        raise ValueError("must be an absolute file path")
    return value


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


def workers(value: str) -> int:
    return integer(1)(value)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, meaning, type and default."""

    name: str
    doc: str
    example: str
    parse: Callable[[str], Any] = text
    default: str | None = None
    secret: bool = False
    required: bool = False
    # Required only when the auth app is on (MLFLOW_EXT_APP_NAME is not "none").
    required_with_auth: bool = False
    scope: Scope = "server"
