"""Lineage end to end against the real platform: a training script in a git repository inside a GoCD
job, data on local disk and in S3, a registered and promoted model, then `mlflow-ext inspect`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from mlflow_ext import run_context as rc
from mlflow_ext.data import DataError, fingerprint
from mlflow_ext.lineage import MISSING
from tests.support.gitrepo import committed_repo, git

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
GOCD_ENV = {
    "GO_SERVER_URL": "https://gocd.example.com/go/",
    "GO_PIPELINE_NAME": "train-churn",
    "GO_PIPELINE_COUNTER": "12",
    "GO_PIPELINE_LABEL": "12",
    "GO_STAGE_NAME": "train",
    "GO_STAGE_COUNTER": "2",
    "GO_JOB_NAME": "fit",
    "GO_TRIGGER_USER": "alice",
    "GO_REVISION_CHURN": "feedc0de",
}

TRAIN = """\
import json, os, sys
import mlflow
import mlflow_ext

class Model(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input

name, train_dir, holdout_uri = sys.argv[1:4]
mlflow.set_experiment(f"lineage-{name}")
with mlflow.start_run(run_name="fit") as run:
    mlflow_ext.log_data(train_dir, role="training")
    mlflow_ext.log_data(holdout_uri, name="holdout", role="test")
    mlflow.log_params({"C": 0.5, "max_iter": 200})
    mlflow.log_metrics({"accuracy": 0.93, "f1": 0.9})
    info = mlflow.pyfunc.log_model(name="model", python_model=Model(), pip_requirements=["mlflow"])
with mlflow.start_run(run_name="again") as again:
    pass
client = mlflow.MlflowClient()
first = mlflow.register_model(info.model_uri, name)
second = mlflow.register_model(info.model_uri, name)
client.set_registered_model_alias(name, "champion", first.version)
for key, value in {
    "promotion.by": "bob",
    "promotion.at": "2025-11-20T10:00:00+00:00",
    "promotion.from_version": "0",
    "promotion.reason": "beats baseline",
}.items():
    client.set_model_version_tag(name, first.version, key, value)
print("RESULT=" + json.dumps({"run_id": run.info.run_id, "again": again.info.run_id,
                              "versions": [first.version, second.version]}))
"""


def s3_env(platform) -> dict[str, str]:
    return {
        "MLFLOW_S3_ENDPOINT_URL": platform.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": platform.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": platform.s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }


def base_env(platform) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GO_", "MLFLOW_EXT_RUN_", "MLFLOW_TRACKING_"))
    }
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", **platform.client_env()}


def inspect(platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "inspect", *args],
        env=base_env(platform),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def parquet_bytes(rows: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(
        pa.table({"customer": list(range(rows)), "churned": [i % 3 == 0 for i in range(rows)]}), sink
    )
    return sink.getvalue()


@pytest.fixture(scope="module")
def trained(platform, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("lineage")
    repo = committed_repo(
        base / "churn",
        {"train.py": TRAIN, "params.yaml": "C: 1.0\n"},
        "https://bot:token@git.example.com/ml/churn.git",
        "train churn",
    )
    (repo / "params.yaml").write_text("C: 0.5\n")  # uncommitted: the run is dirty

    train_dir = base / "train"
    train_dir.mkdir()
    (train_dir / "part-0.csv").write_text(
        "customer,tenure\n" + "".join(f"{i},{i % 48}\n" for i in range(700))
    )
    (train_dir / "part-1.csv").write_text(
        "customer,tenure\n" + "".join(f"{i},{i % 12}\n" for i in range(300))
    )
    key = f"datasets/{uuid.uuid4().hex}/holdout.parquet"
    platform.s3.client().put_object(Bucket=platform.bucket, Key=key, Body=parquet_bytes(250))
    holdout = f"s3://{platform.bucket}/{key}"

    name = f"churn-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, str(repo / "train.py"), name, str(train_dir), holdout],
        cwd=repo,
        env={**base_env(platform), **s3_env(platform), **GOCD_ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT="))
    return {
        **json.loads(line[len("RESULT=") :]),
        "name": name,
        "repo": repo,
        "train_dir": train_dir,
        "holdout": holdout,
        "diff": git(repo, "diff", "HEAD"),
    }


@pytest.fixture(scope="module")
def client(platform):
    from mlflow.tracking import MlflowClient

    os.environ.update({k: v for k, v in platform.client_env().items() if k != "MLFLOW_TRACKING_URI"})
    return MlflowClient(tracking_uri=platform.tracking_uri)


def test_inspect_json_field_by_field(platform, trained, client, tmp_path: Path) -> None:
    shown = inspect(platform, f"models:/{trained['name']}@champion", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    got = json.loads(shown.stdout)
    run_id = trained["run_id"]
    run = client.get_run(run_id)
    version = client.get_model_version(trained["name"], trained["versions"][0])

    assert got["uri"] == f"models:/{trained['name']}@champion"
    assert got["model"] == {
        "name": trained["name"],
        "version": trained["versions"][0],
        "aliases": ["champion"],
        "status": "READY",
        "source": version.source,
        "registered_at": got["model"]["registered_at"],
        "registered_by": version.user_id or None,
        "description": None,
    }
    assert datetime.fromisoformat(got["model"]["registered_at"]).tzinfo is not None
    assert got["promotion"] == {
        "by": "bob",
        "at": "2025-11-20T10:00:00+00:00",
        "from_version": "0",
        "reason": "beats baseline",
        "alias": None,
        "action": None,
    }
    assert got["run"]["id"] == run_id
    assert got["run"]["name"] == "fit"
    assert got["run"]["experiment_name"] == f"lineage-{trained['name']}"
    assert got["run"]["experiment_id"] == run.info.experiment_id
    assert got["run"]["status"] == "FINISHED"
    assert got["run"]["user"] == run.data.tags["mlflow.user"]
    assert got["run"]["entry_point"] == run.data.tags["mlflow.source.name"]
    assert got["params"] == {"C": "0.5", "max_iter": "200"}
    assert got["metrics"] == {"accuracy": 0.93, "f1": 0.9}

    assert got["code"] == {
        "commit": git(trained["repo"], "rev-parse", "HEAD").strip(),
        "branch": "main",
        "remote_url": "https://git.example.com/ml/churn.git",
        "dirty": True,
        "diff": f"runs:/{run_id}/{rc.DIFF_ARTIFACT}",
    }
    diff = Path(client.download_artifacts(run_id, rc.DIFF_ARTIFACT, str(tmp_path))).read_text()
    assert diff == trained["diff"]

    assert got["ci"] == {
        "system": "gocd",
        "pipeline": "train-churn",
        "counter": "12",
        "label": "12",
        "stage": "train",
        "stage_counter": "2",
        "job": "fit",
        "trigger_user": "alice",
        "url": "https://gocd.example.com/go/pipelines/value_stream_map/train-churn/12",
        "revisions": {"churn": "feedc0de"},
        "upstream": {},
    }

    env = got["environment"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["mlflow"] == run.data.tags[rc.ENV_MLFLOW]
    assert env["hash"] == run.data.tags[rc.ENV_HASH]
    assert env["listing"] == f"runs:/{run_id}/{rc.ENV_ARTIFACT}"
    assert env["libraries"]["numpy"] == run.data.tags[rc.ENV_LIB_PREFIX + "numpy"]
    listing = Path(client.download_artifacts(run_id, rc.ENV_ARTIFACT, str(tmp_path))).read_text()
    assert f"\nmlflow=={env['mlflow']}\n" in listing
    assert got["host"] == run.data.tags[rc.HOST_NAME]
    assert got["host_user"] == run.data.tags[rc.HOST_USER]
    assert got["notebook"] is None

    s3 = fingerprint(trained["holdout"], s3=platform.s3.client())
    local = fingerprint(trained["train_dir"])
    assert got["datasets"] == [
        {
            "name": "train",
            "role": "training",
            "fingerprint": local.fingerprint,
            "digest": local.hexdigest[:32],
            "source": str(trained["train_dir"]),
            "files": 2,
            "bytes": local.bytes,
            "format": "csv",
            "rows": 1000,
            "schema": "customer:int64, tenure:int64",
        },
        {
            "name": "holdout",
            "role": "test",
            "fingerprint": s3.fingerprint,
            "digest": s3.hexdigest[:32],
            "source": trained["holdout"],
            "files": 1,
            "bytes": s3.bytes,
            "format": "parquet",
            "rows": 250,
            "schema": "customer:int64, churned:bool",
        },
    ]


def test_version_alias_and_run_uris_agree(platform, trained) -> None:
    by_alias = json.loads(inspect(platform, f"models:/{trained['name']}@champion", "--output", "json").stdout)
    by_version = json.loads(
        inspect(platform, f"models:/{trained['name']}/{trained['versions'][0]}", "--output", "json").stdout
    )
    by_run = json.loads(inspect(platform, f"runs:/{trained['run_id']}", "--output", "json").stdout)
    for view in (by_version, by_run):
        for section in ("run", "params", "metrics", "datasets", "code", "ci", "environment", "host"):
            assert view[section] == by_alias[section], section
    assert by_version["model"] == by_alias["model"] and by_version["promotion"] == by_alias["promotion"]
    assert by_run["model"] is None and by_run["promotion"] is None


def test_table_shows_promotion_or_a_dash(platform, trained) -> None:
    promoted = inspect(platform, f"models:/{trained['name']}@champion")
    assert promoted.returncode == 0, promoted.stderr
    lines = promoted.stdout.splitlines()
    assert len(lines) <= 40  # one screen

    def value(label: str, text: list[str]) -> str:
        line = next(line for line in text if line.startswith(label + " "))
        return line[len(label) :].strip()

    assert value("model", lines).startswith(f"{trained['name']} version {trained['versions'][0]} (@champion)")
    assert value("promoted by", lines) == "bob"
    assert value("promoted at", lines) == "2025-11-20T10:00:00+00:00 (from version 0)"
    assert value("reason", lines) == "beats baseline"
    assert (
        value("pipeline url", lines)
        == "https://gocd.example.com/go/pipelines/value_stream_map/train-churn/12"
    )
    assert value("code", lines).endswith("on main (dirty)")
    assert value("data (training)", lines).startswith("train: sha256:")
    assert value("params", lines) == "C=0.5  max_iter=200"
    assert value("metrics", lines) == "accuracy=0.93  f1=0.9"

    plain = inspect(platform, f"models:/{trained['name']}/{trained['versions'][1]}").stdout.splitlines()
    assert value("promoted by", plain) == MISSING
    assert value("reason", plain) == MISSING
    assert "(no alias)" in value("model", plain)


def test_environment_listing_is_stored_once_per_hash(trained, client) -> None:
    first = client.get_run(trained["run_id"]).data.tags
    again = client.get_run(trained["again"]).data.tags
    assert again[rc.ENV_HASH] == first[rc.ENV_HASH]
    assert again[rc.ENV_LISTING] == first[rc.ENV_LISTING] == f"runs:/{trained['run_id']}/{rc.ENV_ARTIFACT}"
    assert [item.path for item in client.list_artifacts(trained["again"], "lineage")] == [rc.DIFF_ARTIFACT]


@pytest.mark.parametrize(
    ("uri", "code", "message"),
    [
        ("models:/churn", 2, "malformed model URI 'models:/churn'"),
        ("models:/churn/latest", 2, "malformed model URI"),
        ("model:/churn/1", 2, "malformed model URI"),
        ("runs:/", 2, "malformed model URI"),
        ("models:/no-such-model-anywhere/1", 8, "models:/no-such-model-anywhere/1: not found"),
        ("models:/no-such-model-anywhere@champion", 8, "not found"),
        (f"runs:/{'0' * 32}", 8, "not found"),
    ],
)
def test_bad_uris_give_clear_errors(platform, uri: str, code: int, message: str) -> None:
    shown = inspect(platform, uri)
    assert shown.returncode == code, shown.stderr
    assert message in shown.stderr
    assert "Traceback" not in shown.stderr


# --- S3 fingerprints: ETag and size from the listing, nothing downloaded ---


@pytest.fixture
def counted_s3(platform):
    """A client that refuses to download whole objects and counts ranged reads."""
    client = platform.s3.client()
    ranged: list[str] = []

    def before_get(params, **_):
        if "Range" not in params:
            raise AssertionError(f"downloaded {params['Key']}")
        ranged.append(params["Range"])

    client.meta.events.register("before-parameter-build.s3.GetObject", before_get)
    client.ranged = ranged
    return client


def test_s3_prefix_fingerprint_by_etag_and_size(platform, counted_s3) -> None:
    writer = platform.s3.client()
    prefix = f"fp/{uuid.uuid4().hex}"
    objects = {f"part-{i}.bin": os.urandom(100_000 + i) for i in range(5)}
    for order, target in ((list(objects), "a"), (list(reversed(objects)), "b")):
        for name in order:
            writer.put_object(Bucket=platform.bucket, Key=f"{prefix}/{target}/{name}", Body=objects[name])
    first = fingerprint(f"s3://{platform.bucket}/{prefix}/a/", s3=counted_s3)
    assert first.fingerprint.startswith("s3-etag:")
    assert (first.files, first.bytes) == (5, sum(map(len, objects.values())))
    without_slash = fingerprint(f"s3://{platform.bucket}/{prefix}/a", s3=counted_s3)
    assert without_slash.fingerprint == first.fingerprint
    assert fingerprint(f"s3://{platform.bucket}/{prefix}/b/", s3=counted_s3).fingerprint == first.fingerprint
    assert counted_s3.ranged == []

    changed = bytearray(objects["part-2.bin"])
    changed[500] ^= 0xFF
    writer.put_object(Bucket=platform.bucket, Key=f"{prefix}/a/part-2.bin", Body=bytes(changed))
    assert fingerprint(f"s3://{platform.bucket}/{prefix}/a/", s3=counted_s3).fingerprint != first.fingerprint

    single = fingerprint(f"s3://{platform.bucket}/{prefix}/b/part-0.bin", s3=counted_s3)
    assert single.files == 1 and single.bytes == len(objects["part-0.bin"])


def test_s3_parquet_rows_from_footers_only(platform, counted_s3) -> None:
    key = f"fp/{uuid.uuid4().hex}/big.parquet"
    body = parquet_bytes(200_000)
    platform.s3.client().put_object(Bucket=platform.bucket, Key=key, Body=body)
    result = fingerprint(f"s3://{platform.bucket}/{key}", s3=counted_s3)
    assert (result.format, result.rows, result.schema_text()) == (
        "parquet",
        200_000,
        "customer:int64, churned:bool",
    )
    fetched = sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in counted_s3.ranged)
    assert fetched < len(body) / 4, f"read {fetched} of {len(body)} bytes"


def test_s3_errors(platform) -> None:
    client = platform.s3.client()
    with pytest.raises(DataError, match="no such object and no objects under this prefix"):
        fingerprint(f"s3://{platform.bucket}/nothing-here-{uuid.uuid4().hex}/", s3=client)
    with pytest.raises(DataError, match="NoSuchBucket"):
        fingerprint(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x", s3=client)
