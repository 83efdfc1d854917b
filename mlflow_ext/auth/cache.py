"""Per-worker cache of verified credentials.

Verifying a password costs a PBKDF2 hash (tens of milliseconds by design); verifying a token costs a
database lookup. The cache remembers a credential that verified, for a short TTL:

- keyed by an HMAC of the credential under a random per-process key, so neither a password nor a token
  (nor an offline-attackable digest of one) sits in memory as a key;
- bounded (least recently used entries go first) and short-lived (``MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS``);
- emptied whenever the auth database's generation counter moves: revocations, password and admin-flag
  changes, user deletions and new lockouts bump it, and every worker of every replica reads it (see
  ``authn.AuthState.refresh``), so a revoked credential stops working everywhere at once.

Failed verifications are never cached. A cached token still carries its expiry, checked on each hit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Verified:
    username: str
    method: str  # "password" or "token"
    stored_at: float
    # The generation counter the credential was verified under: an entry from an older generation is
    # ignored, even if it was stored after the cache was emptied (a verification racing a revocation).
    generation: int
    token_id: int | None = None
    expires_at_ms: int | None = None
    service_account: bool = False


class CredentialCache:
    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def key(self, *parts: str) -> bytes:
        material = "\x00".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def get(self, key: bytes, now: float) -> Verified | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now - entry.stored_at >= self.ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: bytes, entry: Verified) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
