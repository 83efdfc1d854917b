"""The authorization function on a real auth store (MLflow's user store and ours, on SQLite).

No server: each check builds a Flask request context and calls ``authn`` the way MLflow's hook does.
"""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Iterator

import pytest
from flask import Flask, Response
from sqlalchemy import select

from mlflow_ext.auth import authn, config, lockout, store
from mlflow_ext.auth.audit import AuditLog
from mlflow_ext.auth.cache import CredentialCache

PASSWORD = "right-password-123"
ADDRESS_FAILURES = 5


@pytest.fixture(scope="module")
def auth_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[authn.AuthState]:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("authn") / "auth.db"
    users = SqlAlchemyStore()
    users.init_db(f"sqlite:///{path}")
    store.migrate(users.engine)
    settings = config.load(
        {
            "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES": str(ADDRESS_FAILURES),
            "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES": "1000",
            "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER": "1000",
            "MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS": "0",
        }
    )
    state = authn.AuthState(
        settings=settings,
        ext=store.ExtStore(users.engine),
        users=users,
        audit=AuditLog(str(path.parent / "audit.jsonl")),
        cache=CredentialCache(settings.cache_max_entries, settings.cache_ttl_seconds),
    )
    authn.install(state)
    yield state
    users.engine.dispose()


@pytest.fixture(scope="module")
def app() -> Flask:
    return Flask(__name__)


def call(app: Flask, header: str | None, address: str) -> Response | object:
    headers = {"X-Forwarded-For": address}
    if header is not None:
        headers["Authorization"] = header
    # From the local proxy (a trusted peer), which names the client in X-Forwarded-For.
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    with app.test_request_context("/api/2.0/mlflow/users/current", headers=headers, environ_base=environ):
        return authn.authenticate_request()


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def failures(state: authn.AuthState, key: str) -> int:
    with state.ext.engine.connect() as conn:
        row = conn.execute(
            select(store.failures_table.c.failures).where(store.failures_table.c.key == key)
        ).first()
    return 0 if row is None else int(row.failures)


def audit_lines(state: authn.AuthState) -> str:
    with open(state.audit.destination, encoding="utf-8") as handle:
        return handle.read()


def test_unknown_and_revoked_tokens_never_lock_the_address(auth_state, app):
    auth_state.users.create_user("ci-bot", PASSWORD)
    record, secret = auth_state.ext.create_token("ci-bot", "agents", "admin", None)
    auth_state.ext.revoke_token(record.id, "admin")
    unknown = "mlxt_" + "A" * 43
    address = "192.0.2.10"
    for _ in range(3 * ADDRESS_FAILURES):
        for token in (secret, unknown):
            answer = call(app, f"Bearer {token}", address)
            assert isinstance(answer, Response) and answer.status_code == 401, answer
            assert answer.headers["WWW-Authenticate"]
    assert failures(auth_state, lockout.address_key(address)) == 0
    # Every client at the address still gets in, the admin included.
    assert call(app, basic("ci-bot", PASSWORD), address).username == "ci-bot"  # type: ignore[attr-defined]
    logged = audit_lines(auth_state)
    assert '"reason": "revoked token"' in logged and '"reason": "unknown token"' in logged
    assert secret not in logged


def test_wrong_passwords_still_lock_the_address(auth_state, app):
    address = "192.0.2.20"
    statuses = [
        call(app, basic(f"nobody-{i}", "guess-guess-guess"), address).status_code  # type: ignore[attr-defined]
        for i in range(ADDRESS_FAILURES)
    ]
    assert statuses == [401] * (ADDRESS_FAILURES - 1) + [429]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b":password-without-user").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"user:" + b"p" * 2000).decode(),
        "Basic " + "A" * 5000,
        "Bearer",
        "Bearer not-a-token",
        "Bearer mlxt_" + "A" * 43 + " extra",
        "Garbage c29tZXRoaW5n",
        "Digest username=x",
    ],
    ids=lambda header: header[:40] or "empty",
)
def test_malformed_authorization_headers_are_401_with_a_challenge(auth_state, app, header):
    address = "192.0.2.30"
    answer = call(app, header, address)
    assert isinstance(answer, Response)
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert failures(auth_state, lockout.address_key(address)) == 0


def test_unknown_users_take_as_long_as_wrong_passwords(auth_state, app):
    """Both pay one password hash of the same cost: the answer time does not tell which names exist."""
    rounds = 20
    auth_state.users.create_user("timed-user", PASSWORD)
    call(app, basic("timed-user", PASSWORD), "192.0.2.40")  # warm up both paths
    call(app, basic("timed-nobody", PASSWORD), "192.0.2.40")
    unknown: list[float] = []
    wrong: list[float] = []
    for i in range(rounds):
        # Interleaved, so a noisy neighbour slows both kinds alike.
        for kind, header in (
            (unknown, basic(f"no-such-user-{i}", "wrong-password-1")),
            (wrong, basic("timed-user", f"wrong-password-{i}")),
        ):
            start = time.perf_counter()
            answer = call(app, header, f"198.51.100.{i}")
            kind.append(time.perf_counter() - start)
            assert answer.status_code == 401  # type: ignore[attr-defined]
    unknown_median, wrong_median = statistics.median(unknown), statistics.median(wrong)
    print(f"medians: unknown user {unknown_median:.4f} s, wrong password {wrong_median:.4f} s")
    assert 0.7 <= unknown_median / wrong_median <= 1.4, (unknown, wrong)


@pytest.fixture
def caching_state(auth_state: authn.AuthState) -> Iterator[authn.AuthState]:
    """The module's auth store with a credential cache that keeps entries (its own state, then restored)."""
    cached = authn.AuthState(
        settings=config.load({"MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS": "60"}),
        ext=auth_state.ext,
        users=auth_state.users,
        audit=auth_state.audit,
        cache=CredentialCache(100, 60),
    )
    authn.install(cached)
    yield cached
    authn.install(auth_state)


def test_cached_user_is_what_the_cache_accepts_without_verifying_or_counting(caching_state, app):
    caching_state.users.create_user("cached-user", PASSWORD)
    address, header = "198.51.100.40", basic("cached-user", PASSWORD)
    generation = caching_state.refresh()
    assert authn.cached_user(header, address, generation) is None  # never verified yet
    assert not isinstance(call(app, header, address), Response)
    entry = authn.cached_user(header, address, generation)
    assert entry is not None and entry.username == "cached-user"

    wrong = basic("cached-user", "not-" + PASSWORD)
    assert authn.cached_user(wrong, address, generation) is None
    assert failures(caching_state, lockout.address_key(address)) == 0  # nothing counted
    assert authn.cached_user(header, address, generation + 1) is None  # another generation

    caching_state.locks[lockout.address_key(address)] = store.now_ms() + 60_000
    assert authn.cached_user(header, address, generation) is None  # locked out: authenticate refuses it
    assert authn.cached_user(header, "198.51.100.41", generation) is not None

    caching_state.ext.bump_generation()
    newer = caching_state.refresh()
    assert authn.cached_user(header, "198.51.100.41", newer) is None  # a bump empties the cache
