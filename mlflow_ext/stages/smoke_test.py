"""`smoke-test`: the deployment answers like the registered model it claims to serve.

The deployment is found by name on its target (``local`` reads ``<root>/<name>/deployment.json``). The
first rows of the test data (the model signature's input columns, else every column but ``--target``)
go to ``<endpoint>/invocations`` as ``dataframe_split``. Checked, in order: the deployment runs and
serves the expected version (MLFLOW_MODEL_VERSION when set), the answer is JSON with one prediction per
row and no empty ones, and (``compare``) each prediction equals what the registered version predicts
here through pyfunc. Any failure raises StageFailed naming it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.common import loaded_model, mlflow_message, model_signature
from mlflow_ext.stages.deploy.base import DeployTarget
from mlflow_ext.stages.evaluate import load_table

_SHOWN = 5


@dataclass
class SmokeResult:
    name: str
    target: str
    endpoint: str | None
    model: str
    version: str
    rows: int
    latency_ms: float
    compared: bool
    predictions: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": True}


def _input_columns(model_uri: str) -> list[str] | None:
    try:
        signature = model_signature(model_uri)
    except Exception as exc:
        raise StageFailed(f"cannot read {model_uri}'s signature: {mlflow_message(exc)}") from None
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return None
    return list(inputs.input_names())


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, int | float) and isinstance(right, int | float):
        return math.isclose(float(left), float(right), rel_tol=1e-6, abs_tol=1e-9)
    return str(left) == str(right)


def _plain(values: Any) -> list[Any]:
    """Local predictions as JSON would carry them."""
    import numpy as np
    import pandas as pd

    if isinstance(values, pd.DataFrame):
        values = values.iloc[:, 0] if values.shape[1] == 1 else values.to_dict(orient="records")
    if isinstance(values, pd.Series | np.ndarray):
        return list(json.loads(pd.Series(list(values)).to_json(orient="values")))
    return list(values)


def smoke_test(
    target: DeployTarget,
    name: str,
    data: str,
    *,
    rows: int = 20,
    target_column: str | None = None,
    expected_version: str | None = None,
    compare: bool = True,
) -> SmokeResult:
    deployment = target.get(name)
    if deployment is None:
        raise StageFailed(f"no deployment named {name} on target {target.name}")
    if deployment.status != "running":
        raise StageFailed(f"deployment {name} ({deployment.model_uri}) is {deployment.status}, not running")
    if expected_version and deployment.version != expected_version:
        raise StageFailed(
            f"deployment {name} serves version {deployment.version} of {deployment.model}, "
            f"expected version {expected_version}"
        )
    frame = load_table(data)
    if rows > 0:
        frame = frame.head(rows)
    if len(frame) == 0:
        raise StageFailed(f"test data {data} has no rows to send")
    columns = _input_columns(deployment.model_uri)
    if columns is not None:
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise StageFailed(f"test data {data} lacks the model's input column(s) {', '.join(missing)}")
        features = frame[columns]
    elif target_column:
        features = frame.drop(columns=[target_column], errors="ignore")
    else:
        features = frame
    payload = {"dataframe_split": json.loads(features.to_json(orient="split", index=False))}
    started = time.monotonic()
    answer = target.predict(deployment, payload)
    latency = (time.monotonic() - started) * 1000
    predictions = answer.get("predictions") if isinstance(answer, dict) else answer
    if not isinstance(predictions, list):
        raise StageFailed(f"deployment {name} answered without a list of predictions: {str(answer)[:300]}")
    if len(predictions) != len(features):
        raise StageFailed(
            f"deployment {name} returned {len(predictions)} predictions for {len(features)} rows"
        )
    empty = [index for index, value in enumerate(predictions) if _empty(value)]
    if empty:
        raise StageFailed(f"deployment {name} returned empty predictions for rows {empty[:_SHOWN]}")
    if compare:
        try:
            with loaded_model(deployment.model_uri) as model:
                local = _plain(model.predict(features))
        except Exception as exc:
            raise StageFailed(
                f"cannot predict with {deployment.model_uri} here to compare ({mlflow_message(exc)}); "
                "use --no-compare where the model's requirements are not installed"
            ) from None
        differing = [
            f"row {index}: served {served!r}, registered model {own!r}"
            for index, (served, own) in enumerate(zip(predictions, local, strict=False))
            if not _equal(served, own)
        ]
        if len(local) != len(predictions) or differing:
            raise StageFailed(
                f"deployment {name} answers differently from {deployment.model_uri} on "
                f"{len(differing)} of {len(predictions)} rows: " + "; ".join(differing[:_SHOWN])
            )
    return SmokeResult(
        name=name,
        target=target.name,
        endpoint=deployment.endpoint,
        model=deployment.model,
        version=deployment.version,
        rows=len(features),
        latency_ms=round(latency, 1),
        compared=compare,
        predictions=predictions[:_SHOWN],
    )
