"""What `mlflow-ext server run` hands to MLflow: argv without secrets, env with every setting, the INI."""

from __future__ import annotations

import configparser
import os
import stat

import pytest

from mlflow_ext import server
from mlflow_ext.errors import ConfigError
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
    assert "admin_password" not in section  # the entrypoint creates the admin before MLflow starts


def test_no_auth_app_when_disabled():  # no runtime dir is needed without auth
    env = {k: v for k, v in VALID.items() if "AUTH" not in k and "FLASK" not in k}
    argv, env_out = server.prepare({**env, "MLFLOW_EXT_APP_NAME": "none"})
    assert "--app-name" not in argv
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env_out


# --- the admin password: read once, never in the environment MLflow runs with ----------------------------


def _password_file(tmp_path, content="FromTheFile0123456", mode=0o600):
    path = tmp_path / "admin_password"
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


def _with_file(path) -> dict[str, str]:
    env = {k: v for k, v in VALID.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    return {**env, "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE": str(path)}


def test_the_exec_environment_has_no_admin_password(tmp_path):
    _, env = server.prepare({**VALID, "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path)})
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in env
    assert all(VALID["MLFLOW_AUTH_ADMIN_PASSWORD"] not in value for value in env.values())
    path = _password_file(tmp_path)
    _, env = server.prepare({**_with_file(path), "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path)})
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in env
    assert all("FromTheFile0123456" not in value for value in env.values())


def test_run_creates_the_admin_with_the_files_password_before_exec(tmp_path, monkeypatch):
    created, executed = {}, {}
    monkeypatch.setattr(server, "bootstrap_admin", lambda values, password: created.update(password=password))
    monkeypatch.setattr(os, "execve", lambda path, argv, env: executed.update(env=env))
    path = _password_file(tmp_path)
    server.run({**_with_file(path), "MLFLOW_EXT_RUNTIME_DIR": str(tmp_path)})
    assert created == {"password": "FromTheFile0123456"}
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in executed["env"]
    assert executed["env"]["MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE"] == str(path)


def test_the_file_password_is_read_as_it_is(tmp_path):
    path = _password_file(tmp_path, mode=0o400)
    assert server.admin_password(server.resolve(_with_file(path))) == "FromTheFile0123456"
    assert server.admin_password(server.resolve(VALID)) == VALID["MLFLOW_AUTH_ADMIN_PASSWORD"]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "cannot read"),
        ("world-readable", "readable by its owner only (mode 0600 or 0400), not 0644"),
        ("group-readable", "not 0640"),
        ("other owner", "must be owned by the user the server runs as"),
        ("too short", "must be at least 12 characters"),
        ("directory", "not a regular file"),
    ],
)
def test_a_bad_password_file_fails_at_start_naming_the_setting_not_the_value(tmp_path, setup, expected):
    secret = "NotToBeShown98765" if setup != "too short" else "Short1"
    path = _password_file(tmp_path, content=secret)
    if setup == "missing":
        path.unlink()
    elif setup == "world-readable":
        path.chmod(0o644)
    elif setup == "group-readable":
        path.chmod(0o640)
    elif setup == "other owner":
        os.chown(path, os.geteuid() + 1, -1)
    elif setup == "directory":
        path.unlink()
        path.mkdir(mode=0o700)
    values = server.resolve(_with_file(path))
    with pytest.raises(ConfigError) as error:
        server.admin_password(values)
    message = str(error.value)
    assert message.startswith("MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE: "), message
    assert expected in message
    assert secret not in message


@pytest.mark.parametrize("given", [(), ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE")])
def test_with_auth_exactly_one_admin_password_source(given):
    env = {k: v for k, v in VALID.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    sources = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "Adm1nPassw0rdLong",
        "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE": "/x/pw",
    }
    with pytest.raises(ConfigError) as error:
        server.resolve({**env, **{name: sources[name] for name in given}})
    assert "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE or MLFLOW_AUTH_ADMIN_PASSWORD" in str(error.value)
    assert "Adm1nPassw0rdLong" not in str(error.value)
