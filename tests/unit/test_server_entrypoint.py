"""What `mlflow-ext server run` hands to MLflow: argv without secrets, env with every setting, the INI."""

from __future__ import annotations

import configparser
import os
import stat

from mlflow_ext import server
from tests.unit.test_settings import VALID


def test_argv_carries_no_configuration_but_the_app_name(tmp_path):
    argv, env = server.prepare({**VALID, "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path)})
    assert argv[1:] == ["-m", "mlflow", "server", "--app-name", "mlflow-ext-auth"]
    for secret in (VALID["MLFLOW_AUTH_ADMIN_PASSWORD"], VALID["MLFLOW_FLASK_SERVER_SECRET_KEY"]):
        assert all(secret not in part for part in argv)
    assert env["MLFLOW_BACKEND_STORE_URI"] == VALID["MLFLOW_BACKEND_STORE_URI"]
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert int(env["MLFLOW_WORKERS"]) >= 2


def test_auth_config_is_private_and_complete(tmp_path):
    values = server.resolve({**VALID, "MLFLOW_EXT_AUTH_DATABASE_URI": "sqlite:///a%20b.db"})
    path = server.render_auth_config(values, str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["mlflow"]
    assert section["default_permission"] == "NO_PERMISSIONS"
    assert section["database_uri"] == "sqlite:///a%20b.db"  # '%' survives configparser interpolation
    assert section["admin_username"] == "admin"
    assert "admin_password" not in section  # MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD


def test_no_auth_app_when_disabled():  # no runtime dir is needed without auth
    env = {k: v for k, v in VALID.items() if "AUTH" not in k and "FLASK" not in k}
    argv, env_out = server.prepare({**env, "MLFLOW_EXT_APP_NAME": "none"})
    assert "--app-name" not in argv
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env_out
