"""The bridge: promotion-to-schedule latency, and draining a backlog of promotions after a GoCD outage.

One platform on loopback (Postgres, SeaweedFS, the MLflow server with auth and webhooks), the fake GoCD,
and `mlflow-ext bridge serve` as a subprocess with its outbox in the platform's Postgres.

Baselines, measured in the same run:
- latency: a *direct* receiver in this process, registered as a second webhook, so MLflow delivers every
  promotion to both at once. It checks the signature, reads the version's run id and triggers GoCD inside
  the request: everything the bridge does except the outbox (no durable record, nothing retried, nothing
  de-duplicated, an outage loses the event). The ratio is the price of the guarantees.
  Goal: bridge p95 under 1 s. (The old plugin, indix/mlflow-gocd, polls every 60 s: 30 s on average.)
- drain: the same triggers sent straight to GoCD by one client in a loop (GoCDClient.schedule), i.e. the
  least work GoCD itself needs; the bridge adds per trigger the claim, the history lookup that binds the
  run's counter to the row, and the commits. Goal: 1,000 promotions drained in under 60 s.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlflow_ext.routing import BRIDGE_VARIABLES
from tests.support.bridge import GOCD_USER, Bridge, webhook_env
from tests.support.environ import patched_environ
from tests.support.fake_gocd import FakeGoCD
from tests.support.services import free_ports, running_platform

PROMOTIONS = int(os.environ.get("BENCH_BRIDGE_PROMOTIONS", "60"))
BACKLOG_MODELS = int(os.environ.get("BENCH_BRIDGE_BACKLOG_MODELS", "100"))
SLOTS = 10  # aliases per model in the backlog: BACKLOG_MODELS x SLOTS promotions, over SLOTS pipelines
TOKEN = "bench-bridge-token-0123456789"
ROUTES = "routes:\n  - {model: 'lat-*', alias: champion, pipeline: lat-release}\n" + "".join(
    f"  - {{model: 'bulk-*', alias: slot-{k}, pipeline: bulk-release-{k}}}\n" for k in range(SLOTS)
)
NOTE = (
    "bridge: latency = set_registered_model_alias until the fake GoCD records the trigger, bridge (outbox in "
    "Postgres, then the delivery worker) vs a direct receiver triggering GoCD inside the webhook request "
    "(same signature check and run-id lookup, no outbox), both fed by the same MLflow deliveries; goal p95 < "
    "1 s. Drain = GoCD back until the last of the backlog is scheduled, vs one client sending the same "
    "triggers straight to GoCD; goal < 60 s"
)


class _DirectReceiver(ThreadingHTTPServer):
    """The baseline: verify, look up, trigger, answer; no outbox."""

    daemon_threads = True

    def __init__(self, port: int, secret: str, gocd_url: str, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        from mlflow_ext.clients.gocd import GoCDClient

        self.secret = secret
        self.gocd = GoCDClient(gocd_url, token=TOKEN)
        self.registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _DirectHandler)


class _DirectHandler(BaseHTTPRequestHandler):
    server: _DirectReceiver

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        from mlflow_ext import events
        from mlflow_ext.bridge import signature

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = 200
        try:
            signature.verify(
                self.server.secret,
                self.headers.get(signature.DELIVERY_ID_HEADER),
                self.headers.get(signature.TIMESTAMP_HEADER),
                self.headers.get(signature.SIGNATURE_HEADER),
                body,
                time.time(),
                300,
            )
            event = events.parse(body)
            if event is not None and event.alias == "champion" and event.model.startswith("lat-"):
                version = self.server.registry.get_model_version(event.model, event.version)
                self.server.gocd.schedule(
                    "lat-direct",
                    {
                        "MLFLOW_MODEL_NAME": event.model,
                        "MLFLOW_MODEL_VERSION": str(event.version),
                        "MLFLOW_MODEL_ALIAS": event.alias,
                        "MLFLOW_RUN_ID": version.run_id or "",
                        "MLFLOW_MODEL_URI": f"models:/{event.model}/{event.version}",
                        "MLFLOW_TRACKING_URI": self.server.tracking_uri,
                    },
                )
        except Exception:
            status = 500
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _model(client, name: str, versions: int, experiment_id: str) -> None:
    client.create_registered_model(name)
    for _ in range(versions):
        info = client.create_run(experiment_id).info
        client.create_model_version(name, f"{info.artifact_uri}/model", run_id=info.run_id)


def _wait(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not met in time")
        time.sleep(0.005)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def run(results_dir: Path) -> list[dict]:
    rows: list[dict] = []
    with (
        running_platform(extra_env=webhook_env()) as platform,
        FakeGoCD(tokens={TOKEN: GOCD_USER}) as gocd,
        patched_environ({**platform.client_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}),
    ):
        from mlflow import MlflowClient

        gocd.add_pipeline("lat-release", variables=BRIDGE_VARIABLES)
        gocd.add_pipeline("lat-direct", variables=BRIDGE_VARIABLES)
        for k in range(SLOTS):
            gocd.add_pipeline(f"bulk-release-{k}", variables=BRIDGE_VARIABLES)
        bridge = Bridge(
            platform, gocd.url, TOKEN, ROUTES, extra_env={"MLFLOW_EXT_BRIDGE_RETRY_MAX_SECONDS": "10"}
        ).prepare()
        client = MlflowClient(tracking_uri=platform.tracking_uri, registry_uri=platform.tracking_uri)
        (direct_port,) = free_ports(1)
        direct = _DirectReceiver(direct_port, bridge.secret, gocd.url, platform.tracking_uri)
        threading.Thread(target=direct.serve_forever, daemon=True).start()
        client.create_webhook(
            name="bench-direct",
            url=f"http://127.0.0.1:{direct_port}/webhook",
            events=["model_version_alias.created"],
            secret=bridge.secret,
        )
        try:
            bridge.start()
            experiment_id = client.create_experiment("bench-bridge")
            _model(client, "lat-model", 2, experiment_id)
            time.sleep(2)  # webhook caches (TTL 1 s) pick up both webhooks

            # --- latency ---------------------------------------------------------------------------
            via_bridge: list[float] = []
            via_direct: list[float] = []
            for i in range(PROMOTIONS + 5):
                before_bridge, before_direct = (
                    len(gocd.schedules("lat-release")),
                    len(gocd.schedules("lat-direct")),
                )
                started = time.time()
                client.set_registered_model_alias("lat-model", "champion", str(1 + i % 2))
                _wait(lambda b=before_bridge: len(gocd.schedules("lat-release")) > b, 30)
                _wait(lambda d=before_direct: len(gocd.schedules("lat-direct")) > d, 30)
                if i >= 5:  # warm-up
                    via_bridge.append(gocd.schedules("lat-release")[-1].scheduled_at - started)
                    via_direct.append(gocd.schedules("lat-direct")[-1].scheduled_at - started)
            for label, pick in (("p50", statistics.median), ("p95", _p95)):
                platform_ms, baseline_ms = pick(via_bridge) * 1000, pick(via_direct) * 1000
                rows.append(
                    {
                        "section": "bridge",
                        "measure": f"promotion-to-schedule {label} latency, bridge vs direct receiver (ms)",
                        "platform": platform_ms,
                        "baseline": baseline_ms,
                        "ratio": baseline_ms / platform_ms,
                        "better": "lower",
                        "note": NOTE,
                    }
                )
            print(
                f"bridge latency p50 {rows[-2]['platform']:.0f} ms, p95 {rows[-1]['platform']:.0f} ms",
                flush=True,
            )

            # --- backlog after an outage ------------------------------------------------------------
            models = [f"bulk-{i:03d}" for i in range(BACKLOG_MODELS)]
            for name in models:
                _model(client, name, 1, experiment_id)
            total = len(models) * SLOTS
            gocd.go_down()
            for name in models:
                for k in range(SLOTS):
                    client.set_registered_model_alias(name, f"slot-{k}", "1")
            _wait(
                lambda: bridge.status()["counts"]["pending"] + bridge.status()["counts"]["claimed"] >= total,
                300,
            )
            time.sleep(2)  # an outage, not a blip: the bridge is backing off
            bulk = [f"bulk-release-{k}" for k in range(SLOTS)]
            back = time.monotonic()
            gocd.come_back()
            _wait(lambda: sum(len(gocd.schedules(p)) for p in bulk) >= total, 600)
            drained = time.monotonic() - back
            scheduled = [s for p in bulk for s in gocd.schedules(p)]
            keys = {(s.variables["MLFLOW_MODEL_NAME"], s.variables["MLFLOW_MODEL_ALIAS"]) for s in scheduled}
            assert len(scheduled) == total and len(keys) == total, "bench: backlog lost or doubled a trigger"

            # Baseline: the same triggers, straight to GoCD from one client.
            from mlflow_ext.clients.gocd import GoCDClient

            straight = GoCDClient(gocd.url, token=TOKEN)
            started = time.monotonic()
            for s in scheduled:
                straight.schedule(s.pipeline, s.variables)
            direct_s = time.monotonic() - started
            rows.append(
                {
                    "section": "bridge",
                    "measure": f"drain {total} promotions after a GoCD outage, bridge vs direct triggers (s)",
                    "platform": drained,
                    "baseline": direct_s,
                    "ratio": direct_s / drained,
                    "better": "lower",
                    "note": NOTE,
                }
            )
            print(f"bridge drained {total} in {drained:.1f} s (direct {direct_s:.1f} s)", flush=True)
        finally:
            direct.shutdown()
            direct.server_close()
            bridge.cleanup()
    return rows
