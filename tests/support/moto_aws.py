"""An AWS stand-in for tests: moto in server mode on a free loopback port, inside the test process.

boto3 (>= 1.28) sends every client it creates to ``AWS_ENDPOINT_URL``, so code that builds its own
clients (MLflow's SageMaker deployment client does) reaches moto without being told; ``env()`` holds
that and fake credentials, with the host's AWS config and credential files kept out.

moto 5.2 does not implement SageMaker's UpdateEndpoint, which MLflow's client calls to move an endpoint
to a new model. ``UPDATE_ENDPOINT`` adds it, for the server's lifetime only, as AWS documents it: the
endpoint adopts the named endpoint configuration (its production variants and data capture), a missing
endpoint or configuration is a ValidationException. Like the rest of moto's SageMaker, the change is
immediate: the endpoint never shows ``Updating``.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account


def _update_endpoint(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint

    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    config_name = self._get_param("EndpointConfigName")
    config = backend.describe_endpoint_config(config_name)  # ValidationException when missing
    endpoint.endpoint_config_name = config_name
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    endpoint.data_capture_config = config["DataCaptureConfig"]
    endpoint.last_modified_time = utcnow()
    return ActionResult({"EndpointArn": endpoint.arn})


UPDATE_ENDPOINT = _update_endpoint


@dataclass
class MotoAWS:
    endpoint_url: str
    home: Path

    def env(self, region: str | None = None) -> dict[str, str]:
        """What a process needs to talk to this server and nothing else (no host config, no IMDS)."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "",
            "AWS_CONFIG_FILE": str(self.home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }
        if region:
            env["AWS_DEFAULT_REGION"] = region
        return env

    def client(self, service: str, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextlib.contextmanager
def moto_server(home: Path, stop_timeout: float = 15) -> Iterator[MotoAWS]:
    """Serve moto on 127.0.0.1 (a port the kernel picks) until the block ends, then reset its state."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.sagemaker.responses import SageMakerResponse
    from werkzeug.serving import make_server

    patched = not hasattr(SageMakerResponse, "update_endpoint")
    if patched:
        SageMakerResponse.update_endpoint = UPDATE_ENDPOINT  # type: ignore[attr-defined]
    app = DomainDispatcherApplication(create_backend_app)
    # make_server binds here, in this thread: a failure raises at once instead of leaving a thread waiting.
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()
    endpoint_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield MotoAWS(endpoint_url, home)
    finally:
        with contextlib.suppress(OSError):  # moto's state lives in this process: drop it
            urllib.request.urlopen(
                urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST"), timeout=10
            ).close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=stop_timeout)
        if patched:
            del SageMakerResponse.update_endpoint  # type: ignore[attr-defined]
