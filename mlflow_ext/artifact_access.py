"""Whether clients are handed presigned URLs of the artifact store, or get every artifact through the server.

MLflow's server tells clients (``/api/3.0/mlflow/server-info``) that it serves multipart downloads and
uploads whenever its artifact repository is S3, and then hands out presigned URLs on the S3 endpoint the
*server* uses (``MLFLOW_S3_ENDPOINT_URL``). The platform's store is on an address only the servers reach:
``127.0.0.1:8333`` on one host, the object-store host's private address on many, ``seaweedfs:8333`` in
compose. A client elsewhere then tries the URL, fails every chunk, and a model download never finishes.

Unless ``MLFLOW_EXT_PRESIGNED_ARTIFACT_URLS`` says clients reach the store there, the server advertises
neither capability and answers the presigned and multipart endpoints with 501, the answer MLflow's client
takes as "not supported" and falls back to streaming through the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from flask import Flask, Response, request

from mlflow_ext import mlflow_internals, settings

SETTING = "MLFLOW_EXT_PRESIGNED_ARTIFACT_URLS"
SERVER_INFO_SUFFIX = "/mlflow/server-info"
CAPABILITIES = ("multipart_uploads_enabled", "multipart_downloads_enabled")
# MLflow's endpoints that answer with presigned URLs of the store (under any static prefix).
PRESIGNING_PATHS = (
    "/mlflow-artifacts/presigned/",
    "/mlflow-artifacts/mpu/",
    "/mlflow/artifacts/presigned-upload-url",
)
NOT_SUPPORTED = {
    "error_code": "NOT_IMPLEMENTED",
    "message": f"presigned URLs of the artifact store are off on this server ({SETTING}=false): "
    "artifacts go through the server",
}


def _refuse_presigning() -> Response | None:
    if any(marker in request.path for marker in PRESIGNING_PATHS):
        return Response(json.dumps(NOT_SUPPORTED), status=501, mimetype="application/json")
    return None


def _withhold_in_flask_answer(response: Response) -> Response:
    """MLflow before 3.17 answers server-info from Flask (3.17 and later: FastAPI, see install)."""
    if response.status_code != 200 or not request.path.endswith(SERVER_INFO_SUFFIX):
        return response
    try:
        info = json.loads(response.get_data())
    except ValueError:
        return response
    if isinstance(info, dict):
        response.set_data(json.dumps({**info, **dict.fromkeys(CAPABILITIES, False)}))
    return response


def install(flask_app: Flask, environ: Mapping[str, str]) -> None:
    """Keep presigned URLs away from clients unless the setting says they reach the store."""
    if settings.get(SETTING, environ):
        return
    mlflow_internals.withhold_server_capabilities(CAPABILITIES)
    flask_app.after_request(_withhold_in_flask_answer)
    flask_app.before_request(_refuse_presigning)
