"""Proxied uploads stream into the bucket as multipart uploads, byte for byte, and leave nothing behind
when the upload breaks."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import uuid

import pytest
from mlflow import MlflowClient

from mlflow_ext.artifacts import PART_SIZE, StreamingS3ArtifactRepository
from tests.support.environ import patched_environ

pytestmark = pytest.mark.integration


def test_large_artifact_streams_through_the_server_into_the_bucket(platform, tmp_path):
    payload = os.urandom(PART_SIZE + 7 * 2**20)
    streamed_parts = math.ceil(len(payload) / PART_SIZE)
    # Staged in a temp file, boto3 would have sent 8 MiB parts: the part count tells the paths apart.
    assert streamed_parts != math.ceil(len(payload) / (8 * 2**20))
    path = tmp_path / "model.bin"
    path.write_bytes(payload)
    with patched_environ(platform.client_env()):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"streaming-{uuid.uuid4().hex[:8]}")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_artifact(run_id, str(path), artifact_path="weights")
        downloaded = client.download_artifacts(run_id, "weights/model.bin", str(tmp_path / "back"))

    with open(downloaded, "rb") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest()
    stored = platform.s3.client().head_object(
        Bucket=platform.bucket, Key=f"{experiment_id}/{run_id}/artifacts/weights/model.bin"
    )
    assert stored["ContentLength"] == len(payload)
    assert stored["ETag"].strip('"').endswith(f"-{streamed_parts}"), stored["ETag"]


def test_small_artifact_is_a_single_put(platform, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("small\n")
    with patched_environ(platform.client_env()):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"streaming-{uuid.uuid4().hex[:8]}")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_artifact(run_id, str(path))
    stored = platform.s3.client().get_object(
        Bucket=platform.bucket, Key=f"{experiment_id}/{run_id}/artifacts/notes.txt"
    )
    assert stored["Body"].read() == b"small\n"
    assert stored["ContentType"] == "text/plain"


def test_a_broken_upload_leaves_no_object_and_no_open_multipart_upload(platform):
    env = {
        "MLFLOW_S3_ENDPOINT_URL": platform.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": platform.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": platform.s3.secret_key,
    }
    prefix = f"broken-{uuid.uuid4().hex[:8]}"

    async def chunks_then_failure():
        for _ in range(3):
            yield os.urandom(PART_SIZE)
        raise ConnectionResetError("client went away")

    with patched_environ(env):
        repo = StreamingS3ArtifactRepository(f"s3://{platform.bucket}/{prefix}")
        with pytest.raises(ConnectionResetError):
            asyncio.run(repo.log_artifact_from_async_stream(chunks_then_failure(), "model.bin"))

    s3 = platform.s3.client()
    assert s3.list_objects_v2(Bucket=platform.bucket, Prefix=prefix).get("KeyCount", 0) == 0
    uploads = s3.list_multipart_uploads(Bucket=platform.bucket, Prefix=prefix).get("Uploads", [])
    assert uploads == []
