"""Single sign-on for people: OpenID Connect's authorization code flow with PKCE (S256).

Off unless ``MLFLOW_EXT_OIDC_ISSUER`` is set. The provider is discovered from
``<issuer>/.well-known/openid-configuration`` (read lazily, per worker, and again when a signing key is
unknown). Routes, answered before MLflow's authentication (they are how one gets credentials):

- ``GET /auth/login``: a small HTML page with a "Sign in with <provider>" link (no scripts, works under the
  proxy's CSP) and, unless SSO-only, a note that machines use access tokens;
- ``GET /auth/oidc/start``: a fresh ``state``, ``nonce`` and PKCE verifier in a short-lived signed cookie
  (path ``/auth/oidc``), then a redirect to the provider's authorization endpoint;
- ``GET /auth/oidc/callback``: ``state`` compared with the cookie's, the code exchanged with the verifier,
  the ID token verified by joserfc (signature against the provider's JWKS, asymmetric algorithms only,
  ``iss``, ``aud`` == client id, ``azp`` when several audiences, ``exp``, ``iat``, ``nonce``); then the
  user is created on first sign-in (random password nobody knows), the group mapping is applied and the
  session cookie set. Any failure answers an HTML error page and sets no session;
- ``GET|POST /auth/logout``: the session cookie cleared, then the provider's ``end_session_endpoint`` when
  it has one, else the login page.

The session cookie (``mlflow_ext_session``: Secure unless the request came over plain http to a loopback
address, HttpOnly, SameSite=Lax) holds the username and the time it was signed, signed with
``MLFLOW_FLASK_SERVER_SECRET_KEY`` (the secret every worker and replica already shares) under a salt of its
own. ``authn`` accepts it when a request carries no ``Authorization`` header; API clients with Basic or
Bearer credentials are unaffected. A write (not GET, HEAD, OPTIONS) that the browser marks as sent by another
site (``Sec-Fetch-Site``) is not authenticated by it.
A browser navigation without credentials (GET, ``Accept: text/html``) is redirected to the login page
instead of answered with the Basic challenge.

Accounts: the username is the ``MLFLOW_EXT_OIDC_USERNAME_CLAIM`` claim. The account is linked to the
provider's ``iss`` and ``sub`` by a row ``oidc_subject`` in the platform's rights table: an existing account
that is not linked to that subject (a local account of the same name) is refused, so a provider cannot
take over a local account such as the admin's. Groups (``MLFLOW_EXT_OIDC_GROUPS_CLAIM``) map to MLflow's
admin flag and permissions and the platform's rights (``mlflow_ext.auth.group_mapping``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mlflow_ext.auth import group_mapping, memo
from mlflow_ext.auth.config import AuthSettings
from mlflow_ext.errors import SignInRefused

SESSION_COOKIE = "mlflow_ext_session"
FLOW_COOKIE = "mlflow_ext_oidc_flow"
FLOW_PATH = "/auth/oidc"
FLOW_SECONDS = 600
LOGIN_PATH = "/auth/login"
START_PATH = "/auth/oidc/start"
CALLBACK_PATH = "/auth/oidc/callback"
LOGOUT_PATH = "/auth/logout"
LINK_RIGHT = "oidc_subject"
# A live session: a row per sign-in, resource the hash of the session id the cookie carries. Logout deletes
# it, so a copied cookie dies with the person's logout, not hours later when its signature expires.
SESSION_RIGHT = "oidc_session"
LEEWAY_SECONDS = 60
HTTP_TIMEOUT = 10.0
# Asymmetric signatures only: a provider's JWKS never holds a shared secret, and "none" is never accepted.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_REFRESH_SECONDS = 60.0
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LIVE_SESSIONS_REMEMBERED = 10_000


# --- ID tokens ----------------------------------------------------------------------------------


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: tuple[str, ...] = ALGORITHMS,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once its signature and claims are verified; raises SignInRefused otherwise."""
    try:
        decoded = jwt.decode(token, keys, algorithms=list(algorithms))
    except JoseError as exc:
        raise SignInRefused(f"the ID token's signature does not verify ({exc.error})") from None
    except ValueError:
        raise SignInRefused("the ID token is malformed") from None
    claims = dict(decoded.claims)
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise SignInRefused(
            f"the ID token is not valid for this server ({exc.error}: {exc.description})"
        ) from None
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise SignInRefused("the ID token was issued to another client (azp)")
    if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
        raise SignInRefused("the ID token's nonce does not match this sign-in")
    return claims


# --- the provider -------------------------------------------------------------------------------


@dataclass
class Provider:
    """The provider's metadata and keys, read on first use and kept per worker."""

    issuer: str
    fetch: Callable[[str], Any] = field(default=lambda url: _get_json(url))
    _metadata: dict[str, Any] | None = None
    _keys: KeySet | None = None
    _keys_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = self.fetch(url)
            if not isinstance(meta, dict) or meta.get("issuer") != self.issuer:
                raise SignInRefused("the provider's discovery document names another issuer", 502)
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(name), str):
                    raise SignInRefused(f"the provider's discovery document lacks {name}", 502)
            self._metadata = meta
        return self._metadata

    def keys(self, refresh: bool = False) -> KeySet:
        with self._lock:
            stale = refresh and time.monotonic() - self._keys_at >= JWKS_REFRESH_SECONDS
            if self._keys is None or stale:
                data = self.fetch(self.metadata()["jwks_uri"])
                try:
                    self._keys = KeySet.import_key_set(data)
                except (JoseError, ValueError, TypeError, KeyError):
                    raise SignInRefused("the provider's JWKS cannot be read", 502) from None
                self._keys_at = time.monotonic()
            return self._keys

    def algorithms(self) -> tuple[str, ...]:
        offered = self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        return tuple(a for a in ALGORITHMS if a in offered) or ("RS256",)


def _get_json(url: str) -> Any:
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SignInRefused(f"the identity provider cannot be reached ({type(exc).__name__})", 502) from None


# --- configuration and state --------------------------------------------------------------------


@dataclass
class OIDC:
    settings: AuthSettings
    provider: Provider
    client_secret: str | None
    secret_key: str
    mapping: group_mapping.GroupMapping
    users: Any  # MLflow's auth store
    ext: Any  # mlflow_ext.auth.store.ExtStore
    audit: Any  # mlflow_ext.auth.audit.AuditLog
    # (username, session id) -> the generation under which its row was last seen.
    live_sessions: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client_id(self) -> str:
        assert self.settings.oidc_client_id is not None
        return self.settings.oidc_client_id

    def serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret_key, salt=f"mlflow-ext-oidc-{purpose}")


_STATE: OIDC | None = None


def enabled() -> bool:
    return _STATE is not None


def _state() -> OIDC:
    if _STATE is None:
        raise RuntimeError("single sign-on is off")
    return _STATE


def read_client_secret(path: str | None) -> str | None:
    """The client secret from its file (never logged); None for a public client."""
    if path is None:
        return None
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"MLFLOW_EXT_OIDC_CLIENT_SECRET_FILE cannot be read ({exc.strerror})") from None
    if not value:
        raise ValueError("MLFLOW_EXT_OIDC_CLIENT_SECRET_FILE is empty")
    return value


# --- session cookie (used by authn) -------------------------------------------------------------


def session_user() -> str | None:
    """The username of a valid session cookie on the current request, or None."""
    st = _STATE
    if st is None:
        return None
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    if request.method not in SAFE_METHODS and request.headers.get("Sec-Fetch-Site") in (
        "cross-site",
        "same-site",
    ):
        # A write another site's page sent with the person's cookie (SameSite=Lax already keeps it off
        # cross-site POSTs; this also covers sibling subdomains): not the person's doing.
        return None
    cookie = _session_cookie(st, raw)
    if cookie is None:
        return None
    username, session_id = cookie
    if not _session_live(st, username, session_id) or not st.users.has_user(username):
        return None
    return username


def _session_cookie(st: OIDC, raw: str | None) -> tuple[str, str] | None:
    """(username, session id) of a genuine, unexpired session cookie, or None."""
    if not raw:
        return None
    try:
        data = st.serializer("session").loads(raw, max_age=st.settings.oidc_session_seconds)
    except BadSignature:
        return None
    username = data.get("u") if isinstance(data, dict) else None
    session_id = data.get("s") if isinstance(data, dict) else None
    if not isinstance(username, str) or not isinstance(session_id, str):
        return None
    return username, session_id


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session_live(st: OIDC, username: str, session_id: str) -> bool:
    """Whether the session's row is still there. A logout bumps the generation, so a live answer is
    remembered until the generation moves (every worker reads it per request or per revocation check)."""
    generation = memo.request_generation()
    key = (username, session_id)
    if generation is not None and st.live_sessions.get(key) == generation:
        return True
    live = bool(st.ext.has_right(username, SESSION_RIGHT, _session_key(session_id)))
    with st.lock:
        if len(st.live_sessions) >= LIVE_SESSIONS_REMEMBERED:
            st.live_sessions.clear()
        if live and generation is not None:
            st.live_sessions[key] = generation
        else:
            st.live_sessions.pop(key, None)
    return live


def _open_session(st: OIDC, username: str) -> str:
    """A new session id, recorded; the person's sessions older than a session's lifetime are dropped."""
    session_id = secrets.token_urlsafe(24)
    expired_before = (time.time() - st.settings.oidc_session_seconds) * 1000
    for row in st.ext.list_rights(username):
        if row["right"] == SESSION_RIGHT and row["created_at"] < expired_before:
            st.ext.revoke_right(username, SESSION_RIGHT, row["resource"])
    st.ext.grant_right(username, SESSION_RIGHT, _session_key(session_id), "oidc")
    return session_id


def _close_session() -> None:
    """Delete the row of the request's session, if its cookie is genuine."""
    st = _state()
    cookie = _session_cookie(st, request.cookies.get(SESSION_COOKIE))
    if cookie is not None:
        username, session_id = cookie
        st.ext.revoke_right(username, SESSION_RIGHT, _session_key(session_id))


def wants_login_page() -> bool:
    """A browser navigation without credentials, which the login page should answer."""
    if _STATE is None or request.method != "GET" or "Authorization" in request.headers:
        return False
    if request.path.startswith(("/api/", "/ajax-api/", "/auth/")):
        return False
    return "text/html" in request.headers.get("Accept", "")


def login_redirect() -> Response:
    target = request.full_path if request.query_string else request.path
    return _redirect(f"{LOGIN_PATH}?{urlencode({'next': target})}", code=302)


def refuses_password(username: str, service_account: bool) -> bool:
    """With SSO-only on, a person's password is refused (service accounts keep theirs)."""
    st = _STATE
    return st is not None and st.settings.oidc_sso_only and not service_account


# --- pages --------------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def _page(title: str, body: str, status: int = 200) -> Response:
    response = Response(
        _PAGE.format(title=html.escape(title), body=body), status=status, mimetype="text/html"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return response


def _redirect(location: str, code: int = 302) -> Response:
    response = Response(status=code)
    response.headers["Location"] = location
    return response


def _safe_next(value: str | None) -> str:
    """Only a path on this server: no scheme, no host, no protocol-relative URL (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page() -> Response:
    st = _state()
    target = _safe_next(request.args.get("next"))
    link = f"{START_PATH}?{urlencode({'next': target})}"
    name = html.escape(st.settings.oidc_provider_name)
    body = f'<p><a href="{html.escape(link)}">Sign in with {name}</a></p>'
    if not st.settings.oidc_sso_only:
        body += (
            "<p>Programs and pipelines do not sign in here: they send an access token "
            "(MLFLOW_TRACKING_TOKEN) or Basic credentials.</p>"
        )
    else:
        body += "<p>Programs and pipelines send an access token (MLFLOW_TRACKING_TOKEN).</p>"
    return _page("Sign in to MLflow", body)


def _error_page(message: str, status: int) -> Response:
    body = f'<p>Sign-in failed: {html.escape(message)}.</p><p><a href="{LOGIN_PATH}">Try again</a></p>'
    response = _page("Sign-in failed", body, status)
    _clear(response, FLOW_COOKIE, FLOW_PATH)
    return response


# --- the flow -----------------------------------------------------------------------------------


def _secure() -> bool:
    """Cookies are Secure, except over plain http to a loopback address (local development, tests)."""
    return request.scheme == "https" or request.host.split(":")[0] not in ("127.0.0.1", "localhost", "[::1]")


def _clear(response: Response, name: str, path: str) -> None:
    response.delete_cookie(name, path=path, secure=_secure(), httponly=True, samesite="Lax")


def _redirect_uri() -> str:
    st = _state()
    return st.settings.oidc_redirect_uri or request.host_url.rstrip("/") + CALLBACK_PATH


def _start() -> Response:
    st = _state()
    meta = st.provider.metadata()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    flow = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": verifier,
        "next": _safe_next(request.args.get("next")),
        "redirect_uri": _redirect_uri(),
    }
    scopes = ["openid", *(s for s in st.settings.oidc_scopes if s != "openid")]
    query = {
        "response_type": "code",
        "client_id": st.client_id,
        "redirect_uri": flow["redirect_uri"],
        "scope": " ".join(scopes),
        "state": flow["state"],
        "nonce": flow["nonce"],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    response = _redirect(f"{meta['authorization_endpoint']}?{urlencode(query)}", code=302)
    response.set_cookie(
        FLOW_COOKIE,
        st.serializer("flow").dumps(flow),
        max_age=FLOW_SECONDS,
        path=FLOW_PATH,
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _exchange(st: OIDC, code: str, flow: Mapping[str, str]) -> dict[str, Any]:
    meta = st.provider.metadata()
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow["redirect_uri"],
        "code_verifier": flow["verifier"],
    }
    auth = None
    methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if st.client_secret is None:
        body["client_id"] = st.client_id
    elif "client_secret_basic" in methods:
        auth = (st.client_id, st.client_secret)
    else:
        body["client_id"], body["client_secret"] = st.client_id, st.client_secret
    try:
        response = requests.post(
            meta["token_endpoint"],
            data=body,
            auth=auth,
            timeout=HTTP_TIMEOUT,
            headers={"Accept": "application/json"},
        )
    except requests.RequestException as exc:
        raise SignInRefused(f"the identity provider cannot be reached ({type(exc).__name__})", 502) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise SignInRefused(f"the provider refused the authorization code ({error or response.status_code})")
    if not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
        raise SignInRefused("the provider answered without an ID token", 502)
    return answer


def _verify(st: OIDC, token: str, nonce: str) -> dict[str, Any]:
    kwargs = {
        "issuer": st.provider.issuer,
        "client_id": st.client_id,
        "nonce": nonce,
        "algorithms": st.provider.algorithms(),
    }
    try:
        return verify_id_token(token, st.provider.keys(), **kwargs)  # type: ignore[arg-type]
    except SignInRefused:
        # A key the provider rotated in since the JWKS was read: read it again (rate-limited), once.
        return verify_id_token(token, st.provider.keys(refresh=True), **kwargs)  # type: ignore[arg-type]


def _callback() -> Response:
    st = _state()
    address = request.remote_addr
    raw_flow = request.cookies.get(FLOW_COOKIE)
    if not raw_flow:
        raise SignInRefused("no sign-in is under way in this browser (start again from the login page)")
    try:
        flow = st.serializer("flow").loads(raw_flow, max_age=FLOW_SECONDS)
    except BadSignature:
        raise SignInRefused("the sign-in expired or was tampered with (start again)") from None
    if "error" in request.args:
        raise SignInRefused(f"the provider answered {request.args.get('error', '')[:80]!r}")
    state_param = request.args.get("state", "")
    if not hmac.compare_digest(state_param.encode(), str(flow.get("state", "")).encode()):
        st.audit.record("oidc.failure", address=address, reason="state mismatch")
        raise SignInRefused("the sign-in's state does not match (start again)")
    code = request.args.get("code")
    if not code:
        raise SignInRefused("the provider sent no authorization code")
    answer = _exchange(st, code, flow)
    try:
        claims = _verify(st, answer["id_token"], flow["nonce"])
    except SignInRefused as exc:
        st.audit.record("oidc.failure", address=address, reason=str(exc))
        raise
    username = _username(st, claims)
    groups = _groups(st, claims)
    _ensure_user(st, username, claims)
    applied = group_mapping.apply(st.mapping, groups, username, st.users, st.ext)
    st.audit.record(
        "oidc.login",
        user=username,
        address=address,
        groups=sorted(groups),
        admin=applied.admin,
        sub=claims["sub"],
    )
    response = _redirect(_safe_next(flow.get("next")), code=302)
    _clear(response, FLOW_COOKIE, FLOW_PATH)
    response.set_cookie(
        SESSION_COOKIE,
        st.serializer("session").dumps({"u": username, "s": _open_session(st, username)}),
        max_age=st.settings.oidc_session_seconds,
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _username(st: OIDC, claims: Mapping[str, Any]) -> str:
    for name in (st.settings.oidc_username_claim, "preferred_username", "email", "sub"):
        value = claims.get(name)
        if (
            isinstance(value, str)
            and value
            and len(value) <= 255
            and value.isprintable()
            and ":" not in value
        ):
            return value
    raise SignInRefused("the ID token names no usable username")


def _groups(st: OIDC, claims: Mapping[str, Any]) -> set[str]:
    value = claims.get(st.settings.oidc_groups_claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {g for g in value if isinstance(g, str)}
    return set()


def _ensure_user(st: OIDC, username: str, claims: Mapping[str, Any]) -> None:
    """Create the account on first sign-in, linked to the provider's subject; refuse an unlinked one."""
    subject = f"{st.provider.issuer}#{claims['sub']}"
    if not st.users.has_user(username):
        # A password nobody knows: the account signs in through the provider (or with tokens).
        st.users.create_user(username, secrets.token_urlsafe(32) + "Aa1!")
        st.ext.grant_right(username, LINK_RIGHT, subject, "oidc")
        st.audit.record("user.created", actor="oidc", user=username, address=request.remote_addr)
        return
    linked = [r["resource"] for r in st.ext.list_rights(username) if r["right"] == LINK_RIGHT]
    if subject not in linked:
        st.audit.record(
            "oidc.failure", user=username, address=request.remote_addr, reason="account not linked"
        )
        raise SignInRefused(
            f"an account named {username!r} exists and is not linked to this identity; an admin must "
            "rename or delete it first",
            403,
        )


def _logout() -> Response:
    st = _state()
    _close_session()
    target = request.host_url.rstrip("/") + LOGIN_PATH
    end_session = None
    with contextlib.suppress(SignInRefused):  # the provider is down: still clear our session
        end_session = st.provider.metadata().get("end_session_endpoint")
    if isinstance(end_session, str):
        query = urlencode({"client_id": st.client_id, "post_logout_redirect_uri": target})
        response = _redirect(f"{end_session}?{query}", code=302)
    else:
        response = _redirect(LOGIN_PATH, code=302)
    _clear(response, SESSION_COOKIE, "/")
    response.headers["Cache-Control"] = "no-store"
    return response


_ROUTES: dict[tuple[str, str], Callable[[], Response]] = {
    (LOGIN_PATH, "GET"): _login_page,
    (START_PATH, "GET"): _start,
    (CALLBACK_PATH, "GET"): _callback,
    (LOGOUT_PATH, "GET"): _logout,
    (LOGOUT_PATH, "POST"): _logout,
}


def _before_request() -> Response | None:
    """Answers the sign-in routes ahead of MLflow's authentication, which they must not need."""
    if not request.path.startswith("/auth/"):
        return None
    handler = _ROUTES.get((request.path, request.method))
    if handler is None:
        return _page("Not found", "<p>No such page.</p>", 404)
    try:
        return handler()
    except SignInRefused as exc:
        return _error_page(str(exc), exc.status)


def install(flask_app: Flask, settings: AuthSettings, users: Any, ext: Any, audit: Any) -> bool:
    """Turn single sign-on on when an issuer is configured; False (and nothing installed) otherwise."""
    global _STATE
    if not settings.oidc_issuer:
        _STATE = None
        return False
    if not settings.oidc_client_id:
        raise ValueError("MLFLOW_EXT_OIDC_CLIENT_ID is required with MLFLOW_EXT_OIDC_ISSUER")
    secret_key = flask_app.secret_key
    if not secret_key:
        raise ValueError("MLFLOW_FLASK_SERVER_SECRET_KEY is required for single sign-on sessions")
    _STATE = OIDC(
        settings=settings,
        provider=Provider(settings.oidc_issuer),
        client_secret=read_client_secret(settings.oidc_client_secret_file),
        secret_key=str(secret_key),
        mapping=group_mapping.load(settings.oidc_group_mapping),
        users=users,
        ext=ext,
        audit=audit,
    )
    # First of all before-request hooks: the sign-in routes need no credentials.
    flask_app.before_request_funcs.setdefault(None, []).insert(0, _before_request)
    return True
