"""What the entrypoint hands MLflow when the mlflow-ext-auth app is on (the default)."""

from __future__ import annotations

import configparser

from mlflow_ext import server
from tests.unit.test_settings import VALID


def test_default_app_is_mlflow_ext_auth_with_its_authorization_function(tmp_path):
    argv, env = server.prepare({**VALID, "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path)})
    assert argv[-2:] == ["--app-name", "mlflow-ext-auth"]
    parser = configparser.ConfigParser()
    parser.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert parser["mlflow"]["authorization_function"] == "mlflow_ext.auth.authn:authenticate_request"
    assert parser["mlflow"]["auth_cache_ttl_seconds"] == "0"  # our cache, not MLflow's per-worker one
    assert env["MLFLOW_BASIC_AUTH_FAIL_CLOSED"] == "true"


def test_list_settings_reach_the_app_as_they_are_written(tmp_path):
    _, env = server.prepare(
        {
            **VALID,
            "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path),
            "MLFLOW_EXT_PROTECTED_ALIASES": "production,champion",
            "MLFLOW_EXT_AUTH_OPEN_CREATE": "none",
        }
    )
    assert env["MLFLOW_EXT_PROTECTED_ALIASES"] == "production,champion"
    assert env["MLFLOW_EXT_AUTH_OPEN_CREATE"] == "none"


def test_basic_auth_keeps_mlflows_function_and_cache(tmp_path):
    _, env = server.prepare(
        {**VALID, "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path), "MLFLOW_EXT_APP_NAME": "basic-auth"}
    )
    parser = configparser.ConfigParser()
    parser.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert parser["mlflow"]["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert parser["mlflow"]["auth_cache_ttl_seconds"] == "30"
    assert "MLFLOW_BASIC_AUTH_FAIL_CLOSED" not in env
