"""What every stage needs: the model version it works on, its run, the data that run recorded.

The bridge schedules release pipelines with MLFLOW_MODEL_NAME, MLFLOW_MODEL_VERSION, MLFLOW_MODEL_ALIAS,
MLFLOW_RUN_ID, MLFLOW_MODEL_URI and MLFLOW_TRACKING_URI; GoCD adds GO_PIPELINE_NAME, GO_PIPELINE_COUNTER
and the other GO_* variables. Options always win over the environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_ext import run_context as keys
from mlflow_ext.data import Column
from mlflow_ext.errors import ConfigError, StageFailed, StageNotFound
from mlflow_ext.lineage import ModelURIError, parse_uri

# Version tags `register` sets: which GoCD pipeline instance built the version.
BUILD_PIPELINE = "build.pipeline"
BUILD_COUNTER = "build.counter"
BUILD_URL = "build.url"

ENV_MODEL_NAME = "MLFLOW_MODEL_NAME"
ENV_MODEL_VERSION = "MLFLOW_MODEL_VERSION"
ENV_MODEL_ALIAS = "MLFLOW_MODEL_ALIAS"
ENV_MODEL_URI = "MLFLOW_MODEL_URI"


def env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A variable's value, or None when unset or empty (GoCD passes declared-but-empty variables)."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def quoted(value: str, what: str) -> str:
    """``value`` as a single-quoted literal of MLflow's search syntax."""
    if "'" in value:
        raise ConfigError(f"{what} {value!r} contains a single quote, which registry searches cannot match")
    return f"'{value}'"


def client(tracking_uri: str | None = None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# Without a destination MLflow's model downloads (``load_model``, ``get_model_info``) land in a new temporary
# directory that is never removed: an agent that evaluates and smoke-tests every promoted version would keep
# a copy of each model. These two download into a directory removed once the model has been used.


@contextlib.contextmanager
def loaded_model(uri: str) -> Iterator[Any]:
    """The pyfunc model at ``uri``, its files in a directory removed on exit."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="mlflow-ext-model-") as directory:
        yield mlflow.pyfunc.load_model(uri, dst_path=directory)


def model_signature(uri: str) -> Any:
    """The signature of the model at ``uri``, read from its MLmodel file alone."""
    import mlflow.artifacts
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="mlflow-ext-model-") as directory:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri.rstrip('/')}/MLmodel", dst_path=directory
        )
        return Model.load(local).signature


def _uri_parts(environ: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    uri = env(ENV_MODEL_URI, environ)
    if not uri:
        return None, None
    try:
        target = parse_uri(uri)
    except ModelURIError as exc:
        raise ConfigError(f"{ENV_MODEL_URI}: {exc}") from None
    return target.model, target.version


def model_name(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    name = option or env(ENV_MODEL_NAME, environ) or _uri_parts(environ)[0]
    if not name:
        raise ConfigError(f"no model name: pass --model or set {ENV_MODEL_NAME}")
    return name


def version_option(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    version = option or env(ENV_MODEL_VERSION, environ) or _uri_parts(environ)[1]
    if version is not None and not version.isdigit():
        raise ConfigError(f"model version must be a whole number, not {version!r}")
    return version


def alias(option: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    return option or env(ENV_MODEL_ALIAS, environ)


def mlflow_message(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.splitlines()[0] if message else type(exc).__name__


def get_version(mlflow_client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise StageNotFound(f"model {name} has no version {version} in the registry") from None
        raise StageFailed(f"cannot read version {version} of model {name}: {mlflow_message(exc)}") from None


def build_version(mlflow_client: Any, name: str, pipeline: str, counter: str) -> Any | None:
    """The version that build pipeline instance ``pipeline``/``counter`` registered, if any."""
    found = mlflow_client.search_model_versions(
        f"name = {quoted(name, 'model name')} AND tags.`{BUILD_PIPELINE}` = {quoted(pipeline, 'pipeline')} "
        f"AND tags.`{BUILD_COUNTER}` = {quoted(counter, 'pipeline counter')}"
    )
    return max(found, key=lambda v: int(v.version)) if found else None


def resolve_version(
    mlflow_client: Any, name: str, option: str | None, environ: Mapping[str, str] | None = None
) -> Any:
    """The version a stage works on: ``option``, MLFLOW_MODEL_VERSION, MLFLOW_MODEL_URI, or, in a build
    pipeline (GO_PIPELINE_NAME and GO_PIPELINE_COUNTER set), the version this instance registered."""
    version = version_option(option, environ)
    if version is not None:
        return get_version(mlflow_client, name, version)
    pipeline, counter = env("GO_PIPELINE_NAME", environ), env("GO_PIPELINE_COUNTER", environ)
    if pipeline and counter:
        found = build_version(mlflow_client, name, pipeline, counter)
        if found is None:
            raise StageFailed(
                f"no model version: MLFLOW_MODEL_VERSION is empty (the bridge sets it when it schedules a "
                f"release) and pipeline {pipeline} #{counter} registered no version of model {name} "
                "(in a build pipeline: did its register stage run?); pass --version"
            )
        return found
    raise ConfigError(f"no model version: pass --version or set {ENV_MODEL_VERSION}")


def version_run_id(mlflow_client: Any, version: Any) -> str:
    """The run that logged a version's model (MLflow 3 may link it through the logged model only)."""
    run_id = getattr(version, "run_id", None)
    model_id = getattr(version, "model_id", None)
    if not run_id and model_id:
        run_id = mlflow_client.get_logged_model(str(model_id)).source_run_id
    if not run_id:
        raise StageFailed(f"version {version.version} of model {version.name} is linked to no run")
    return str(run_id)


@dataclass(frozen=True)
class RecordedData:
    """One dataset a run recorded with mlflow_ext.data.log_data (its lineage.data.<name>.* tags)."""

    name: str
    role: str | None
    fingerprint: str
    uri: str | None
    rows: int | None
    format: str | None
    schema_text: str | None

    @property
    def schema(self) -> tuple[Column, ...] | None:
        return None if self.schema_text is None else parse_schema(self.schema_text)

    def describe(self) -> str:
        rows = "" if self.rows is None else f", {self.rows} rows"
        columns = "" if self.schema_text is None else f", columns {self.schema_text}"
        return f"{self.name} ({self.fingerprint}{rows}{columns})"


def recorded_data(tags: Mapping[str, str]) -> list[RecordedData]:
    found = []
    suffix = ".fingerprint"
    for key in sorted(tags):
        if not (key.startswith(keys.DATA_PREFIX) and key.endswith(suffix)):
            continue
        name = key[len(keys.DATA_PREFIX) : -len(suffix)]
        prefix = f"{keys.DATA_PREFIX}{name}."
        rows = tags.get(prefix + "rows")
        found.append(
            RecordedData(
                name=name,
                role=tags.get(prefix + "role"),
                fingerprint=tags[key],
                uri=tags.get(prefix + "uri"),
                rows=int(rows) if rows and rows.isdigit() else None,
                format=tags.get(prefix + "format"),
                schema_text=tags.get(prefix + "schema"),
            )
        )
    return found


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside brackets: Arrow types such as timestamp[us, tz=UTC] keep theirs."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "[(<":
            depth += 1
        elif char in "])>":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    parts.append(text[start:])
    return parts


def parse_schema(text: str) -> tuple[Column, ...]:
    """Inverse of DataFingerprint.schema_text (``name:type, name:type``) for names without ", "."""
    columns = []
    for part in _split_top_level(text, ", "):
        if not part:
            continue
        pieces = _split_top_level(part, ":")
        name, kind = (":".join(pieces[:-1]), pieces[-1]) if len(pieces) > 1 else (part, "")
        columns.append(Column(name, kind))
    return tuple(columns)


def deployment_name(model: str, alias_name: str | None, version: str | None) -> str:
    """``<model>-<alias>`` (or ``<model>-v<version>``), lower-case letters, digits, ``.``, ``_``, ``-``."""
    suffix = alias_name or (f"v{version}" if version else None)
    if not suffix:
        raise ConfigError("no deployment name: pass --name, or set MLFLOW_MODEL_ALIAS or a version")
    return sanitise_name(f"{model}-{suffix}")


def sanitise_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    if not name:
        raise ConfigError(f"deployment name {text!r} has no letters or digits")
    return name[:100]


def check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,99}", name):
        raise ConfigError(
            f"deployment name {name!r}: use at most 100 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
