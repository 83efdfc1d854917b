"""mlflow-ext-auth's building blocks without a server: token format, cache, lockout counting, settings."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import create_engine

from mlflow_ext import settings
from mlflow_ext.auth import config, lockout, store
from mlflow_ext.auth import tokens as token_format
from mlflow_ext.auth.cache import CredentialCache, Verified
from mlflow_ext.errors import ConfigError


def test_tokens_are_random_well_formed_and_hashed():
    a, b = token_format.new_token(), token_format.new_token()
    assert a != b and token_format.looks_like_token(a) and len(a) == 48
    assert not token_format.looks_like_token(a + "x") and not token_format.looks_like_token("mlxt_short")
    assert token_format.token_hash(a) != a and len(token_format.token_hash(a)) == 64
    assert token_format.display_prefix(a) == a[:11]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45)]
)
def test_durations(text, seconds):
    assert token_format.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "1w", "d"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        token_format.parse_duration(text)


def entry(username: str, generation: int = 0, at: float = 0.0) -> Verified:
    return Verified(username=username, method="password", stored_at=at, generation=generation)


def test_cache_keys_hide_the_credential_and_differ_per_process():
    cache, other = CredentialCache(10, 30), CredentialCache(10, 30)
    key = cache.key("password", "alice", "s3cret-password")
    assert b"s3cret" not in key and key != other.key("password", "alice", "s3cret-password")
    assert key != cache.key("password", "alice", "s3cret-passworD")


def test_cache_expires_entries_and_stays_bounded():
    cache = CredentialCache(max_entries=2, ttl_seconds=10)
    k1, k2, k3 = (cache.key("password", str(i), "p") for i in range(3))
    cache.put(k1, entry("1", at=0))
    assert cache.get(k1, now=5) is not None
    assert cache.get(k1, now=10) is None  # TTL reached
    cache.put(k1, entry("1", at=20))
    cache.put(k2, entry("2", at=20))
    cache.get(k1, now=21)  # k1 is now the most recently used
    cache.put(k3, entry("3", at=21))
    assert len(cache) == 2 and cache.get(k2, now=21) is None and cache.get(k1, now=21) is not None


def test_cache_with_zero_ttl_caches_nothing():
    cache = CredentialCache(10, 0)
    key = cache.key("token", "t")
    cache.put(key, entry("x"))
    assert cache.get(key, now=0) is None


def test_client_address_trusts_only_configured_proxies():
    trusted = ("127.0.0.1",)
    assert lockout.client_address("10.0.0.5", "1.2.3.4", trusted) == "10.0.0.5"
    assert lockout.client_address("127.0.0.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert lockout.client_address("127.0.0.1", "6.6.6.6, 1.2.3.4", trusted) == "1.2.3.4"  # spoofed left
    assert lockout.client_address("127.0.0.1", "not-an-ip", trusted) == "127.0.0.1"
    assert lockout.client_address("127.0.0.1", None, trusted) == "127.0.0.1"


def test_slowdown_grows_and_is_capped():
    delays = [lockout.slowdown_seconds(n, 3) for n in range(1, 10)]
    assert delays[:3] == [0, 0, 0] and delays[3] == 0.25 and delays[4] == 0.5
    assert max(delays) == lockout.MAX_DELAY_SECONDS and delays == sorted(delays)


@pytest.fixture
def ext(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    first = store.migrate(engine)
    assert first["changed"] is True
    assert store.migrate(engine)["changed"] is False  # idempotent, and says so
    yield store.ExtStore(engine)
    engine.dispose()


def test_failures_lock_at_the_threshold_then_start_over(ext):
    generation = ext.generation()
    for n in range(1, 3):
        outcome = ext.record_failure(
            "user:a", threshold=3, window_ms=60_000, lockout_ms=5_000, at_ms=1_000 + n
        )
        assert outcome.failures == n and not outcome.newly_locked
    locked = ext.record_failure("user:a", threshold=3, window_ms=60_000, lockout_ms=5_000, at_ms=1_010)
    assert locked.newly_locked and locked.locked_until == 6_010
    assert ext.generation() == generation + 1  # every worker learns of the lockout
    assert ext.active_locks(at_ms=2_000) == {"user:a": 6_010}
    assert ext.active_locks(at_ms=7_000) == {}
    ext.clear_failures("user:a")  # a success never lifts an active lockout
    assert ext.active_locks(at_ms=2_000) == {"user:a": 6_010}


def test_failures_outside_the_window_are_forgotten(ext):
    ext.record_failure("addr:1.2.3.4", 3, window_ms=1_000, lockout_ms=5_000, at_ms=0)
    ext.record_failure("addr:1.2.3.4", 3, window_ms=1_000, lockout_ms=5_000, at_ms=10)
    later = ext.record_failure("addr:1.2.3.4", 3, window_ms=1_000, lockout_ms=5_000, at_ms=5_000)
    assert later.failures == 1 and not later.newly_locked


def test_token_store_keeps_hashes_and_revocation_bumps_the_generation(ext):
    record, secret = ext.create_token("alice", "ci", "admin", expires_at=None)
    assert ext.find_token(secret) == record and record.status(0) == "active"
    with pytest.raises(ValueError):
        ext.create_token("alice", "ci", "admin", expires_at=None)  # one active token per name
    before = ext.generation()
    revoked = ext.revoke_token(record.id, "admin")
    assert revoked is not None and revoked.status(0) == "revoked" and ext.generation() == before + 1
    assert ext.list_tokens("alice") == [] and len(ext.list_tokens("alice", include_revoked=True)) == 1
    again, _ = ext.create_token("alice", "ci", "admin", expires_at=5)  # the name is free again
    assert again.status(4) == "active" and again.status(5) == "expired"


def test_rights_are_idempotent_and_wildcards_cover_every_model(ext):
    assert ext.grant_right("bob", "promote", "churn", "admin") is True
    assert ext.grant_right("bob", "promote", "churn", "admin") is False
    assert ext.has_right("bob", "promote", "churn") and not ext.has_right("bob", "promote", "other")
    ext.grant_right("bob", "promote", "*", "admin")
    assert ext.has_right("bob", "promote", "other")
    ext.forget_user("bob")
    assert ext.list_rights("bob") == []


def test_auth_settings_parse_and_name_bad_variables():
    parsed = config.load({})
    assert parsed.protected_aliases == ("production",) and parsed.open_create == ()
    assert parsed.trusted_proxies == ("127.0.0.1", "::1") and parsed.audit_log == "stderr"
    with pytest.raises(ConfigError) as error:
        config.load({"MLFLOW_EXT_PROTECTED_ALIASES": "prod uction", "MLFLOW_EXT_AUDIT_LOG": "relative.log"})
    assert "MLFLOW_EXT_PROTECTED_ALIASES" in str(error.value) and "MLFLOW_EXT_AUDIT_LOG" in str(error.value)
    assert "prod uction" not in str(error.value)


def test_every_auth_setting_is_in_the_registry():
    names = [f.metadata["setting"] for f in dataclasses.fields(config.AuthSettings)]
    assert set(names) <= set(settings.BY_NAME) and len(names) == len(set(names))
