"""nginx terminates TLS 1.2+ with the generated certificate and redirects plain HTTP."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from tests.infra.conftest import TLS_CERT

pytestmark = pytest.mark.usefixtures("converged")


def _context(**kwargs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=TLS_CERT)
    for key, value in kwargs.items():
        setattr(context, key, value)
    return context


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_certificate_verifies_for_local_names(name):
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        _context().wrap_socket(raw, server_hostname=name) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_is_refused():
    """The client offers only TLS 1.0 and 1.1; the server answers with a protocol_version alert."""
    context = _context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_tls_1_2_is_accepted():
    context = _context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with (
        socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_http_redirects_to_https():
    connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    connection.request("GET", "/some/path?x=1", headers={"Host": "localhost"})
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == "https://localhost/some/path?x=1"


def test_health_through_the_proxy():
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=_context())
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"OK")
    assert "nginx/" not in (response.getheader("Server") or "")


def test_unknown_host_header_is_refused_by_the_server():
    """The name the client used reaches MLflow's allowed-hosts check unchanged."""
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=_context())
    connection.request(
        "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "evil.example.com"}
    )
    assert connection.getresponse().status in (400, 403)
