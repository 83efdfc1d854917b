"""Authentication: the ``authorization_function`` MLflow's auth app calls for every request.

MLflow calls ``authenticate_request`` from its Flask ``before_request`` hook, from the FastAPI middleware
that guards the FastAPI-only routes (through a synthetic Flask request context), and again from many
validators and after-request handlers to learn the username. The result is therefore memoised per
request in ``flask.g``: a request is verified, counted and audited once.

Accepted credentials:

- ``Authorization: Basic`` with a username and password from MLflow's user table;
- ``Authorization: Bearer <token>`` with an access token (``MLFLOW_TRACKING_TOKEN`` on clients);
- with single sign-on on (``oidc``) and no ``Authorization`` header, the session cookie it set; a browser
  navigation without either is redirected to its login page. With ``MLFLOW_EXT_OIDC_SSO_ONLY``, passwords
  of accounts that are not service accounts are refused (before they are checked).

Answers: an ``Authorization`` for a verified user (MLflow then runs its permission checks), 401 with
``WWW-Authenticate: Basic`` (so browsers prompt) for missing, wrong, malformed or oversized credentials,
429 with ``Retry-After`` while the username or client address is locked out.

Only wrong passwords count toward the lockouts: a password can be guessed. An access token is 256
random bits, so a well-formed token that is unknown, revoked, expired or of a deleted user is answered
401 and audited, but never counted: a CI job retrying a revoked token must not lock out every client
behind its address. Malformed headers are not counted either (nothing was tried).

An unknown username is checked against a dummy hash made by the same function, with the same algorithm
and cost, as MLflow's stored hashes: it is answered as late as a wrong password, so the answer time
does not tell which usernames exist.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Response, g, request
from werkzeug.datastructures import Authorization
from werkzeug.security import check_password_hash, generate_password_hash

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import lockout, memo, oidc
from mlflow_ext.auth import tokens as token_format
from mlflow_ext.auth.audit import AuditLog
from mlflow_ext.auth.cache import CredentialCache, Verified
from mlflow_ext.auth.config import AuthSettings
from mlflow_ext.auth.memo import AuthMemo
from mlflow_ext.auth.store import ExtStore, now_ms

MAX_AUTHORIZATION_HEADER = 4096
MAX_USERNAME = 255
MAX_PASSWORD = 1024
# Last-used times are written at most this often per token and worker.
TOUCH_INTERVAL_SECONDS = 60.0
_MEMO = "_mlflow_ext_authorization"


def dummy_password_hash() -> str:
    """A hash of a random secret nobody knows, made as MLflow makes users' hashes (werkzeug's default)."""
    return generate_password_hash(secrets.token_urlsafe(32))


@dataclass
class AuthState:
    """Everything one worker's authentication needs; built by ``app.create_app``."""

    settings: AuthSettings
    ext: ExtStore
    users: Any  # mlflow.server.auth.store (MLflow's SqlAlchemyStore)
    audit: AuditLog
    cache: CredentialCache
    # Answers of MLflow's auth-store reads, valid for one generation (see ``memo``).
    memo: AuthMemo = field(default_factory=AuthMemo)
    generation: int = -1
    checked_at: float = float("-inf")
    locks: dict[str, int] = field(default_factory=dict)
    touched: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Checked for unknown usernames, so they cost what a wrong password costs.
    dummy_hash: str = field(default_factory=dummy_password_hash)

    def refresh(self) -> int:
        """Read the generation counter (at most once per interval); on a change, empty the caches.

        Revocations, password changes, deletions and lockouts all bump it in the same transaction as
        the change, so with the default interval of 0 a revoked credential is refused by every worker
        of every replica from the next request on.
        """
        interval = self.settings.revocation_check_seconds
        now = time.monotonic()
        if interval and now - self.checked_at < interval:
            return self.generation
        current = self.ext.generation()
        with self.lock:
            self.checked_at = now
            if current != self.generation:
                self.cache.clear()
                self.memo.reset(current)
                self.locks = self.ext.active_locks(now_ms())
                self.generation = current
        return current

    def locked_until(self, *keys: str) -> int | None:
        at = now_ms()
        until = [self.locks[k] for k in keys if self.locks.get(k, 0) > at]
        return max(until) if until else None


_STATE: AuthState | None = None


def install(state: AuthState) -> None:
    global _STATE
    _STATE = state


def state() -> AuthState:
    if _STATE is None:
        raise RuntimeError("mlflow-ext-auth is not initialised: serve it with --app-name mlflow-ext-auth")
    return _STATE


# --- responses --------------------------------------------------------------------------------


def _json_response(
    status: int, error_code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps({"error_code": error_code, "message": message})
    response = Response(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def unauthenticated(message: str = "You are not authenticated.") -> Response:
    return _json_response(
        401,
        "UNAUTHENTICATED",
        message + " Send Basic credentials or an access token (MLFLOW_TRACKING_TOKEN).",
        {"WWW-Authenticate": 'Basic realm="mlflow"'},
    )


def bad_credentials(message: str) -> Response:
    """Malformed or oversized credentials: a 401 challenge like any other unusable credential."""
    return unauthenticated(message)


def locked_out(until_ms: int) -> Response:
    retry_after = max(1, (until_ms - now_ms() + 999) // 1000)
    return _json_response(
        429,
        "REQUEST_LIMIT_EXCEEDED",
        f"Too many failed logins for this user or client address; retry in {retry_after} s.",
        {"Retry-After": str(retry_after)},
    )


# --- the authorization function ----------------------------------------------------------------


def current_address() -> str:
    return lockout.client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"), state().settings.trusted_proxies
    )


def authenticate_request() -> Authorization | Response:
    """MLflow's ``authorization_function``: zero arguments, reads ``flask.request``."""
    memo = g.get(_MEMO)
    if memo is None:
        memo = _authenticate()
        setattr(g, _MEMO, memo)
    return memo


def auth_method() -> str | None:
    """ "password" or "token" for the current request, once authenticated."""
    return g.get("mlflow_ext_auth_method")


def _authenticate() -> Authorization | Response:
    st = state()
    generation = st.refresh()
    # Read before anything else this request reads: the memo serves this request only answers read
    # under the same generation.
    memo.set_request_generation(generation)
    header = request.headers.get("Authorization")
    if header is None or not header.strip():
        # Single sign-on (``oidc``): a session cookie, or a browser sent to the login page.
        username = oidc.session_user()
        if username is not None:
            return _session(st, username, generation)
        if oidc.wants_login_page():
            return oidc.login_redirect()
        return unauthenticated()
    address = current_address()
    if len(header) > MAX_AUTHORIZATION_HEADER:
        st.audit.record("auth.failure", address=address, reason="oversized authorization header")
        return bad_credentials(f"Authorization header longer than {MAX_AUTHORIZATION_HEADER} characters.")
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return _bearer(st, credentials, address, generation)
    if scheme.lower() == "basic":
        parsed = _parse_basic(credentials)
        if isinstance(parsed, Response):
            st.audit.record("auth.failure", address=address, reason="malformed basic credentials")
            return parsed
        return _basic(st, parsed[0], parsed[1], address, generation)
    return unauthenticated(f"Unsupported authorization scheme {scheme[:20]!r}.")


def _parse_basic(credentials: str) -> tuple[str, str] | Response:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return bad_credentials("Malformed Basic credentials: expected base64 of username:password.")
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        return bad_credentials("Malformed Basic credentials: expected base64 of username:password.")
    if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        return bad_credentials(
            f"Credentials too long: usernames have at most {MAX_USERNAME} characters, "
            f"passwords at most {MAX_PASSWORD}."
        )
    return username, password


def _basic(
    st: AuthState, username: str, password: str, address: str, generation: int
) -> Authorization | Response:
    keys = (lockout.user_key(username), lockout.address_key(address))
    until = st.locked_until(*keys)
    if until is not None:
        st.audit.record("auth.locked_out", user=username, address=address, method="password")
        return locked_out(until)
    if st.settings.oidc_sso_only and oidc.refuses_password(username, st.ext.is_service_account(username)):
        # Checked before the password: the answer tells nothing about it.
        st.audit.record("auth.failure", user=username, address=address, reason="password refused: SSO only")
        return unauthenticated(
            "Passwords are refused for people: sign in through single sign-on at /auth/login, or use an "
            "access token."
        )
    now = time.monotonic()
    hit = _password_hit(st, username, password, generation, now)
    if hit is not None:
        return _accept(hit, username, password)

    if not _password_matches(st, username, password) or mlflow_internals.is_disabled_legacy_admin_login(
        username, password
    ):
        return _fail(st, address, username, "wrong password or unknown user")
    st.ext.clear_failures(lockout.user_key(username))
    entry = Verified(
        username=username,
        method="password",
        stored_at=now,
        generation=generation,
        service_account=st.ext.is_service_account(username),
    )
    if entry.service_account:
        st.audit.record("service_account.auth", user=username, address=address, method="password")
    st.cache.put(st.cache.key("password", username, password), entry)
    return _accept(entry, username, password)


def _password_matches(st: AuthState, username: str, password: str) -> bool:
    """MLflow's check; for a username that does not exist, the same work on the dummy hash."""
    if st.users.authenticate_user(username, password):
        return True
    if not st.users.has_user(username):
        check_password_hash(st.dummy_hash, password)
    return False


def _bearer(st: AuthState, token: str, address: str, generation: int) -> Authorization | Response:
    if len(token) > token_format.MAX_TOKEN_LENGTH or not token_format.looks_like_token(token):
        st.audit.record("auth.failure", address=address, reason="malformed token", method="token")
        return bad_credentials("Malformed access token: expected mlxt_ followed by 43 characters.")
    until = st.locked_until(lockout.address_key(address))
    if until is not None:
        st.audit.record("auth.locked_out", address=address, method="token")
        return locked_out(until)
    now = time.monotonic()
    at = now_ms()
    hit = _token_hit(st, token, generation, now, at)
    if hit is not None:
        _touch(st, hit, now, at)
        return _accept(hit, hit.username, None)
    record = st.ext.find_token(token)
    if record is None:
        return _refuse_token(st, address, "unknown token")
    status = record.status(at)
    if status != "active":
        return _refuse_token(st, address, f"{status} token", token_id=record.id, user=record.username)
    if not st.users.has_user(record.username):
        return _refuse_token(st, address, "token of a deleted user", token_id=record.id)
    entry = Verified(
        username=record.username,
        method="token",
        stored_at=now,
        generation=generation,
        token_id=record.id,
        expires_at_ms=record.expires_at,
        service_account=st.ext.is_service_account(record.username),
    )
    if entry.service_account:
        st.audit.record(
            "service_account.auth", user=record.username, address=address, method="token", token_id=record.id
        )
    st.cache.put(st.cache.key("token", token), entry)
    _touch(st, entry, now, at, force=True)
    return _accept(entry, record.username, None)


def _password_hit(
    st: AuthState, username: str, password: str, generation: int, now: float
) -> Verified | None:
    """The cache's entry for this password, verified under ``generation``."""
    hit = st.cache.get(st.cache.key("password", username, password), now)
    return hit if hit is not None and hit.generation == generation else None


def _token_hit(st: AuthState, token: str, generation: int, now: float, at_ms: int) -> Verified | None:
    """The cache's entry for this token, verified under ``generation`` and not expired at ``at_ms``."""
    hit = st.cache.get(st.cache.key("token", token), now)
    if hit is None or hit.generation != generation:
        return None
    return hit if hit.expires_at_ms is None or hit.expires_at_ms > at_ms else None


def cached_user(header: str | None, address: str, generation: int, touch: bool = True) -> Verified | None:
    """Whom ``_authenticate`` would accept this ``Authorization`` header for from the credential cache
    alone, under ``generation``: no database read, nothing audited or counted (with ``touch``, a due
    last-used time of a token is written, as on any hit). None whenever it would do more: verify, refuse,
    lock out, or ask single sign-on. Callers that get None hand the request to ``authenticate_request``."""
    if header is None or len(header) > MAX_AUTHORIZATION_HEADER:
        return None
    st = state()
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    now = time.monotonic()
    if scheme.lower() == "basic" and not st.settings.oidc_sso_only:
        parsed = _parse_basic(credentials)
        if isinstance(parsed, Response):
            return None
        username, password = parsed
        if st.locked_until(lockout.user_key(username), lockout.address_key(address)) is not None:
            return None
        return _password_hit(st, username, password, generation, now)
    if scheme.lower() == "bearer":
        if len(credentials) > token_format.MAX_TOKEN_LENGTH or not token_format.looks_like_token(credentials):
            return None
        if st.locked_until(lockout.address_key(address)) is not None:
            return None
        at = now_ms()
        hit = _token_hit(st, credentials, generation, now, at)
        if hit is not None and touch:
            _touch(st, hit, now, at)
        return hit
    return None


def _session(st: AuthState, username: str, generation: int) -> Authorization:
    """A single sign-on session cookie, already verified by ``oidc`` (signature, expiry, user exists)."""
    entry = Verified(username=username, method="session", stored_at=time.monotonic(), generation=generation)
    return _accept(entry, username, None)


def _touch(st: AuthState, entry: Verified, now: float, at_ms: int, force: bool = False) -> None:
    assert entry.token_id is not None
    last = st.touched.get(entry.token_id)
    if force or last is None or now - last >= TOUCH_INTERVAL_SECONDS:
        st.touched[entry.token_id] = now
        st.ext.touch_token(entry.token_id, at_ms)


def _accept(entry: Verified, username: str, password: str | None) -> Authorization:
    g.mlflow_ext_auth_method = entry.method
    data: dict[str, str | None] = {"username": username}
    if password is not None:
        data["password"] = password
    return Authorization("basic" if entry.method == "password" else "bearer", data)


def _refuse_token(
    st: AuthState, address: str, reason: str, token_id: int | None = None, user: str | None = None
) -> Response:
    """A well-formed token that is not (or no longer) valid: audited, never counted toward a lockout."""
    st.audit.record(
        "auth.failure", user=user, address=address, reason=reason, method="token", token_id=token_id
    )
    return unauthenticated("Invalid or revoked access token.")


def _fail(st: AuthState, address: str, username: str, reason: str) -> Response:
    """A wrong password (or unknown user): counted per address and per username, slowed, maybe locked."""
    s = st.settings
    window_ms, lock_ms, at = s.lockout_window_seconds * 1000, s.lockout_seconds * 1000, now_ms()
    st.audit.record("auth.failure", user=username, address=address, reason=reason, method="password")
    counted = [
        (lockout.address_key(address), s.lockout_address_failures),
        (lockout.user_key(username), s.lockout_user_failures),
    ]
    worst = 0
    for key, threshold in counted:
        outcome = st.ext.record_failure(key, threshold, window_ms, lock_ms, at)
        worst = max(worst, outcome.failures)
        if outcome.newly_locked and outcome.locked_until is not None:
            st.locks[key] = outcome.locked_until
            st.audit.record(
                "auth.lockout", key=key, address=address, user=username, locked_until=outcome.locked_until
            )
            return locked_out(outcome.locked_until)
    delay = lockout.slowdown_seconds(worst, s.slowdown_after)
    if delay:
        time.sleep(delay)
    return unauthenticated("Invalid credentials.")
