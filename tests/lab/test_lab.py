"""The platform on five hosts (ansible/inventories/lab/): what one host cannot show.

Each test prints its figures (FIGURE lines, also in results/lab/figures.txt). Clients run in this process,
reaching the proxy at its address on the lab network, or in the lab-client container where the client's own
address matters.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_ext.settings import parse_env
from tests.lab.conftest import Platform, figure
from tests.lab.lab import CLIENT, HOSTS, POSTGRESQL, PROXY, REPLICAS, docker, exec_in
from tests.support.environ import patched_environ

ACCESS_LOG = "/var/log/nginx/access.log"
SERVER_ENV = "/etc/mlflow/server.env"
UNIT = "mlflow-server"
REPLICA_PORT = 5000
_UPSTREAM = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) .* '
    r"upstream=(?P<upstream>.*?) upstream_sent=(?P<sent>.*?) upstream_rt="
)


def access_log_lines() -> list[str]:
    return exec_in(PROXY, "cat", ACCESS_LOG).splitlines()


def upstream_entries(lines: list[str]) -> list[dict[str, str]]:
    return [match.groupdict() for line in lines if (match := _UPSTREAM.search(line))]


def requests_per_replica(entries: list[dict[str, str]]) -> Counter[str]:
    """Requests answered by each replica (the last upstream nginx tried), by host name."""
    by_address = {f"{HOSTS[host]}:{REPLICA_PORT}": host for host in REPLICAS}
    counts: Counter[str] = Counter()
    for entry in entries:
        last = entry["upstream"].split(",")[-1].strip()
        counts[by_address.get(last, last)] += 1
    return counts


def lifecycle(client: MlflowClient, tmp_path: Path, name: str) -> None:
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    for step in range(5):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    tmp_path.mkdir(parents=True, exist_ok=True)
    artifact = tmp_path / "notes.txt"
    artifact.write_text("lab artifact\n")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    downloaded = Path(client.download_artifacts(run.info.run_id, "notes.txt", str(tmp_path / "down")))
    assert downloaded.read_text() == "lab artifact\n"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/notes.txt", run.info.run_id)
    assert client.get_model_version(name, version.version).run_id == run.info.run_id
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params == {"alpha": "0.5"}
    assert fetched.data.metrics["loss"] == pytest.approx(0.2)


def test_lifecycle_through_the_proxy_reaches_both_replicas(platform: Platform, tmp_path: Path) -> None:
    before = len(access_log_lines())
    with patched_environ(platform.client_env()):
        client = MlflowClient()
        for index in range(4):
            lifecycle(client, tmp_path / str(index), f"lab-lifecycle-{uuid.uuid4().hex[:8]}")
    counts = requests_per_replica(upstream_entries(access_log_lines()[before:]))
    figure("lifecycle requests answered per replica", dict(sorted(counts.items())))
    for replica in REPLICAS:
        assert counts[replica] > 0, f"{replica} answered none of the lifecycle's requests: {counts}"


class Load:
    """N clients calling the platform through the proxy in a loop: a metric logged, a run read, a search."""

    def __init__(self, platform: Platform, clients: int) -> None:
        self.platform = platform
        self.clients = clients
        self.stop = threading.Event()
        self.calls = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        with patched_environ(platform.client_env()):
            client = MlflowClient()
            experiment_id = client.create_experiment(f"lab-load-{uuid.uuid4().hex[:8]}")
            self.run_ids = [client.create_run(experiment_id).info.run_id for _ in range(clients)]
        self.experiment_id = experiment_id

    def _client(self, index: int) -> None:
        client = MlflowClient()
        run_id = self.run_ids[index]
        step = 0
        while not self.stop.is_set():
            for call in (
                lambda value=step: client.log_metric(run_id, "load", float(value), step=value),
                lambda: client.get_run(run_id),
                lambda: client.search_runs([self.experiment_id], max_results=5),
            ):
                try:
                    call()
                except Exception as error:  # every failed client call is counted
                    with self._lock:
                        self.failures.append(f"{type(error).__name__}: {str(error)[:200]}")
                with self._lock:
                    self.calls += 1
            step += 1

    def run_for(self, seconds: float, during: Sequence[tuple[float, Callable[[], object]]] = ()) -> None:
        """Run the clients for `seconds`; each (t, action) of `during` is called t seconds in."""

        def wait() -> None:
            for at, action in during:
                time.sleep(max(0.0, started + at - time.monotonic()))
                action()
            time.sleep(max(0.0, started + seconds - time.monotonic()))

        started = time.monotonic()
        self.run_while(wait)

    def run_while(self, work: Callable[[], object]) -> None:
        """Run the clients while `work()` runs in this thread."""
        with patched_environ(self.platform.client_env()):
            threads = [threading.Thread(target=self._client, args=(index,)) for index in range(self.clients)]
            for thread in threads:
                thread.start()
            try:
                work()
            finally:
                self.stop.set()
                for thread in threads:
                    thread.join(timeout=600)


def replica_answers(replica: str) -> bool:
    result = exec_in(
        CLIENT, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
        f"http://{HOSTS[replica]}:{REPLICA_PORT}/health", check=False,
    )  # fmt: skip
    return result.strip() == "200"


def wait_until_answering(replica: str, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica_answers(replica):
            return True
        time.sleep(1)
    return False


def test_a_replica_killed_and_restarted_under_load_fails_no_client_call(platform: Platform) -> None:
    victim = REPLICAS[1]
    events: dict[str, float] = {}
    log_marks: dict[str, int] = {}

    def kill() -> None:
        exec_in(victim, "systemctl", "kill", "--signal=SIGKILL", UNIT, check=False)
        events["killed"] = time.monotonic() - started
        assert not replica_answers(victim)

    def restart() -> None:
        # The supervisor may have restarted it already (Restart=on-failure); start it if not.
        if not replica_answers(victim):
            exec_in(victim, "systemctl", "start", UNIT, timeout=300)
        events["restarted"] = time.monotonic() - started
        assert wait_until_answering(victim), f"{victim} did not answer again after its restart"
        events["answering again"] = time.monotonic() - started
        log_marks["answering again"] = len(access_log_lines())

    load = Load(platform, clients=8)
    before = len(access_log_lines())
    started = time.monotonic()
    # At least 60 s, and 20 s more once the restarted replica answers (its start takes long on a busy host).
    load.run_for(60, [(10, kill), (20, restart), (0, lambda: time.sleep(20))])
    lines = access_log_lines()
    entries = upstream_entries(lines[before:])
    counts = requests_per_replica(entries)
    after_restart = requests_per_replica(upstream_entries(lines[log_marks["answering again"] :]))
    retried = [entry for entry in entries if "," in entry["upstream"]]
    retried_after_sending = [
        entry for entry in retried
        if entry["method"] not in ("GET", "HEAD") and entry["sent"].split(",")[0].strip() not in ("0", "-")
    ]  # fmt: skip
    answered_503 = sum(1 for entry in entries if entry["status"] == "503")
    figure("replica failure: client calls", load.calls)
    figure("replica failure: failed client calls", len(load.failures))
    figure("replica failure: requests answered per replica", dict(sorted(counts.items())))
    figure("replica failure: requests per replica after the restart", dict(sorted(after_restart.items())))
    figure("replica failure: requests nginx passed to the next replica", len(retried))
    figure("replica failure: 503 answers (retried by the client)", answered_503)
    figure("replica failure: events (s into the load)", {k: round(v, 1) for k, v in events.items()})
    assert load.failures == [], load.failures[:5]
    assert retried_after_sending == [], retried_after_sending[:5]
    assert load.calls > 0 and counts[REPLICAS[0]] > 0 and after_restart[victim] > 0


def failures_table() -> dict[str, int]:
    out = exec_in(
        POSTGRESQL, "su", "postgres", "-c",
        "psql -At -F '|' -d mlflow_auth -c 'SELECT key, failures FROM mlflow_ext_login_failures'",
    )  # fmt: skip
    return {key: int(failures) for key, failures in (line.split("|") for line in out.splitlines() if line)}


def test_lockout_counts_the_clients_own_address_whatever_it_forwards(platform: Platform) -> None:
    client_address, proxy_address, forged = HOSTS[CLIENT], HOSTS[PROXY], "10.66.0.7"
    before = failures_table()
    attempts = 3
    for attempt in range(attempts):
        # -k: the lockout is what is tested here, not the certificate.
        status = exec_in(
            CLIENT, "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
            "-u", f"lab-nobody-{uuid.uuid4().hex[:6]}-{attempt}:wrong", "-H", f"X-Forwarded-For: {forged}",
            f"https://{proxy_address}/api/2.0/mlflow/experiments/search?max_results=1", check=False,
        )  # fmt: skip
        assert status.strip() == "401", status
    after = failures_table()
    counted = {
        address: after.get(f"addr:{address}", 0) - before.get(f"addr:{address}", 0)
        for address in (client_address, proxy_address, forged)
    }
    figure("lockout: failed logins counted per address (client, proxy, forged X-Forwarded-For)", counted)
    assert counted == {client_address: attempts, proxy_address: 0, forged: 0}


def env_file(replica: str) -> dict[str, str]:
    return parse_env(exec_in(replica, "cat", SERVER_ENV), f"{replica}:{SERVER_ENV}")


def test_both_replicas_share_their_secrets_and_a_webhook_fires_once(platform: Platform) -> None:
    envs = {replica: env_file(replica) for replica in REPLICAS}
    for key in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
        digests = {name: hashlib.sha256(env[key].encode()).hexdigest()[:12] for name, env in envs.items()}
        figure(f"secrets: sha256 of {key} per replica", digests)
        assert len(set(digests.values())) == 1 and envs[REPLICAS[0]][key]

    # A receiver in the client container counting deliveries; the replicas post to it over the lab network.
    port = 18080
    receiver = (
        "import http.server,sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        body=self.rfile.read(int(self.headers.get('Content-Length',0)))\n"
        "        open('/tmp/deliveries','a').write(body.decode()+'\\n')\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self,*a): pass\n"
        f"http.server.HTTPServer(('0.0.0.0',{port}),H).serve_forever()\n"
    )
    exec_in(CLIENT, "sh", "-c", "rm -f /tmp/deliveries; touch /tmp/deliveries")
    docker("exec", "--detach", CLIENT, "timeout", "300", "python3", "-c", receiver)
    name = f"lab-webhook-{uuid.uuid4().hex[:8]}"
    with patched_environ(platform.client_env()):
        client = MlflowClient()
        webhook = client.create_webhook(
            name=name, url=f"http://{HOSTS[CLIENT]}:{port}/hook", events=["registered_model.created"],
        )  # fmt: skip
        try:
            # Longer than the webhook cache's TTL on both replicas (mlflow_server_webhook_cache_ttl).
            time.sleep(7)
            model = f"{name}-model"
            client.create_registered_model(model)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and model not in exec_in(CLIENT, "cat", "/tmp/deliveries"):
                time.sleep(1)
            time.sleep(10)  # a second delivery, from either replica, would arrive by now
            deliveries = [
                line for line in exec_in(CLIENT, "cat", "/tmp/deliveries").splitlines()
                if model in line
            ]  # fmt: skip
        finally:
            client.delete_webhook(webhook.webhook_id)
    figure("webhook: deliveries of one registered_model.created", len(deliveries))
    assert len(deliveries) == 1, deliveries
    assert json.loads(deliveries[0])["data"]["name"] == model
