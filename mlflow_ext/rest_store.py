"""The client's tracking store for ``http`` and ``https`` URIs: MLflow's ``RestStore``, with cheaper
``log_metric`` and ``log_batch``.

How a client gets it: MLflow picks a tracking store by the scheme of the tracking URI in
``_tracking_store_registry`` (``mlflow/tracking/_tracking_service/utils.py``). It registers its own
builders first (``http`` and ``https``: ``_get_rest_store``, which builds ``RestStore`` with
``get_default_host_creds`` bound to the URI), then the ``mlflow.tracking_store`` entry points, which
therefore replace a built-in scheme. ``pyproject.toml`` and ``client/pyproject.toml`` register ``build``
below for ``http`` and ``https``; ``databricks``, ``file``, databases and every other scheme keep MLflow's
builders. ``build`` reads ``MLFLOW_EXT_FAST_CLIENT`` (on by default) each time MLflow builds a store (MLflow
keeps one store per URI in a process): off, it returns what MLflow's own builder returns. (MLflow's
telemetry, off on the platform, then names the scheme of such a URI ``custom_scheme``: it reports any
builder from outside the ``mlflow`` package so.)

What changes: how ``log_metric`` and ``log_batch`` build their request bodies and send them. MLflow
converts the entities to protobuf messages, the message to a dict (``MessageToDict``), fixes the 64-bit
integers back to numbers and dumps the dict (``message_to_json``): for a batch of a thousand metrics that
costs more CPU than the platform's server spends on the same body. Here the same JSON is written straight
from the entities (the metrics as text, each key dumped once per batch; params and tags with
``json.dumps``): the same fields in the same order, ``timestamp`` and ``step`` as numbers, a metric's
value as a float (``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` as strings, as protobuf's JSON writes
them), empty lists left out. The body then goes out on a kept-alive connection (``mlflow_ext.rest_post``:
the same request ``http_request`` would send, without its per-request costs), or to MLflow's
``_call_endpoint`` as MLflow's does when that post leaves it to MLflow.

What stays MLflow's: every other method, and ``log_metric`` and ``log_batch`` themselves for anything
unusual, which is handed to MLflow's method whole: entities of other classes (subclasses too), a metric
with ``model_id``, ``dataset_name``, ``dataset_digest`` or ``run_id`` set, a value that is not a float,
numpy's float64 or an integer a double holds exactly, a timestamp or step that is not a 64-bit integer, a
key or value that is not a string or not encodable as UTF-8, a run id that is not a string, metrics,
params or tags given as anything but a list or a tuple. There MLflow's conversion decides, and raises its
own errors.

``tests/unit/test_rest_store.py`` sends random batches and metrics through this store and through MLflow's
to a local HTTP server and compares the requests.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlflow_ext import mlflow_internals, rest_post, settings

# A LogBatch body's bounds, shared with the server's fast view (mlflow_ext.auth.log_batch): protobuf's int64,
# and the integers a double holds exactly (larger ones go to MLflow: its conversion decides).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_INT = 2**53
_INF = math.inf
# MLflow's REST API paths of the two writes (what ``RestStore._call_endpoint`` posts them to).
LOG_METRIC_ENDPOINT = "/api/2.0/mlflow/runs/log-metric"
LOG_BATCH_ENDPOINT = "/api/2.0/mlflow/runs/log-batch"
# A value as compact JSON, non-ASCII characters as they are (as ``message_to_json`` writes them).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether http(s) tracking URIs get this store (``MLFLOW_EXT_FAST_CLIENT``)."""
    return bool(settings.get("MLFLOW_EXT_FAST_CLIENT", os.environ if environ is None else environ))


def build(store_uri: str, artifact_uri: str | None = None) -> Any:
    """The ``mlflow.tracking_store`` builder for ``http`` and ``https``: this store, or MLflow's when off.

    Built as MLflow's ``_get_rest_store`` builds ``RestStore``: host credentials read on every request by
    ``get_default_host_creds`` for the URI (the artifact URI is not used, as there)."""
    if not enabled():
        return mlflow_internals.mlflow_rest_store(store_uri)
    from mlflow.utils.credentials import get_default_host_creds

    return store_class()(functools.partial(get_default_host_creds, store_uri))


@functools.cache
def store_class() -> type:
    """``FastRestStore``: ``log_metric`` and ``log_batch`` below on MLflow's ``RestStore``.

    Built on first use: MLflow loads this module (its entry point) while ``import mlflow`` is still under
    way."""
    from mlflow.store.tracking.rest_store import RestStore

    return type("FastRestStore", (FastWrites, RestStore), {"__module__": __name__})


def __getattr__(name: str) -> Any:
    if name == "FastRestStore":
        return store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _numpy_float64() -> type | None:
    """numpy's float64 (what most metric functions return; a subclass of float) once something imported
    numpy (a value cannot be one before)."""
    numpy = sys.modules.get("numpy")
    return getattr(numpy, "float64", None) if numpy is not None else None


@functools.cache
def _entity_classes() -> tuple[type, type, type]:
    from mlflow.entities import Metric, Param, RunTag

    return Metric, Param, RunTag


def _pairs(items: Sequence[Any], cls: Any) -> list[dict[str, str]] | None:
    """Params or tags as ``{"key", "value"}`` objects, or None when one is unusual."""
    rows = []
    for item in items:
        if type(item) is not cls:
            return None
        key, value = item.key, item.value
        if type(key) is not str or type(value) is not str:
            return None
        rows.append({"key": key, "value": value})
    return rows


def _metric_fields(metric: Any, keys: dict[str, str], float64: type | None) -> str | None:
    """A metric's ``key``, ``value``, ``timestamp`` and ``step`` members as ``message_to_json`` writes them
    (compact, without the braces), or None when it is unusual. ``keys`` remembers each key's JSON text."""
    key, value, timestamp, step = metric.key, metric.value, metric.timestamp, metric.step
    if (
        type(key) is not str
        or type(timestamp) is not int
        or type(step) is not int
        or not INT64_MIN <= timestamp <= INT64_MAX
        or not INT64_MIN <= step <= INT64_MAX
        or metric.model_id
        or metric.dataset_name
        or metric.dataset_digest
        or metric.run_id
    ):
        return None
    kind = type(value)
    if (kind is int and -EXACT_INT <= value <= EXACT_INT) or kind is float64:
        value = float(value)
    elif kind is not float:
        return None
    if -_INF < value < _INF:
        value_text = repr(value)
    else:
        value_text = '"NaN"' if value != value else ('"Infinity"' if value > 0 else '"-Infinity"')
    key_text = keys.get(key)
    if key_text is None:
        key_text = keys[key] = _dumps(key)
    return f'"key":{key_text},"value":{value_text},"timestamp":{timestamp},"step":{step}'


def _metrics(metrics: Sequence[Any], cls: Any) -> str | None:
    """Metrics as MLflow's ``message_to_json`` writes them (the JSON array, compact), or None when one is
    unusual. Written as text: each key dumped once per batch, a float as ``json.dumps`` writes it (its
    ``repr``)."""
    parts = []
    keys: dict[str, str] = {}
    float64 = _numpy_float64()
    for metric in metrics:
        if type(metric) is not cls:
            return None
        fields = _metric_fields(metric, keys, float64)
        if fields is None:
            return None
        parts.append(f"{{{fields}}}")
    return "[" + ",".join(parts) + "]"


def _checked_utf8(text: str) -> str | None:
    """``text``, or None when it holds a lone surrogate (protobuf refuses it, so MLflow's method decides)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return text


def log_metric_body(run_id: Any, metric: Any) -> str | None:
    """The JSON body of MLflow's ``LogMetric`` request (``run_id`` and its old name ``run_uuid``, then the
    metric), as ``message_to_json`` gives it (compact), or None when anything is unusual."""
    metric_cls, _, _ = _entity_classes()
    if type(run_id) is not str or type(metric) is not metric_cls:
        return None
    fields = _metric_fields(metric, {}, _numpy_float64())
    if fields is None:
        return None
    run = _dumps(run_id)
    return _checked_utf8(f'{{"run_id":{run},"run_uuid":{run},{fields}}}')


def log_batch_body(run_id: Any, metrics: Any, params: Any, tags: Any) -> str | None:
    """The JSON body of MLflow's ``LogBatch`` request for these entities, as ``message_to_json`` gives it
    (compact), or None when anything is unusual (then MLflow's ``log_batch`` builds it)."""
    if type(run_id) is not str:
        return None
    lists = (list, tuple)
    if type(metrics) not in lists or type(params) not in lists or type(tags) not in lists:
        return None
    metric_cls, param_cls, tag_cls = _entity_classes()
    parts = ['{"run_id":', _dumps(run_id)]
    if metrics:
        metrics_text = _metrics(metrics, metric_cls)
        if metrics_text is None:
            return None
        parts += [',"metrics":', metrics_text]
    for name, items, cls in (("params", params, param_cls), ("tags", tags, tag_cls)):
        if items:
            rows = _pairs(items, cls)
            if rows is None:
                return None
            parts += [f',"{name}":', _dumps(rows)]
    return _checked_utf8("".join(parts) + "}")


class FastWrites:
    """The replaced ``log_metric`` and ``log_batch``, mixed into MLflow's ``RestStore`` by ``store_class``:
    ``super()`` is MLflow's method. A body built here goes out on a kept-alive connection
    (``mlflow_ext.rest_post``), or through MLflow's ``_call_endpoint`` when that leaves it to MLflow."""

    get_host_creds: Callable[[], Any]  # MLflow's RestStore's

    def log_metric(self, run_id, metric):
        body = log_metric_body(run_id, metric)
        if body is None:
            return super().log_metric(run_id, metric)
        from mlflow.protos.service_pb2 import LogMetric

        self._post(LogMetric, LOG_METRIC_ENDPOINT, body)
        return None

    def log_batch(self, run_id, metrics, params, tags):
        body = log_batch_body(run_id, metrics, params, tags)
        if body is None:
            return super().log_batch(run_id, metrics, params, tags)
        from mlflow.protos.service_pb2 import LogBatch

        self._post(LogBatch, LOG_BATCH_ENDPOINT, body)
        return None

    def _post(self, api: Any, endpoint: str, body: str) -> None:
        poster = self.__dict__.get("_poster") or self.__dict__.setdefault("_poster", rest_post.Poster())
        if not poster.post(self.get_host_creds(), endpoint, body):
            mlflow_internals.call_rest_endpoint(self, api, body)
