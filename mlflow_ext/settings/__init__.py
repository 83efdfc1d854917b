"""The one list of configuration: every environment variable the platform reads.

Split by who reads it: ``server`` (the environment file of ``mlflow-ext server run``), ``bridge`` (of
``mlflow-ext bridge serve``) and ``client`` (training scripts and stage commands); ``base`` holds what a
setting is and the parsers. The server's environment file (rendered by Ansible, passed by compose's
``env_file``) is the contract between the deployment tools and ``mlflow-ext server``. The example env file
and the README's table are generated from ``SETTINGS``; contract tests fail when they drift.

Read a setting through this module only: ``get`` for one value, ``build`` for a typed object whose
fields name their settings, ``load`` for a whole scope. Each looks the value up, fills in the default,
parses it, and raises ConfigError naming the variable (never its value).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from mlflow_ext.errors import ConfigError
from mlflow_ext.settings import bridge, client, server
from mlflow_ext.settings.base import UNSAFE_ENV_CHARS, Scope, Setting

__all__ = ["BY_NAME", "SETTINGS", "Scope", "Setting", "build", "field", "get", "load"]

SETTINGS: tuple[Setting, ...] = server.SETTINGS + bridge.SETTINGS + client.SETTINGS

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


def server_settings() -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.scope == "server")


def _parse(setting: Setting, environ: Mapping[str, str]) -> tuple[Any, str | None]:
    """The setting's value from ``environ`` (default filled in; None when unset), or the problem."""
    raw = environ.get(setting.name, "") or setting.default or ""
    if raw == "":
        return None, None
    if setting.scope != "client" and UNSAFE_ENV_CHARS.search(raw):
        return None, f"{setting.name} must not contain spaces, quotes, '$', '#' or backslashes"
    try:
        return setting.parse(raw), None
    except ValueError as exc:
        return None, f"{setting.name} {exc}"


def _parse_all(found: Iterable[Setting], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in found:
        values[setting.name], problem = _parse(setting, environ)
        if problem:
            problems.append(problem)
    return values, problems


def _fail(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting's parsed value (default filled in, None when unset), from ``os.environ`` by default."""
    value, problem = _parse(BY_NAME[name], os.environ if environ is None else environ)
    if problem:
        raise ConfigError(problem)
    return value


def field(name: str) -> Any:
    """A dataclass field filled from the setting ``name`` by ``build``."""
    if name not in BY_NAME:
        raise KeyError(f"{name} is not in the settings registry")
    return dataclasses.field(metadata={"setting": name})


T = TypeVar("T")


def build(cls: type[T], environ: Mapping[str, str]) -> T:
    """An instance of the dataclass ``cls``, each field parsed from the setting its ``field`` names.

    Every problem is reported at once, as ``load`` does.
    """
    names = {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values, problems = _parse_all((BY_NAME[n] for n in names.values()), environ)
    _fail(problems)
    return cls(**{attr: values[name] for attr, name in names.items()})


def load(
    environ: Mapping[str, str], scope: Scope = "server", names: Collection[str] | None = None
) -> dict[str, Any]:
    """Validate ``environ`` against the registry and return parsed values, defaults filled in.

    ``names`` limits the check to those settings of the scope (a command that needs only a few).
    Raises ConfigError listing every problem at once; messages name variables, never values.
    """
    wanted = [s for s in SETTINGS if s.scope == scope and (names is None or s.name in names)]
    values, problems = _parse_all(wanted, environ)
    if scope in ("server", "bridge"):
        auth_on = scope == "server" and values.get("MLFLOW_EXT_APP_NAME") != "none"
        reported = {p.split(" ", 1)[0] for p in problems}
        for setting in wanted:
            needed = setting.required or (setting.required_with_auth and auth_on)
            if needed and values[setting.name] is None and setting.name not in reported:
                problems.append(f"{setting.name} is required: {setting.doc}")
    _fail(problems)
    return values


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values fit to print: secrets that are set become '***'."""
    return {
        name: ("***" if BY_NAME[name].secret and value is not None else value)
        for name, value in values.items()
    }


def read_env_file(path: str) -> dict[str, str]:
    """Parse a KEY=value env file the way both systemd and compose read our unquoted values."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    return parse_env(text, path)


def parse_env(text: str, source: str) -> dict[str, str]:
    """The KEY=value entries of an env file's text; ``source`` names it in errors."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{source}:{number}: expected KEY=value")
        entries[key] = value
    return entries


def apply_env_file(env_file: str | None) -> dict[str, str]:
    """Overlay the env file on this process's environment, as systemd's EnvironmentFile= would.

    The process itself needs the values too: libpq reads PGPASSFILE and boto3 its keys from os.environ.
    Returns a copy of the resulting environment.
    """
    if env_file:
        os.environ.update(read_env_file(env_file))
    return dict(os.environ)


@contextlib.contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """`env` over os.environ for the length of a block (for code that reads only os.environ, such as
    MLflow's clients and boto3), every variable back as it was afterwards, set or unset."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_env_example() -> str:
    """docker/mlflow.env.example: every server setting, secrets and optional ones commented out."""
    lines = [
        "# Environment of mlflow-ext server: the platform's one configuration contract.",
        "# Generated by `mlflow-ext server settings --format env`; do not edit by hand.",
        "# Values are unquoted and free of spaces, '$' and '#': Docker and systemd parse them alike.",
    ]
    for setting in server_settings():
        lines.append("")
        lines.append(f"# {setting.doc}")
        flags = []
        if setting.required or setting.required_with_auth:
            flags.append("required" if setting.required else "required with auth")
        if setting.secret:
            flags.append("secret")
        if setting.default is not None:
            flags.append(f"default {setting.default}")
        if flags:
            lines.append(f"# ({', '.join(flags)})")
        active = setting.required or setting.required_with_auth
        lines.append(f"{'' if active else '# '}{setting.name}={setting.example}")
    return "\n".join(lines) + "\n"


def render_markdown_table(scope: Scope = "server") -> str:
    """The README's variable table."""
    rows = ["| variable | default | required | secret | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        if s.scope != scope:
            continue
        required = "yes" if s.required else ("with auth" if s.required_with_auth else "")
        rows.append(
            f"| `{s.name}` | {f'`{s.default}`' if s.default else ''} | {required} | "
            f"{'yes' if s.secret else ''} | {s.doc} |"
        )
    return "\n".join(rows) + "\n"
