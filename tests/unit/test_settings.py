"""The settings registry: validation a platform engineer meets when an env file is wrong."""

from __future__ import annotations

import dataclasses

import pytest

from mlflow_ext import settings
from mlflow_ext.errors import ConfigError
from mlflow_ext.settings import bridge as settings_bridge
from mlflow_ext.settings import client as settings_client
from mlflow_ext.settings import server as settings_server

VALID = {
    "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow",
    "MLFLOW_EXT_AUTH_DATABASE_URI": "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_auth",
    "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts/",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "Adm1nPassw0rdLong",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "s3cretKeyAlnum123456",
}


def test_valid_environment_fills_defaults():
    values = settings.load(VALID)
    assert values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth"
    assert values["MLFLOW_EXT_AUTH_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert values["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] is False
    assert values["MLFLOW_DISABLE_TELEMETRY"] is True
    assert values["MLFLOW_EXT_FAST_TRACKING_STORE"] is True
    assert values["MLFLOW_PORT"] == 5000


def test_every_missing_required_variable_is_named_at_once():
    with pytest.raises(ConfigError) as error:
        settings.load({})
    message = str(error.value)
    for name in (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_EXT_AUTH_DATABASE_URI",
    ):
        assert name in message


def test_auth_secrets_not_required_when_auth_is_off():
    env = {k: v for k, v in VALID.items() if "AUTH" not in k and "FLASK" not in k}
    values = settings.load({**env, "MLFLOW_EXT_APP_NAME": "none"})
    assert values["MLFLOW_AUTH_ADMIN_PASSWORD"] is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MLFLOW_BACKEND_STORE_URI", "postgresql://mlflow@db/mlflow", "must name the driver"),
        ("MLFLOW_BACKEND_STORE_URI", "postgresql+psycopg2://mlflow:hunter2hunter2@db/mlflow", "password"),
        ("MLFLOW_BACKEND_STORE_URI", "mysql://db/mlflow", "postgresql+psycopg2"),
        ("MLFLOW_ARTIFACTS_DESTINATION", "/var/lib/mlflow", "S3 URI"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "short", "at least 12"),
        ("MLFLOW_PORT", "http", "whole number"),
        ("MLFLOW_WORKERS", "0", "at least 1"),
        ("MLFLOW_EXT_AUTH_DEFAULT_PERMISSION", "ALL", "one of"),
        ("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "notafernetkey", "Fernet"),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "maybe", "true or false"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "has space in it ok", "spaces"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "dollar$signs$here", "'$'"),
    ],
)
def test_bad_values_are_named_and_never_shown(name, value, expected):
    with pytest.raises(ConfigError) as error:
        settings.load({**VALID, name: value})
    message = str(error.value)
    assert name in message
    assert expected in message
    assert value not in message


def test_fernet_key_accepted():
    key = "A" * 43 + "="
    assert (
        settings.load({**VALID, "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key})[
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
        ]
        == key
    )


def test_masked_hides_set_secrets_only():
    shown = settings.masked(settings.load(VALID))
    assert shown["MLFLOW_AUTH_ADMIN_PASSWORD"] == "***"
    assert shown["PGPASSWORD"] is None
    assert shown["MLFLOW_BACKEND_STORE_URI"] == VALID["MLFLOW_BACKEND_STORE_URI"]


def test_env_file_parsing(tmp_path):
    path = tmp_path / "server.env"
    path.write_text("# comment\n\nMLFLOW_PORT=5001\nMLFLOW_SERVER_ALLOWED_HOSTS=a,b:*\n")
    assert settings.read_env_file(str(path)) == {
        "MLFLOW_PORT": "5001",
        "MLFLOW_SERVER_ALLOWED_HOSTS": "a,b:*",
    }
    path.write_text("export MLFLOW_PORT 5001\n")
    with pytest.raises(ConfigError, match=r"server.env:1: expected KEY=value"):
        settings.read_env_file(str(path))
    with pytest.raises(ConfigError, match="cannot read env file"):
        settings.read_env_file(str(tmp_path / "missing.env"))


def test_registry_names_are_unique_and_documented():
    names = [s.name for s in settings.SETTINGS]
    assert len(names) == len(set(names))
    for setting in settings.SETTINGS:
        assert setting.doc.strip(), setting.name
        if setting.default is not None:
            setting.parse(setting.default)  # every default passes its own validation


def test_one_accessor_fills_defaults_parses_and_names_the_variable():
    assert settings.get("MLFLOW_EXT_RUN_DIFF_MAX_BYTES", {}) == 1048576
    assert settings.get("MLFLOW_EXT_RUN_DIFF_MAX_BYTES", {"MLFLOW_EXT_RUN_DIFF_MAX_BYTES": "10"}) == 10
    assert settings.get("MLFLOW_EXT_PROMOTION_POLICY", {}) is None
    with pytest.raises(ConfigError, match="MLFLOW_EXT_RUN_DIFF_MAX_BYTES must be a whole number") as error:
        settings.get("MLFLOW_EXT_RUN_DIFF_MAX_BYTES", {"MLFLOW_EXT_RUN_DIFF_MAX_BYTES": "lots-of-bytes"})
    assert "lots-of-bytes" not in str(error.value)


def test_typed_objects_are_built_from_the_registry_with_every_problem_at_once():
    @dataclasses.dataclass(frozen=True)
    class Limits:
        diff_bytes: int = settings.field("MLFLOW_EXT_RUN_DIFF_MAX_BYTES")
        port: int = settings.field("MLFLOW_PORT")

    assert settings.build(Limits, {"MLFLOW_PORT": "5001"}) == Limits(diff_bytes=1048576, port=5001)
    with pytest.raises(ConfigError) as error:
        settings.build(Limits, {"MLFLOW_PORT": "0", "MLFLOW_EXT_RUN_DIFF_MAX_BYTES": "x"})
    assert "MLFLOW_PORT must be at least 1" in str(error.value)
    assert "MLFLOW_EXT_RUN_DIFF_MAX_BYTES must be a whole number" in str(error.value)
    with pytest.raises(KeyError, match="NOT_A_SETTING"):
        settings.field("NOT_A_SETTING")


def test_each_scope_has_its_own_module_and_names_are_unique():
    assert {s.scope for s in settings_server.SETTINGS} == {"server"}
    assert {s.scope for s in settings_bridge.SETTINGS} == {"bridge"}
    assert {s.scope for s in settings_client.SETTINGS} == {"client"}
    names = [s.name for s in settings.SETTINGS]
    assert len(names) == len(set(names))
