"""Brute-force protection: who a failed login is counted against, and how it is slowed.

Failed password logins are counted in the auth database (``mlflow_ext_login_failures``) per username and
per client address, so every worker and replica sees the same counts. Tokens are random, not guessable:
a refused token is audited but never counted (``authn``). After ``slowdown_after`` failures each
further failure is answered after a growing delay (0.25 s, 0.5 s, 1 s, capped at 2 s); at the threshold
the username or address is locked for ``lockout_seconds``: every attempt, even with the right password,
gets 429 with ``Retry-After``. A new lockout bumps the generation counter, so every worker drops its
cached credentials and reloads the active lockouts (checked in memory on every request).

The client address is the TCP peer, unless the peer is a trusted proxy (the platform's nginx on
loopback): then it is the right-most X-Forwarded-For entry that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

MAX_DELAY_SECONDS = 2.0


def user_key(username: str) -> str:
    return "user:" + username[:255]


def address_key(address: str) -> str:
    return "addr:" + address


def client_address(peer: str | None, forwarded_for: str | None, trusted: Iterable[str]) -> str:
    trusted_set = set(trusted)
    address = peer or "unknown"
    if address not in trusted_set or not forwarded_for:
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # a malformed header from the proxy: count against the proxy itself
        if hop not in trusted_set:
            return hop
    return address


def slowdown_seconds(failures: int, slowdown_after: int) -> float:
    if failures <= slowdown_after:
        return 0.0
    return float(min(MAX_DELAY_SECONDS, 0.25 * 2 ** (failures - slowdown_after - 1)))
