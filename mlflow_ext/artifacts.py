"""S3 artifact repository that streams uploads through the server straight into the bucket.

MLflow's server stages every proxied upload in a temp file and only then sends it to S3, so a model
crosses the disk twice and the client waits for both legs. Repositories with ``StreamUploadMixin`` get
the request body as it arrives: here it becomes an S3 multipart upload whose parts are sent while
the rest is still being received. Memory stays bounded (part size x parts in flight per upload).

Registered for the ``s3`` scheme through the ``mlflow.artifact_repository`` entry point; everything
else is MLflow's ``S3ArtifactRepository``.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterable
from mimetypes import guess_type
from typing import Any, BinaryIO

from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

from mlflow_ext import mlflow_internals

# S3 parts are at least 5 MiB (but the last); 10 MiB x 4 in flight keeps ~50 MiB per upload. A part is
# the request's chunks as they came (each a few dozen KiB), joined once they reach PART_SIZE: one copy of
# the body, where cutting exact parts out of a growing buffer took three.
PART_SIZE = 10 * 2**20
PARTS_IN_FLIGHT = 4
# What S3 (and SeaweedFS) answer for an object that is not there: GetObject and HeadObject.
MISSING_OBJECT_CODES = ("NoSuchKey", "404", "NotFound")


class StreamingS3ArtifactRepository(S3ArtifactRepository, StreamUploadMixin):
    def _destination(self, artifact_file_name: str, artifact_path: str | None) -> tuple[str, str]:
        bucket, dest_path = self.parse_s3_compliant_uri(self.artifact_uri)
        if artifact_path:
            dest_path = posixpath.join(dest_path, artifact_path)
        return bucket, posixpath.join(dest_path, posixpath.basename(artifact_file_name))

    def _object_args(self, artifact_file_name: str) -> dict[str, Any]:
        """The same object metadata MLflow's log_artifact would set."""
        args: dict[str, Any] = {}
        guessed_type, guessed_encoding = guess_type(artifact_file_name)
        if guessed_type is not None:
            args["ContentType"] = guessed_type
        if guessed_encoding is not None:
            args["ContentEncoding"] = guessed_encoding
        args.update(mlflow_internals.s3_bucket_owner_params(self))
        args.update(self.get_s3_file_upload_extra_args() or {})
        return args

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        """MLflow's download; a missing object is RESOURCE_DOES_NOT_EXIST (404), not an internal error."""
        from botocore.exceptions import ClientError
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        try:
            mlflow_internals.download_s3_file(self, remote_file_path, local_path)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in MISSING_OBJECT_CODES:
                raise
            raise MlflowException("No artifact at that path.", RESOURCE_DOES_NOT_EXIST) from None

    def log_artifact_from_stream(
        self, stream: BinaryIO, artifact_file_name: str, artifact_path: str | None = None
    ) -> None:
        bucket, key = self._destination(artifact_file_name, artifact_path)
        mlflow_internals.s3_client(self).upload_fileobj(
            stream, bucket, key, ExtraArgs=self._object_args(artifact_file_name)
        )

    async def log_artifact_from_async_stream(
        self,
        chunks: AsyncIterable[bytes],
        artifact_file_name: str,
        artifact_path: str | None = None,
    ) -> None:
        bucket, key = self._destination(artifact_file_name, artifact_path)
        client = mlflow_internals.s3_client(self)
        object_args = self._object_args(artifact_file_name)
        owner = mlflow_internals.s3_bucket_owner_params(self)
        pending: list[bytes] = []  # chunks received and not yet sent
        pending_size = 0
        upload_id: str | None = None
        sent: list[asyncio.Task] = []

        async def send_part(body: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                created = await asyncio.to_thread(
                    client.create_multipart_upload, Bucket=bucket, Key=key, **object_args
                )
                upload_id = created["UploadId"]
            number = len(sent) + 1
            sent.append(
                asyncio.create_task(
                    asyncio.to_thread(
                        client.upload_part,
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                        **owner,
                    )
                )
            )
            in_flight = [task for task in sent if not task.done()]
            if len(in_flight) >= PARTS_IN_FLIGHT:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in sent:
                if task.done():
                    task.result()  # surface a failed part now, not at the end

        try:
            async for chunk in chunks:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= PART_SIZE:
                    body = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    await send_part(body)
            if upload_id is None:
                # Smaller than one part: a single PUT.
                await asyncio.to_thread(
                    client.put_object, Bucket=bucket, Key=key, Body=b"".join(pending), **object_args
                )
                return
            if pending:
                await send_part(b"".join(pending))
            results = await asyncio.gather(*sent)
            parts = [{"ETag": r["ETag"], "PartNumber": n} for n, r in enumerate(results, start=1)]
            await asyncio.to_thread(
                client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **owner,
            )
        except BaseException:
            # A broken or cancelled upload leaves no object and no dangling multipart upload behind.
            for task in sent:
                task.cancel()
            await asyncio.gather(*sent, return_exceptions=True)
            if upload_id is not None:
                await asyncio.to_thread(
                    client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id, **owner
                )
            raise
