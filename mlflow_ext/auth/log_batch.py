"""``POST /api/2.0/mlflow/runs/log-batch`` (and ``/ajax-api/``) without MLflow's protobuf round trip.

MLflow's handler (``_log_batch`` in ``mlflow/server/handlers.py``) reads the JSON body, converts it to a
``LogBatch`` protobuf message with ``ParseDict``, checks it against a schema and converts the message to
entities (``Metric``, ``Param``, ``RunTag``) before it calls the tracking store's ``log_batch``. For a
batch of a thousand metrics the protobuf conversion is about a quarter of the server's time. Here the
plainly well-formed body is turned into the same entities directly:

- a JSON object with ``run_id`` (a non-empty string) and at most ``metrics``, ``params`` and ``tags``
  (lists);
- each metric an object of ``key`` (a non-empty string), ``value`` (a finite number: an integer MLflow
  would store exactly, or a float), ``timestamp`` and optionally ``step`` (64-bit integers, no floats or
  strings), and nothing else (``model_id`` and the dataset fields go to MLflow);
- each param or tag an object of exactly ``key`` (a non-empty string) and ``value`` (a string);
- every string encodable as UTF-8 (a lone surrogate is MLflow's to refuse);
- the request's Content-Type ``application/json``, as MLflow's handler requires.

These entities equal what ``Metric.from_proto`` and friends give for the same body, and they go to the
same store method in the same order, so the store's validation and its errors are MLflow's. The answer is
MLflow's (``{}``, status 200), and an ``MlflowException`` becomes MLflow's error answer through MLflow's
own ``catch_mlflow_exception``. Any other body is handed to MLflow's handler unchanged, so every error of
the request's shape keeps MLflow's code and message.

What stays as it was: the route, its endpoint and every Flask hook around the view: authentication and
MLflow's permission check of the run's experiment (EDIT) run before it, the after-request hooks after it.
Only the view function of the endpoint is replaced, and only when it is MLflow's own.

The body is decoded once: the guard (``mlflow_ext.auth.guard``) decodes it to check it and shares the
result; a before-request hook hands it to Flask as the request's JSON, which MLflow's validators, MLflow's
handler and this route then read. ``MLFLOW_EXT_FAST_LOG_BATCH=false`` turns the route off (MLflow's
handler serves every request); the shared body is used either way.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from mlflow_ext import mlflow_internals, settings
from mlflow_ext.auth import guard
from mlflow_ext.rest_store import EXACT_INT, INT64_MAX, INT64_MIN

_logger = logging.getLogger(__name__)

LOG_BATCH_PATHS = ("/api/2.0/mlflow/runs/log-batch", "/ajax-api/2.0/mlflow/runs/log-batch")

_TOP_FIELDS = frozenset(("run_id", "metrics", "params", "tags"))
_METRIC_FIELDS = frozenset(("key", "value", "timestamp", "step"))
_METRIC_REQUIRED = frozenset(("key", "value", "timestamp"))
_PAIR_FIELDS = frozenset(("key", "value"))

Batch = tuple[str, list[Any], list[Any], list[Any]]


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the server answers well-formed log-batch requests itself (``MLFLOW_EXT_FAST_LOG_BATCH``)."""
    return bool(settings.get("MLFLOW_EXT_FAST_LOG_BATCH", os.environ if environ is None else environ))


def text(value: Any) -> bool:
    """A non-empty string that protobuf would take (UTF-8 encodable)."""
    if type(value) is not str or not value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _value_text(value: Any) -> bool:
    """A string (possibly empty) that protobuf would take."""
    return type(value) is str and (not value or text(value))


def _metric_values(item: Any, keys: set[str]) -> tuple[str, float, int, int] | None:
    """(key, value as a float, timestamp, step) of a plainly well-formed metric object, or None. ``keys``
    holds the keys found well-formed so far (a batch repeats a few keys a thousand times)."""
    if type(item) is not dict:
        return None
    # The fields allowed and required: all four, or all but ``step``.
    if len(item) == 4:
        if item.keys() != _METRIC_FIELDS:
            return None
        step = item["step"]
    elif len(item) == 3 and item.keys() == _METRIC_REQUIRED:
        step = 0
    else:
        return None
    key, value, timestamp = item["key"], item["value"], item["timestamp"]
    if type(key) is not str:
        return None
    if key not in keys:
        if not text(key):
            return None
        keys.add(key)
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            return None
    elif kind is int and -EXACT_INT <= value <= EXACT_INT:
        value = float(value)
    else:
        return None
    if type(timestamp) is not int or not INT64_MIN <= timestamp <= INT64_MAX:
        return None
    if type(step) is not int or not INT64_MIN <= step <= INT64_MAX:
        return None
    return key, value, timestamp, step


def parse_metric(item: Any, run_id: str | None = None) -> Any:
    """The ``Metric`` MLflow's handler builds from this well-formed metric object (with ``run_id``, as
    log-metric's handler sets it), or None to leave it to MLflow."""
    from mlflow.entities import Metric

    values = _metric_values(item, set())
    return None if values is None else Metric(*values, run_id=run_id)


def parse_batch(document: Any) -> Batch | None:
    """(run_id, metrics, params, tags) as MLflow's handler would build them, or None to leave it to MLflow."""
    from mlflow.entities import Metric, Param, RunTag

    if type(document) is not dict or not _TOP_FIELDS.issuperset(document):
        return None
    run_id = document.get("run_id")
    if not isinstance(run_id, str) or not text(run_id):
        return None
    raw_metrics = document.get("metrics", [])
    raw_params = document.get("params", [])
    raw_tags = document.get("tags", [])
    if type(raw_metrics) is not list or type(raw_params) is not list or type(raw_tags) is not list:
        return None
    metrics = []
    keys: set[str] = set()
    for item in raw_metrics:
        values = _metric_values(item, keys)
        if values is None:
            return None
        metrics.append(Metric(*values))
    pairs: list[list[Any]] = []
    for raw, entity in ((raw_params, Param), (raw_tags, RunTag)):
        built = []
        for item in raw:
            if type(item) is not dict or item.keys() != _PAIR_FIELDS:
                return None
            if not (text(item["key"]) and _value_text(item["value"])):
                return None
            built.append(entity(item["key"], item["value"]))
        pairs.append(built)
    return run_id, metrics, pairs[0], pairs[1]


def is_json(content_type: str | None) -> bool:
    """MLflow's handler's own test (``_validate_content_type``): the type before any ``;``, as sent."""
    return content_type is not None and content_type.split(";")[0] == "application/json"


def make_view(original: Callable[..., Any]) -> Callable[..., Any]:
    """The log-batch view: well-formed bodies answered here, every other request by ``original``."""
    from flask import Response, request
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.server.handlers import catch_mlflow_exception
    from mlflow.utils.proto_json_utils import message_to_json

    answer = message_to_json(LogBatch.Response())

    @catch_mlflow_exception
    @mlflow_internals.disable_if_artifacts_only
    def log_batch_view() -> Any:
        batch = None
        if is_json(request.content_type):
            batch = parse_batch(request.get_json(force=True, silent=True))
        if batch is None:
            return original()
        run_id, metrics, params, tags = batch
        mlflow_internals.tracking_store().log_batch(run_id=run_id, metrics=metrics, params=params, tags=tags)
        response = Response(mimetype="application/json")
        response.set_data(answer)
        return response

    log_batch_view.__name__ = getattr(original, "__name__", "log_batch_view")
    return log_batch_view


def seed_request_json() -> None:
    """Before-request hook: the guard's decoded body becomes the request's JSON (no second decode).

    Only for a JSON request whose body is byte for byte the one the guard decoded; Flask decodes it with
    the same ``json.loads``, so everything that reads the request's JSON sees what it would have seen.
    """
    from flask import request

    shared = guard.shared_body()
    if shared is None or not request.is_json:
        return
    raw, document = shared
    if request.get_data(cache=True) == raw:
        # Flask's cache of get_json, one slot per value of ``silent``.
        request._cached_json = (document, document)


def install(flask_app: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Share the guard's decoded body with Flask; serve log-batch here unless turned off.

    True when the fast route is in place.
    """
    from mlflow.server import handlers

    flask_app.before_request_funcs.setdefault(None, []).insert(0, seed_request_json)
    if not enabled(environ):
        return False
    original = getattr(handlers, "_log_batch", None)
    endpoints = {
        rule.endpoint
        for rule in flask_app.url_map.iter_rules()
        if rule.rule in LOG_BATCH_PATHS and "POST" in (rule.methods or ())
    }
    if (
        original is None
        or len(endpoints) != 1
        or flask_app.view_functions.get(next(iter(endpoints))) is not original
    ):
        _logger.warning("MLflow's log-batch view not found as expected; MLflow's handler serves it")
        return False
    flask_app.view_functions[next(iter(endpoints))] = make_view(original)
    return True
