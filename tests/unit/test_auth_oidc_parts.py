"""Single sign-on parts without a server: the group mapping file, redirect targets, ID-token checks."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from mlflow_ext.auth import group_mapping, oidc
from mlflow_ext.errors import SignInRefused
from mlflow_ext.settings.base import issuer_url

ISSUER = "https://sso.example.com/realms/ml"


def test_a_mapping_file_parses_into_grants():
    mapping = group_mapping.parse(
        {
            "groups": {
                "ml-admins": {"admin": True},
                "team-fraud": {
                    "permissions": [
                        {"resource_type": "registered_model", "name": "fraud-*", "permission": "EDIT"}
                    ],
                    "rights": [{"right": "promote", "model": "fraud-*"}, {"right": "create_experiment"}],
                },
                "empty": None,
            }
        }
    )
    assert mapping.groups["ml-admins"].admin is True
    fraud = mapping.groups["team-fraud"]
    assert fraud.permissions == (group_mapping.Permission("registered_model", "fraud-*", "EDIT"),)
    assert fraud.rights == (
        group_mapping.Right("promote", "fraud-*"),
        group_mapping.Right("create_experiment"),
    )
    assert mapping.groups["empty"] == group_mapping.GroupGrants()
    assert group_mapping.parse(None).groups == {}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"group": {}}, "one key, groups"),
        ({"groups": {"g": {"admin": "yes"}}}, "admin must be true or false"),
        ({"groups": {"g": {"owner": True}}}, "expected keys"),
        (
            {"groups": {"g": {"permissions": [{"resource_type": "run", "name": "x", "permission": "EDIT"}]}}},
            "resource_type",
        ),
        (
            {
                "groups": {
                    "g": {"permissions": [{"resource_type": "experiment", "name": "x", "permission": "ALL"}]}
                }
            },
            "permission must",
        ),
        ({"groups": {"g": {"rights": [{"right": "delete_everything"}]}}}, "right must be one of"),
        ({"groups": {"g": {"rights": [{"right": "create_experiment", "model": "x"}]}}}, "promote right only"),
    ],
)
def test_a_bad_mapping_is_refused_with_its_place(data, words):
    with pytest.raises(ValueError, match=words):
        group_mapping.parse(data)


def test_an_unreadable_mapping_file_names_the_setting(tmp_path):
    with pytest.raises(ValueError, match="MLFLOW_EXT_OIDC_GROUP_MAPPING cannot be read"):
        group_mapping.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        group_mapping.load(str(bad))


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/#/experiments/1", "/#/experiments/1"),
        ("/static-files/x", "/static-files/x"),
        ("//evil.example.com/", "/"),
        ("https://evil.example.com/", "/"),
        ("/\\evil.example.com", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_only_paths_of_this_server_are_redirect_targets(target, kept):
    assert oidc._safe_next(target) == kept


def test_issuer_urls_may_have_a_path():
    assert issuer_url(ISSUER) == ISSUER
    assert issuer_url("http://127.0.0.1:5556/dex") == "http://127.0.0.1:5556/dex"
    for bad in ("sso.example.com", "ftp://x", "https://x/?a=1", "https://"):
        with pytest.raises(ValueError):
            issuer_url(bad)


def _claims(**extra):
    now = int(time.time())
    return {"iss": ISSUER, "aud": "mlflow", "sub": "u1", "iat": now, "exp": now + 300, "nonce": "n", **extra}


def test_id_token_checks():
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    keys = KeySet([key])
    good = jwt.encode({"alg": "RS256", "kid": "k1"}, _claims(), key)
    assert oidc.verify_id_token(good, keys, issuer=ISSUER, client_id="mlflow", nonce="n")["sub"] == "u1"
    cases = {
        "azp": _claims(aud=["mlflow", "other"]),  # several audiences and no azp naming this client
        "nonce": _claims(nonce="other"),
        "iat": {k: v for k, v in _claims().items() if k != "iat"},
        "exp": _claims(exp=int(time.time()) - 3600),
        "sub": {k: v for k, v in _claims().items() if k != "sub"},
    }
    for what, claims in cases.items():
        token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        with pytest.raises(SignInRefused) as refused:
            oidc.verify_id_token(token, keys, issuer=ISSUER, client_id="mlflow", nonce="n")
        assert what in str(refused.value), (what, str(refused.value))
    several = jwt.encode({"alg": "RS256", "kid": "k1"}, _claims(aud=["mlflow", "x"], azp="mlflow"), key)
    assert oidc.verify_id_token(several, keys, issuer=ISSUER, client_id="mlflow", nonce="n")


def test_a_shared_secret_signature_is_never_accepted():
    # Algorithm confusion: a token signed with HS256 under a key the verifier holds is still refused.
    secret = OctKey.generate_key(256, parameters={"kid": "k1"})
    token = jwt.encode({"alg": "HS256", "kid": "k1"}, _claims(), secret)
    with pytest.raises(SignInRefused, match="signature"):
        oidc.verify_id_token(token, KeySet([secret]), issuer=ISSUER, client_id="mlflow", nonce="n")
    with pytest.raises(SignInRefused, match=r"malformed|signature"):
        oidc.verify_id_token("not.a.token", KeySet([secret]), issuer=ISSUER, client_id="mlflow", nonce="n")


def test_the_entrypoint_refuses_an_issuer_without_a_client_or_the_auth_app():
    from mlflow_ext import server
    from mlflow_ext.errors import ConfigError
    from tests.unit.test_settings import VALID

    on = {**VALID, "MLFLOW_EXT_OIDC_ISSUER": ISSUER}
    with pytest.raises(ConfigError, match="MLFLOW_EXT_OIDC_CLIENT_ID is required"):
        server.resolve(on)
    with pytest.raises(ConfigError, match="needs MLFLOW_EXT_APP_NAME=mlflow-ext-auth"):
        server.resolve({**on, "MLFLOW_EXT_OIDC_CLIENT_ID": "mlflow", "MLFLOW_EXT_APP_NAME": "basic-auth"})
    values = server.resolve({**on, "MLFLOW_EXT_OIDC_CLIENT_ID": "mlflow"})
    assert values["MLFLOW_EXT_OIDC_SCOPES"] == ("openid", "profile", "email", "groups")
    assert server.resolve(VALID)["MLFLOW_EXT_OIDC_ISSUER"] is None  # off by default
