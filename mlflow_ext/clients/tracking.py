"""Is the MLflow server there? One quick request before a command starts talking to it.

MLflow's client retries a failed request for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and its backoff),
TLS failures and refused connections included, then prints a stack of urllib3 errors. A command asks
``check_server`` first: a single request with a short time-out, no retries, whose failure is classified
(TLS, refused, unknown host, time-out) and named with the setting that fixes it. Any HTTP answer, even 401
or 404, means the server is there; MLflow's own retries then cover what goes wrong later.

No tracking URI is a configuration error: MLflow would fall back to a local ``./mlflow.db`` (or
``./mlruns``) in the current directory and then report everything as not found. A URI naming a local
store on purpose (``sqlite:``, ``file:``, a path) is taken as it is.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mlflow_ext import settings
from mlflow_ext.errors import ConfigError, ServerUnreachable

TRACKING_URI = "MLFLOW_TRACKING_URI"
CERT_SETTING = "MLFLOW_TRACKING_SERVER_CERT_PATH"
INSECURE_SETTING = "MLFLOW_TRACKING_INSECURE_TLS"
CLIENT_CERT_SETTING = "MLFLOW_TRACKING_CLIENT_CERT_PATH"
PROBE_TIMEOUT_SECONDS = 4.0


def tracking_uri(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The tracking URI from ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``; ConfigError when neither."""
    environ = os.environ if environ is None else environ
    uri = (given or "").strip() or environ.get(TRACKING_URI, "").strip()
    if not uri:
        raise ConfigError(
            f"no MLflow server: set {TRACKING_URI} (or pass --tracking-uri) to its URL, "
            "e.g. https://mlflow.example.com"
        )
    return uri


def _verify(environ: Mapping[str, str]) -> bool | str:
    """What requests verifies the server's certificate against, the way MLflow's client does."""
    if settings.get(INSECURE_SETTING, environ):
        return False
    cert = settings.get(CERT_SETTING, environ)
    return str(cert) if cert else True


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and the urllib3 ``reason`` they carry, outermost first."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo += list(getattr(current, "args", ()))
    return seen


def _cause(exc: BaseException) -> str:
    """The innermost useful message: 'certificate verify failed: self-signed certificate', ..."""
    for link in reversed(_chain(exc)):
        if isinstance(link, ssl.SSLError | OSError) and str(link):
            return str(link)
    return str(exc)


def describe_failure(uri: str, exc: BaseException, environ: Mapping[str, str] | None = None) -> str:
    """A one-line message for a failed connection to ``uri``, naming the setting that fixes it."""
    import requests

    environ = os.environ if environ is None else environ
    parts = urlsplit(uri)
    where = parts.netloc or uri
    chain = _chain(exc)
    if isinstance(exc, requests.exceptions.SSLError) or any(isinstance(c, ssl.SSLError) for c in chain):
        cause = _cause(exc)
        if "CERTIFICATE_VERIFY_FAILED" in cause or "certificate verify failed" in cause:
            current = environ.get(CERT_SETTING)
            hint = (
                f"{CERT_SETTING} is {current}, which does not verify it"
                if current
                else f"set {CERT_SETTING} to the CA certificate that signed it (a file of PEM certificates)"
            )
            return f"cannot verify the TLS certificate of {where} ({cause}): {hint}"
        return f"TLS with {where} failed ({cause}); check {CERT_SETTING} and {CLIENT_CERT_SETTING}"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer from {where} within {PROBE_TIMEOUT_SECONDS:g} s (is {TRACKING_URI} right?)"
    names = {type(c).__name__ for c in chain}
    text = " ".join(str(c) for c in chain)
    if "NameResolutionError" in names or "Name or service not known" in text or "gaierror" in names:
        return f"cannot resolve the host name {parts.hostname!r} of {TRACKING_URI} ({uri})"
    if "ConnectionRefusedError" in names or "Connection refused" in text:
        return f"connection to {where} refused: no server listens there (is {TRACKING_URI} right?)"
    return f"cannot reach {where}: {_cause(exc)}"


def check_server(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The tracking URI, once a server answers there; ConfigError or ServerUnreachable otherwise."""
    import requests

    environ = os.environ if environ is None else environ
    uri = tracking_uri(given, environ)
    if urlsplit(uri).scheme not in ("http", "https"):
        return uri  # a local store, named on purpose
    kwargs: dict[str, Any] = {"verify": _verify(environ)}
    client_cert = settings.get(CLIENT_CERT_SETTING, environ)
    if client_cert:
        kwargs["cert"] = str(client_cert)
    try:
        # Any answer will do (401 before the credentials, 404 under a path prefix): the server is there.
        url = uri.rstrip("/") + "/health"
        requests.get(url, allow_redirects=False, timeout=PROBE_TIMEOUT_SECONDS, **kwargs).close()
    except requests.exceptions.RequestException as exc:
        raise ServerUnreachable(describe_failure(uri, exc, environ)) from None
    return uri
