"""``mlflow-ext bridge serve``: receiver, delivery worker, feedback and reconcile loops in one process.

Settings come from the ``bridge`` scope of the settings registry; a bad value stops the process at start
with a message naming the variable. SIGTERM and SIGINT stop it cleanly; SIGKILL at any point loses nothing
(see ``outbox`` and ``delivery``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from mlflow_ext import settings
from mlflow_ext.bridge import feedback, outbox
from mlflow_ext.bridge.delivery import DeliveryConfig, DeliveryWorker
from mlflow_ext.bridge.receiver import Receiver, serve_in_thread
from mlflow_ext.bridge.reconcile import Reconciler
from mlflow_ext.bridge.registry import MlflowRegistry
from mlflow_ext.clients.gocd import GoCDClient
from mlflow_ext.errors import ConfigError
from mlflow_ext.routing import Router

log = logging.getLogger("mlflow_ext.bridge")

# The bridge does its own retrying; MLflow's client would otherwise block a delivery for minutes.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def resolve(environ: Mapping[str, str]) -> dict[str, Any]:
    values = settings.load(environ, scope="bridge")
    if not values["MLFLOW_EXT_BRIDGE_GOCD_TOKEN"] and not values["MLFLOW_EXT_BRIDGE_GOCD_PASSWORD"]:
        raise ConfigError(
            "invalid configuration:\n  "
            "MLFLOW_EXT_BRIDGE_GOCD_TOKEN or MLFLOW_EXT_BRIDGE_GOCD_PASSWORD is required"
        )
    return values


def export_client_env(values: Mapping[str, Any]) -> None:
    """MLflow's client reads its URI and credentials from os.environ."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    ):
        if values.get(name):
            os.environ[name] = str(values[name])
    for name, value in CLIENT_ENV.items():
        os.environ.setdefault(name, value)


def gocd_client(values: Mapping[str, Any]) -> GoCDClient:
    token = values["MLFLOW_EXT_BRIDGE_GOCD_TOKEN"]
    return GoCDClient(
        values["MLFLOW_EXT_BRIDGE_GOCD_URL"],
        token=token,
        username=None if token else values["MLFLOW_EXT_BRIDGE_GOCD_USERNAME"],
        password=None if token else values["MLFLOW_EXT_BRIDGE_GOCD_PASSWORD"],
        timeout=float(values["MLFLOW_EXT_BRIDGE_GOCD_TIMEOUT"]),
    )


def open_outbox(uri: str) -> outbox.Outbox:
    engine = outbox.create_db_engine(uri)
    return outbox.Outbox(engine)


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("MLFLOW_EXT_BRIDGE_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve(values: Mapping[str, Any]) -> None:
    """Run until SIGTERM/SIGINT."""
    _configure_logging()
    export_client_env(values)
    router = Router(values["MLFLOW_EXT_BRIDGE_ROUTES"])
    box = open_outbox(values["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    if not outbox.schema_ready(box.engine):
        raise ConfigError("the bridge's outbox schema is missing: run `mlflow-ext bridge migrate` first")
    gocd = gocd_client(values)
    registry = MlflowRegistry(values["MLFLOW_TRACKING_URI"])
    stop, wake, feedback_wake = threading.Event(), threading.Event(), threading.Event()
    reconcile_nudge = threading.Event()
    worker = DeliveryWorker(
        box,
        gocd,
        registry,
        DeliveryConfig(
            gocd_user=values["MLFLOW_EXT_BRIDGE_GOCD_USERNAME"],
            tracking_uri=values["MLFLOW_EXT_BRIDGE_PUBLIC_TRACKING_URI"] or values["MLFLOW_TRACKING_URI"],
            retry_max_s=float(values["MLFLOW_EXT_BRIDGE_RETRY_MAX_SECONDS"]),
            paused_recheck_s=float(values["MLFLOW_EXT_BRIDGE_PAUSED_RECHECK_SECONDS"]),
            in_doubt_s=float(values["MLFLOW_EXT_BRIDGE_IN_DOUBT_SECONDS"]),
            workers=int(values["MLFLOW_EXT_BRIDGE_DELIVERY_WORKERS"]),
        ),
        wake,
        gocd_recovered=reconcile_nudge,
    )
    receiver = Receiver(
        (values["MLFLOW_EXT_BRIDGE_HOST"], int(values["MLFLOW_EXT_BRIDGE_PORT"])),
        values["MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET"],
        float(values["MLFLOW_EXT_BRIDGE_MAX_SKEW_SECONDS"]),
        box,
        router,
        on_accepted=wake.set,
    )
    threads = [
        threading.Thread(target=worker.run, args=(stop,), name="bridge-delivery-loop", daemon=True),
    ]
    if values["MLFLOW_EXT_BRIDGE_FEEDBACK"]:
        threads.append(
            threading.Thread(
                target=feedback.run,
                args=(box, gocd, registry, stop, feedback_wake),
                name="bridge-feedback",
                daemon=True,
            )
        )
    interval = float(values["MLFLOW_EXT_BRIDGE_RECONCILE_SECONDS"])
    if interval > 0:
        reconciler = Reconciler(
            box, router, registry, adopt_existing=bool(values["MLFLOW_EXT_BRIDGE_ADOPT_EXISTING"])
        )
        threads.append(
            threading.Thread(
                target=reconciler.run,
                args=(interval, stop, wake, reconcile_nudge),
                name="bridge-reconcile",
                daemon=True,
            )
        )
    skew_ms = int(float(values["MLFLOW_EXT_BRIDGE_MAX_SKEW_SECONDS"]) * 1000)
    threads.append(
        threading.Thread(target=_prune, args=(box, skew_ms, stop), name="bridge-prune", daemon=True)
    )

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        wake.set()
        feedback_wake.set()
        reconcile_nudge.set()
        threading.Thread(target=receiver.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for thread in threads:
        thread.start()
    log.info(
        "bridge listening on %s:%s, %d route(s)",
        values["MLFLOW_EXT_BRIDGE_HOST"],
        values["MLFLOW_EXT_BRIDGE_PORT"],
        len(router.routes),
    )
    receiver_thread = serve_in_thread(receiver)
    while not stop.is_set():
        stop.wait(1)
    receiver_thread.join(10)
    receiver.server_close()
    for thread in threads:
        thread.join(10)
    log.info("bridge stopped")


def _prune(box: outbox.Outbox, skew_ms: int, stop: threading.Event) -> None:
    """Delivery ids older than twice the skew window can never be replayed (their timestamp is refused)."""
    while not stop.wait(60):
        try:
            box.prune_deliveries(outbox.now_ms() - 2 * skew_ms)
        except Exception as exc:
            log.warning("pruning delivery ids failed: %s", exc)
