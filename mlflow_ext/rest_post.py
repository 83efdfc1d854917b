"""The client store's hot writes (``log_metric``, ``log_batch``) posted over a kept-alive connection.

MLflow's client sends every request through ``http_request``: it asks each request-header provider again
(MLflow's Databricks provider tries imports that fail outside Databricks), the body it was given as JSON
text is parsed and dumped again for ``requests``, and ``requests`` reads the proxy settings from the
environment once more. For one metric that is about 1 ms of the client's CPU and most of its wait on a
platform that answers in 2 ms. ``Poster`` sends the body as it was built, on an ``http.client``
connection kept per thread, with the headers ``http_request`` would send.

It only takes what it sends exactly as MLflow would, and hands anything else back (``post`` returns
False, and the store calls MLflow's ``_call_endpoint``, which decides as always):

- credentials of the plain kinds (a username and password, or a token) or none; never an auth plugin,
  AWS SigV4, Databricks (SDK, workspace id, OAuth client secret) or a client certificate;
- no workspace, no Databricks traffic id, no request-header provider but MLflow's own two (plugin
  providers may give a different header per request), no proxy for the URL in the environment, no
  credentials in the URL;
- an answer with a status MLflow retries (429, 5xx), or a fresh connection that failed: those go to
  MLflow's retries. Any other answer is judged by MLflow's own check (``verify_rest_response`` on the
  same status and body): a refused metric or a bad password raises here what MLflow raises.

A kept-alive connection the server has meanwhile closed is reopened once, as ``urllib3`` does. The
connection, its TLS context (verification as ``requests`` does it: the server certificate path, or none
with ``MLFLOW_TRACKING_INSECURE_TLS``, or ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, or certifi's
bundle), the socket timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT``), the proxy check and MLflow's own headers are
settled when a connection opens; a forked process opens its own.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import threading
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from mlflow_ext import mlflow_internals


class _Target(NamedTuple):
    """Where a request goes and how its connection is checked: what a kept connection must match."""

    scheme: str
    host: str
    port: int | None
    prefix: str  # the tracking URI's path, before the endpoint
    verify: Any  # requests' ``verify``: True, False or a CA file or directory


def target(creds: Any) -> tuple[_Target, str | None] | None:
    """The request's target and ``Authorization`` header, or None when MLflow's ``http_request`` might send
    it otherwise."""
    if (
        creds.auth
        or creds.aws_sigv4
        or creds.use_databricks_sdk
        or creds.client_cert_path
        or creds.workspace_id
        or getattr(creds, "client_secret", None)
    ):
        return None
    url = urlsplit(creds.host)
    if url.scheme not in ("http", "https") or not url.hostname or "@" in url.netloc:
        return None
    if creds.username and creds.password:
        basic = f"{creds.username}:{creds.password}".encode()
        authorization: str | None = "Basic " + base64.standard_b64encode(basic).decode()
    elif creds.token:
        authorization = f"Bearer {creds.token}"
    else:
        authorization = None
    return _Target(url.scheme, url.hostname, url.port, url.path.rstrip("/"), creds.verify), authorization


def _tls_context(verify: Any) -> ssl.SSLContext:
    """Certificate checks as ``requests`` makes them for ``verify``."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    if verify is True:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


class _Open(NamedTuple):
    connection: http.client.HTTPConnection
    target: _Target
    headers: dict[str, str]  # MLflow's own request headers, and the content type
    pid: int


class Poster:
    """Kept-alive connections (one per thread) for one store."""

    def __init__(self) -> None:
        self._local = threading.local()

    def post(self, creds: Any, endpoint: str, body: str) -> bool:
        """POST ``body`` (JSON text) to ``endpoint``: True once answered 200, False to leave the request
        to MLflow's ``http_request``; MLflow's exception for an error it would raise at once."""
        found = target(creds)
        if found is None or not mlflow_internals.plain_rest_request():
            return False
        where, authorization = found
        payload = body.encode()
        for _ in range(2):
            opened, fresh = self._connection(where)
            if opened is None:
                return False
            headers = opened.headers
            if authorization is not None:
                headers = {**headers, "Authorization": authorization}
            try:
                opened.connection.request("POST", where.prefix + endpoint, payload, headers)
                response = opened.connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh:
                    return False
                continue  # a kept-alive connection the server had closed: once more on a new one
            if response.will_close:
                self.close()
            if response.status in mlflow_internals.retried_http_statuses():
                return False
            if response.status != 200 or answer != b"{}":  # MLflow's client checks the rest
                mlflow_internals.verify_rest_answer(
                    response.status, answer, dict(response.getheaders()), endpoint
                )
            return True
        return False

    def close(self) -> None:
        opened = getattr(self._local, "opened", None)
        self._local.opened = None
        if opened is not None and opened.pid == os.getpid():
            opened.connection.close()

    def _connection(self, where: _Target) -> tuple[_Open | None, bool]:
        """This thread's connection to ``where`` (and whether it is new), or None when the request is not
        one to send here."""
        opened = getattr(self._local, "opened", None)
        if opened is not None and (opened.pid != os.getpid() or opened.target != where):
            self.close()  # another process's (its TLS state is not this one's) or another server's
            opened = None
        if opened is not None:
            return opened, False
        host = f"[{where.host}]" if ":" in where.host else where.host  # an IPv6 address
        url = f"{where.scheme}://{host}{f':{where.port}' if where.port else ''}{where.prefix}/"
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT
        from mlflow.tracking.request_header.registry import resolve_request_headers
        from requests.utils import get_environ_proxies

        if get_environ_proxies(url):
            return None, True
        timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get()
        if where.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                where.host, where.port, timeout=timeout, context=_tls_context(where.verify)
            )
        else:
            connection = http.client.HTTPConnection(where.host, where.port, timeout=timeout)
        headers = {**resolve_request_headers(), "Content-Type": "application/json"}
        opened = self._local.opened = _Open(connection, where, headers, os.getpid())
        return opened, True
