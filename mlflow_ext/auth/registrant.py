"""Who registered a model version: MLflow's ``user_id`` of the version, filled in by the auth app.

MLflow's ModelVersion has a ``user_id`` that its server never sets: ``create_model_version`` takes no
user and no API writes one, so every version reads "registered by nobody". The server is the one place
that knows who created it (the authenticated user, never a client's claim), so an after-request hook of
the auth app writes that user into the new version's ``user_id`` once MLflow's handler has created it,
and into the response. Every reader then gets it where MLflow keeps it (``get_model_version``,
``search_model_versions``, ``mlflow-ext inspect``). A failure to write is logged, never turned into an
error: the version exists either way.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, request

from mlflow_ext import mlflow_internals

_CREATE_SUFFIX = "/mlflow/model-versions/create"
_logger = logging.getLogger(__name__)


def _after_request(response: Response) -> Response:
    if request.method != "POST" or response.status_code != 200 or not request.path.endswith(_CREATE_SUFFIX):
        return response
    user = getattr(g.get("_mlflow_ext_authorization"), "username", None)
    if not user:
        return response
    try:
        body: Any = json.loads(response.get_data())
        version = body["model_version"]
        name, number = str(version["name"]), str(version["version"])
    except (ValueError, KeyError, TypeError):
        return response
    try:
        mlflow_internals.set_model_version_user(name, number, str(user))
    except Exception as exc:
        _logger.warning("cannot record who registered %s version %s: %s", name, number, exc)
        return response
    version["user_id"] = str(user)
    response.set_data(json.dumps(body))
    return response


def install(flask_app: Flask) -> None:
    flask_app.after_request(_after_request)
