"""Access tokens: generation, format and hashing.

A token is ``mlxt_`` followed by 43 url-safe characters (32 random bytes). Only its SHA-256 is
stored. A fast hash is enough here (unlike passwords): the secret has 256 bits of entropy, so there is
no dictionary to try, and a fast hash lets the server find the token by an indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "mlxt_"  # noqa: S105 (a marker, not a secret)
_TOKEN_PATTERN = re.compile(r"mlxt_[A-Za-z0-9_-]{43}")
MAX_TOKEN_LENGTH = 64
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return bool(_TOKEN_PATTERN.fullmatch(value))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def display_prefix(token: str) -> str:
    """Enough of the token to recognise it in a listing, far too little to use it."""
    return token[: len(TOKEN_PREFIX) + 6]


def parse_duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s`` (or plain seconds) to seconds; raises ValueError."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION.fullmatch(text)
        if not match:
            raise ValueError("expected a duration such as 90d, 12h, 30m or 45s")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 1:
        raise ValueError("duration must be at least one second")
    return seconds
