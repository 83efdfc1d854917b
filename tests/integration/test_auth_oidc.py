"""Single sign-on against a real OpenID Provider (oidc-provider 9.x) and a real server (mlflow-ext-auth).

The provider runs on a port reserved before the platform starts, so the server's issuer is known; the
provider is started once the server's port (its redirect URI) is known. People sign in through the
provider's own login and consent forms, driven by ``requests``; the session cookie then works on the UI
and the REST API, groups map to rights (tests/support/oidc: alice in team-fraud, ann in ml-admins, eve
in a group the mapping does not know).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from mlflow_ext.auth import oidc
from mlflow_ext.errors import SignInRefused
from tests.integration.test_auth_tokens import Api, admin, new_token, new_user
from tests.support.oidc_provider import Client, Provider, forms, reserve_port, running_provider, sign_in
from tests.support.services import MlflowServer, Platform, running_platform

pytestmark = pytest.mark.integration

TIMEOUT = 30
CLIENT_ID = "mlflow"
OTHER_CLIENT = "other-app"
OTHER_REDIRECT = (
    "http://127.0.0.1:9/other/callback"  # never reached: the test reads the code off the redirect
)
OTHER_SECRET = secrets.token_urlsafe(24)
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {"groups": ["team-fraud", "staff"]},
    "ann": {"groups": ["ml-admins"]},
    "eve": {"groups": ["unknown-group"]},
    "admin": {"groups": []},
}
MAPPING = """\
groups:
  ml-admins:
    admin: true
  team-fraud:
    permissions:
      - {resource_type: registered_model, name: "fraud-*", permission: EDIT}
    rights:
      - {right: promote, model: "fraud-*"}
"""
MODELS = ("fraud-detector", "fraud-scorer", "churn")


@dataclass
class SSO:
    platform: Platform
    provider: Provider

    @property
    def url(self) -> str:
        return self.platform.tracking_uri

    def start_url(self, target: str = "/") -> str:
        return f"{self.url}{oidc.START_PATH}?{urlencode({'next': target})}"


@pytest.fixture(scope="module")
def sso() -> Iterator[SSO]:
    work = Path(tempfile.mkdtemp(prefix="oidctest-"))
    try:
        port = reserve_port()
        secret = secrets.token_urlsafe(24)
        (work / "client_secret").write_text(secret + "\n")
        (work / "groups.yaml").write_text(MAPPING)
        extra = {
            "MLFLOW_EXT_OIDC_ISSUER": f"http://127.0.0.1:{port}",
            "MLFLOW_EXT_OIDC_CLIENT_ID": CLIENT_ID,
            "MLFLOW_EXT_OIDC_CLIENT_SECRET_FILE": str(work / "client_secret"),
            "MLFLOW_EXT_OIDC_GROUP_MAPPING": str(work / "groups.yaml"),
            "MLFLOW_EXT_OIDC_PROVIDER_NAME": "TestIdP",
        }
        with running_platform(extra_env=extra) as platform:
            url = platform.tracking_uri
            clients = [
                Client(CLIENT_ID, secret, (url + oidc.CALLBACK_PATH,), (url + oidc.LOGIN_PATH,)),
                Client(OTHER_CLIENT, OTHER_SECRET, (OTHER_REDIRECT,)),
            ]
            with running_provider(port, clients, ACCOUNTS, work) as provider:
                for name in MODELS:  # the mapping's patterns match the models that exist at sign-in
                    admin(platform).ok("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
                yield SSO(platform, provider)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def browser() -> requests.Session:
    session = requests.Session()
    session.headers["Accept"] = "text/html,application/xhtml+xml"
    return session


def signed_in(sso: SSO, login: str) -> requests.Session:
    session = browser()
    landed = sign_in(session, sso.start_url("/"), login)
    assert landed.status_code == 200, landed.text[:500]
    assert landed.url == sso.url + "/", landed.url
    assert session.cookies.get(oidc.SESSION_COOKIE)
    return session


def api(
    session: requests.Session, sso: SSO, method: str, path: str, payload: Any = None
) -> requests.Response:
    kwargs: dict[str, Any] = {"timeout": TIMEOUT, "headers": {"Accept": "application/json"}}
    if method == "GET":
        kwargs["params"] = payload
    else:
        kwargs["json"] = payload or {}
    return session.request(method, sso.url + path, **kwargs)


def set_model_tag(session: requests.Session, sso: SSO, model: str) -> requests.Response:
    payload = {"name": model, "key": "owner", "value": "x"}
    return api(session, sso, "POST", "/api/2.0/mlflow/registered-models/set-tag", payload)


def rights_of(sso: SSO, username: str) -> set[tuple[str, str]]:
    answer = admin(sso.platform).ok("GET", "/api/2.0/mlflow-ext/rights/list", {"username": username})
    sign_in_rows = (oidc.LINK_RIGHT, oidc.SESSION_RIGHT)
    return {(r["right"], r["resource"]) for r in answer["rights"] if r["right"] not in sign_in_rows}


def until_callback(session: requests.Session, sso: SSO, login: str) -> str:
    """Sign in at the provider, but stop at the redirect back to the server: the callback URL."""
    response = session.get(sso.start_url("/"), timeout=TIMEOUT, allow_redirects=False)
    for _ in range(20):
        location = response.headers.get("Location")
        if location:
            target = urljoin(response.url, location)
            if target.startswith(sso.url + oidc.CALLBACK_PATH):
                return target
            response = session.get(target, timeout=TIMEOUT, allow_redirects=False)
            continue
        prompts = [(a, f) for a, f in forms(response.text) if f.get("prompt") in ("login", "consent")]
        assert prompts, response.text[:500]
        action, fields = prompts[0]
        if fields["prompt"] == "login":
            fields |= {"login": login, "password": "any"}
        response = session.post(
            urljoin(response.url, action), data=fields, timeout=TIMEOUT, allow_redirects=False
        )
    raise AssertionError("no redirect to the callback")


def refused(response: requests.Response, words: str) -> None:
    assert response.status_code in (400, 403, 502), (response.status_code, response.text[:300])
    assert words in response.text, response.text[:500]
    assert oidc.SESSION_COOKIE not in response.headers.get("Set-Cookie", "").split("=")[0]
    assert "Sign-in failed" in response.text


# --- browsers and API clients without credentials ------------------------------------------------


def test_a_browser_without_credentials_is_sent_to_the_login_page(sso):
    response = browser().get(sso.url + "/", timeout=TIMEOUT, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=%2F"
    page = browser().get(sso.url + response.headers["Location"], timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Sign in with TestIdP" in page.text
    assert "access token" in page.text  # machines: tokens (not SSO-only here)
    assert "<script" not in page.text and "style=" not in page.text  # works under a strict CSP
    assert 'href="/auth/oidc/start?next=%2F"' in page.text


def test_api_clients_keep_the_basic_challenge(sso):
    response = requests.get(sso.url + "/api/2.0/mlflow/experiments/search", timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    html_api = browser().get(sso.url + "/api/2.0/mlflow/experiments/search", timeout=TIMEOUT)
    assert html_api.status_code == 401  # an API path never redirects
    username, password = new_user(sso.platform, "basic")
    assert Api(sso.url, username, password).call("GET", "/api/2.0/mlflow/users/current").status_code == 200
    _, token = new_token(sso.platform, username)
    assert Api(sso.url, token=token).call("GET", "/api/2.0/mlflow/users/current").status_code == 200


def test_behind_the_proxy_the_redirect_uri_is_the_public_https_one(sso):
    # What nginx sends (loopback is a trusted proxy for uvicorn): the public scheme and host.
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3", "Host": "localhost"}
    response = requests.get(sso.start_url("/"), headers=headers, timeout=TIMEOUT, allow_redirects=False)
    assert response.status_code == 302
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["redirect_uri"] == ["https://localhost/auth/oidc/callback"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    flow = [c for c in response.raw.headers.getlist("Set-Cookie") if c.startswith(oidc.FLOW_COOKIE)]
    assert "Secure" in flow[0] and "HttpOnly" in flow[0] and "Path=/auth/oidc" in flow[0]


def test_login_page_refuses_open_redirects(sso):
    page = browser().get(sso.url + "/auth/login?next=//evil.example.com/x", timeout=TIMEOUT)
    assert "evil.example.com" not in page.text


# --- the code flow ------------------------------------------------------------------------------


def test_sign_in_creates_the_user_and_maps_groups_to_rights(sso):
    session = browser()
    landed = sign_in(session, sso.start_url("/"), "alice")
    assert landed.status_code == 200 and landed.url == sso.url + "/"
    callback = [r for r in landed.history if urlparse(r.url).path == oidc.CALLBACK_PATH]
    assert len(callback) == 1 and callback[0].status_code == 302
    cookie = [c for c in callback[0].raw.headers.getlist("Set-Cookie") if c.startswith(oidc.SESSION_COOKIE)]
    assert len(cookie) == 1
    assert "HttpOnly" in cookie[0] and "SameSite=Lax" in cookie[0] and "Path=/" in cookie[0]

    user = admin(sso.platform).ok("GET", "/api/2.0/mlflow/users/get", {"username": "alice"})["user"]
    assert user["is_admin"] is False
    current = api(session, sso, "GET", "/api/2.0/mlflow/users/current")
    assert current.status_code == 200 and current.json()["user"]["username"] == "alice"
    assert (
        api(session, sso, "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}).status_code == 200
    )
    # team-fraud: EDIT on fraud-* models and promote on them; nothing on the others.
    assert set_model_tag(session, sso, "fraud-detector").status_code == 200
    assert set_model_tag(session, sso, "fraud-scorer").status_code == 200
    assert set_model_tag(session, sso, "churn").status_code == 403
    assert rights_of(sso, "alice") == {("promote", "fraud-detector"), ("promote", "fraud-scorer")}
    # The UI's pages load with the session alone.
    assert session.get(sso.url + "/", timeout=TIMEOUT).status_code == 200


def test_the_session_does_not_authenticate_writes_from_other_sites(sso):
    session = signed_in(sso, "alice")
    payload = {"name": "fraud-detector", "key": "owner", "value": "y"}
    path = sso.url + "/api/2.0/mlflow/registered-models/set-tag"
    for site, status in (("cross-site", 401), ("same-site", 401), ("same-origin", 200), (None, 200)):
        headers = {"Sec-Fetch-Site": site} if site else {}
        response = session.post(path, json=payload, headers=headers, timeout=TIMEOUT)
        assert response.status_code == status, (site, response.status_code, response.text[:200])
    # Reads are not writes: a cross-site navigation (a link to MLflow) still opens the page signed in.
    read = session.get(sso.url + "/", headers={"Sec-Fetch-Site": "cross-site"}, timeout=TIMEOUT)
    assert read.status_code == 200


def test_a_signed_in_person_creates_their_own_token(sso):
    session = signed_in(sso, "eve")
    created = api(
        session, sso, "POST", "/api/2.0/mlflow-ext/tokens/create", {"name": f"nb-{secrets.token_hex(3)}"}
    )
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    current = Api(sso.url, token=token).call("GET", "/api/2.0/mlflow/users/current")
    assert current.status_code == 200 and current.json()["user"]["username"] == "eve"
    # ... but not one for somebody else, and a token still cannot mint tokens.
    other = api(session, sso, "POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "x", "username": "alice"})
    assert other.status_code == 403
    minted = Api(sso.url, token=token).call("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "y"})
    assert minted.status_code == 403


def test_admin_group_makes_an_admin(sso):
    session = signed_in(sso, "ann")
    user = admin(sso.platform).ok("GET", "/api/2.0/mlflow/users/get", {"username": "ann"})["user"]
    assert user["is_admin"] is True
    assert set_model_tag(session, sso, "churn").status_code == 200
    assert api(session, sso, "GET", "/api/2.0/mlflow/users/list").status_code == 200


def test_unknown_group_gives_no_rights(sso):
    session = signed_in(sso, "eve")
    assert api(session, sso, "GET", "/api/2.0/mlflow/users/current").json()["user"]["username"] == "eve"
    for model in MODELS:
        assert set_model_tag(session, sso, model).status_code == 403
    assert rights_of(sso, "eve") == set()
    user = admin(sso.platform).ok("GET", "/api/2.0/mlflow/users/get", {"username": "eve"})["user"]
    assert user["is_admin"] is False


def test_logout_clears_the_session_and_ends_the_provider_session(sso):
    session = signed_in(sso, "alice")
    response = session.get(sso.url + oidc.LOGOUT_PATH, timeout=TIMEOUT, allow_redirects=False)
    assert response.status_code == 302
    end_session = sso.provider.metadata()["end_session_endpoint"]
    location = urlparse(response.headers["Location"])
    assert response.headers["Location"].startswith(end_session)
    assert parse_qs(location.query)["client_id"] == [CLIENT_ID]
    assert oidc.SESSION_COOKIE not in session.cookies
    assert api(session, sso, "GET", "/api/2.0/mlflow/users/current").status_code == 401
    assert session.get(sso.url + "/", timeout=TIMEOUT, allow_redirects=False).status_code == 302


def test_a_copied_session_cookie_is_dead_after_logout(sso):
    # Someone who copied the cookie (a shared machine, a leaked proxy log) keeps nothing once the person
    # signs out; a session of the same person in another browser is not ended by it.
    session = signed_in(sso, "alice")
    other_browser = signed_in(sso, "alice")
    copied = session.cookies.get(oidc.SESSION_COOKIE)
    session.get(sso.url + oidc.LOGOUT_PATH, timeout=TIMEOUT, allow_redirects=False)
    thief = browser()
    thief.cookies.set(oidc.SESSION_COOKIE, copied)
    assert api(thief, sso, "GET", "/api/2.0/mlflow/users/current").status_code == 401
    assert api(other_browser, sso, "GET", "/api/2.0/mlflow/users/current").status_code == 200


def test_a_local_account_of_the_same_name_is_not_taken_over(sso):
    # "admin" exists as the platform's local admin; the provider also knows a person called admin.
    session = browser()
    landed = sign_in(session, sso.start_url("/"), "admin")
    refused(landed, "not linked to this identity")
    assert oidc.SESSION_COOKIE not in session.cookies


# --- bad input ----------------------------------------------------------------------------------


def test_wrong_state_is_refused(sso):
    session = browser()
    callback = until_callback(session, sso, "alice")
    parts = urlparse(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = "forged-" + query["state"]
    response = session.get(f"{sso.url}{oidc.CALLBACK_PATH}?{urlencode(query)}", timeout=TIMEOUT)
    refused(response, "state does not match")
    assert oidc.SESSION_COOKIE not in session.cookies


def test_callback_without_a_sign_in_under_way_is_refused(sso):
    session = browser()
    callback = until_callback(session, sso, "alice")
    response = requests.get(callback, timeout=TIMEOUT, headers={"Accept": "text/html"})  # another browser
    refused(response, "no sign-in is under way")


def test_replayed_code_is_refused(sso):
    session = browser()
    callback = until_callback(session, sso, "alice")
    flow = session.cookies.get(oidc.FLOW_COOKIE)
    first = session.get(callback, timeout=TIMEOUT, allow_redirects=False)
    assert first.status_code == 302 and session.cookies.get(oidc.SESSION_COOKIE)
    # The same code again, with the same flow cookie (an attacker who saw both), in a fresh browser.
    replay = browser()
    replay.cookies.set(oidc.FLOW_COOKIE, flow, path=oidc.FLOW_PATH)
    response = replay.get(callback, timeout=TIMEOUT)
    refused(response, "refused the authorization code")
    assert oidc.SESSION_COOKIE not in replay.cookies


def test_a_forged_session_cookie_is_refused(sso):
    session = signed_in(sso, "eve")
    value = session.cookies.get(oidc.SESSION_COOKIE)
    forged = browser()
    forged.cookies.set(oidc.SESSION_COOKIE, value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB"))
    assert api(forged, sso, "GET", "/api/2.0/mlflow/users/current").status_code == 401


# --- ID token verification, with the provider's real keys and tokens ------------------------------


@pytest.fixture(scope="module")
def other_client_token(sso) -> dict[str, Any]:
    """A real ID token of the provider, issued to another client (code flow with PKCE, as it would)."""
    meta = sso.provider.metadata()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    nonce = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": OTHER_CLIENT,
        "redirect_uri": OTHER_REDIRECT,
        "scope": "openid profile groups",
        "state": "s",
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    session = browser()
    response = session.get(f"{meta['authorization_endpoint']}?{urlencode(query)}", timeout=TIMEOUT)
    for _ in range(10):
        prompts = [(a, f) for a, f in forms(response.text) if f.get("prompt") in ("login", "consent")]
        assert prompts, response.text[:500]
        action, fields = prompts[0]
        if fields["prompt"] == "login":
            fields |= {"login": "alice", "password": "any"}
        response = session.post(
            urljoin(response.url, action), data=fields, timeout=TIMEOUT, allow_redirects=False
        )
        while response.is_redirect and not response.headers["Location"].startswith(OTHER_REDIRECT):
            location = urljoin(response.url, response.headers["Location"])
            response = session.get(location, timeout=TIMEOUT, allow_redirects=False)
        if response.is_redirect:
            break
    code = parse_qs(urlparse(response.headers["Location"]).query)["code"][0]
    answer = requests.post(
        meta["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": OTHER_REDIRECT,
            "code_verifier": verifier,
        },
        auth=(OTHER_CLIENT, OTHER_SECRET),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    return {"id_token": answer.json()["id_token"], "nonce": nonce}


def provider_keys(sso: SSO) -> KeySet:
    keys = requests.get(sso.provider.metadata()["jwks_uri"], timeout=TIMEOUT).json()
    return KeySet.import_key_set(keys)


def test_real_tokens_are_refused_for_another_audience_when_expired_or_with_another_nonce(
    sso, other_client_token
):
    keys, token, nonce = provider_keys(sso), other_client_token["id_token"], other_client_token["nonce"]
    issuer = sso.provider.issuer
    # The token is genuine: for the client it was issued to, it verifies.
    claims = oidc.verify_id_token(token, keys, issuer=issuer, client_id=OTHER_CLIENT, nonce=nonce)
    assert claims["sub"] == "alice" and claims["groups"] == ["team-fraud", "staff"]
    with pytest.raises(SignInRefused, match="aud"):
        oidc.verify_id_token(token, keys, issuer=issuer, client_id=CLIENT_ID, nonce=nonce)
    with pytest.raises(SignInRefused, match="exp"):
        later = claims["exp"] + oidc.LEEWAY_SECONDS + 1
        oidc.verify_id_token(token, keys, issuer=issuer, client_id=OTHER_CLIENT, nonce=nonce, now=later)
    with pytest.raises(SignInRefused, match="nonce"):
        oidc.verify_id_token(token, keys, issuer=issuer, client_id=OTHER_CLIENT, nonce=nonce + "x")
    with pytest.raises(SignInRefused, match="iss"):
        oidc.verify_id_token(token, keys, issuer=issuer + "/other", client_id=OTHER_CLIENT, nonce=nonce)


def test_tokens_signed_by_another_key_are_refused(sso):
    keys = provider_keys(sso)
    real_kid = keys.keys[0].kid
    attacker = RSAKey.generate_key(2048, parameters={"kid": real_kid})
    now = int(time.time())
    claims = {
        "iss": sso.provider.issuer,
        "aud": CLIENT_ID,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "nonce": "n",
    }
    forged = jwt.encode({"alg": "RS256", "kid": real_kid}, claims, attacker)
    with pytest.raises(SignInRefused, match="signature"):
        oidc.verify_id_token(forged, keys, issuer=sso.provider.issuer, client_id=CLIENT_ID, nonce="n")
    # The same claims with no signature at all ("none") are refused too.
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    unsigned = header + "." + forged.split(".")[1] + "."
    with pytest.raises(SignInRefused):
        oidc.verify_id_token(unsigned, keys, issuer=sso.provider.issuer, client_id=CLIENT_ID, nonce="n")


# --- SSO only -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso_only(sso) -> Iterator[MlflowServer]:
    """Another server on the same databases with MLFLOW_EXT_OIDC_SSO_ONLY."""
    server = MlflowServer({**sso.platform.server.env, "MLFLOW_EXT_OIDC_SSO_ONLY": "true"}).start()
    try:
        yield server
    finally:
        server.stop()


def test_sso_only_refuses_passwords_of_people_and_accepts_service_tokens(sso, sso_only):
    person, password = new_user(sso.platform, "person")
    refused_login = Api(sso_only.url, person, password).call("GET", "/api/2.0/mlflow/users/current")
    assert refused_login.status_code == 401
    assert "single sign-on" in refused_login.json()["message"]
    # A person's token still works (machines use tokens); so does a service account's.
    _, person_token = new_token(sso.platform, person)
    assert (
        Api(sso_only.url, token=person_token).call("GET", "/api/2.0/mlflow/users/current").status_code == 200
    )
    account = f"svc-{secrets.token_hex(3)}"
    admin(sso.platform).ok("POST", "/api/2.0/mlflow-ext/service-accounts/create", {"username": account})
    _, token = new_token(sso.platform, account)
    current = Api(sso_only.url, token=token).call("GET", "/api/2.0/mlflow/users/current")
    assert current.status_code == 200 and current.json()["user"]["username"] == account
    # The login page no longer offers passwords; the same person's password works on the other server.
    page = browser().get(sso_only.url + oidc.LOGIN_PATH, timeout=TIMEOUT)
    assert "Sign in with TestIdP" in page.text and "Basic credentials" not in page.text
    assert Api(sso.url, person, password).call("GET", "/api/2.0/mlflow/users/current").status_code == 200


# --- a real browser -----------------------------------------------------------------------------


def _submit(page: Any, selector: str, fields: dict[str, str]) -> None:
    """Fill the form holding ``selector`` and submit it, as a person would."""
    script = (
        f"(() => {{ const form = document.querySelector({json.dumps(selector)}).form;"
        f" const values = {json.dumps(fields)};"
        " for (const [k, v] of Object.entries(values)) { form.elements[k].value = v; }"
        " form.submit(); return true; })()"
    )
    page.evaluate(script)


def test_a_browser_signs_in_sees_the_experiments_and_logs_out(sso):
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make test-infra installs it)")
    from tests.support.browser import chromium

    url = sso.url
    with chromium(lifetime=600) as running, running.open_page() as page:
        page.navigate(url + "/")
        page.wait_for("location.pathname === '/auth/login'", "the redirect to the login page", 30)
        page.wait_for_text("Sign in with TestIdP", 30)
        page.evaluate("document.querySelector('a[href^=\"/auth/oidc/start\"]').click()")
        page.wait_for("!!document.querySelector('input[name=login]')", "the provider's login form", 30)
        _submit(page, "input[name=login]", {"login": "alice", "password": "any-password"})
        page.wait_for("!!document.querySelector('input[name=prompt][value=consent]')", "the consent form", 30)
        _submit(page, "input[name=prompt][value=consent]", {})
        page.wait_for(f"location.href.startsWith({json.dumps(url + '/')})", "the way back to MLflow", 30)
        page.wait_for_text("Experiments", 90)
        status = page.page(
            "Runtime.evaluate",
            expression="fetch('/ajax-api/2.0/mlflow/users/current').then(r => r.json())",
            awaitPromise=True,
            returnByValue=True,
        )["result"]["value"]
        assert status["user"]["username"] == "alice"  # the UI's own requests carry the session
        session = [c for c in page.cookies([url + "/"]) if c["name"] == oidc.SESSION_COOKIE]
        assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Lax"

        # The UI's "Sign out" link (MLflow's UI has none of its own).
        page.wait_for("!!document.getElementById('mlflow-ext-sign-out')", "the Sign out link", 30)
        page.evaluate("document.getElementById('mlflow-ext-sign-out').click()")
        page.wait_for(
            f"location.href.startsWith({json.dumps(sso.provider.issuer)})",
            "the provider's end-session page",
            30,
        )
        assert [c for c in page.cookies([url + "/"]) if c["name"] == oidc.SESSION_COOKIE] == []
        page.navigate(url + "/")
        page.wait_for("location.pathname === '/auth/login'", "the login page after logout", 30)
