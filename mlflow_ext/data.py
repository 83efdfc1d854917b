"""What data went into a run: content fingerprints and ``log_data``.

A local file's fingerprint is its sha256, the same as ``sha256sum FILE``. A folder's is the sha256 of
its manifest: one line ``<sha256>  <relative path>\\n`` per regular file, sorted by path (byte order),
which is what ``cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum |
sha256sum`` prints. Files are read in 1 MiB blocks by a few threads, so memory stays bounded whatever
the size. Objects under an ``s3://`` prefix are fingerprinted by ETag and size, read from the listing
without downloading anything; the prefix ``s3-etag:`` tells the two schemes apart.

CSV and Parquet data also get a row count and a schema (Parquet from its footers, CSV streamed).
Hashing, counting rows and listing a prefix report their progress on stderr when they take a while
(mlflow_ext.progress).
Library code: errors are raised as DataError, never turned into exit codes here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from mlflow_ext import progress
from mlflow_ext.errors import DataError
from mlflow_ext.run_context import DATA_PREFIX

_logger = logging.getLogger(__name__)

BLOCK_SIZE = 1 << 20
DATA_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_MAX_TAG_VALUE = 8000
_TAG_KEY_UNSAFE = re.compile(r"[^\w.\- /]")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Arrow's name of the type, e.g. int64, string, timestamp[us]


@dataclass(frozen=True)
class DataFingerprint:
    """What ``fingerprint`` learnt about a file, folder or S3 prefix."""

    uri: str
    fingerprint: str  # sha256:<hex> (contents) or s3-etag:<hex> (S3 listing)
    files: int
    bytes: int
    format: str | None = None  # csv or parquet when every data file has that format
    rows: int | None = None
    schema: tuple[Column, ...] | None = None
    listing: tuple[tuple[str, str, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def method(self) -> str:
        return self.fingerprint.split(":", 1)[0]

    @property
    def hexdigest(self) -> str:
        return self.fingerprint.split(":", 1)[1]

    def schema_text(self) -> str | None:
        if self.schema is None:
            return None
        return ", ".join(f"{column.name}:{column.type}" for column in self.schema)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("listing")
        data["schema"] = [asdict(column) for column in self.schema] if self.schema is not None else None
        return data


# --- local files ---


def _hash_file(path: str, advance: Callable[[int], None] | None = None) -> str:
    """sha256 of the file's bytes; ``advance`` (a progress task's) hears of every block read."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                digest.update(view[:count])  # hashlib releases the GIL: threads hash in parallel
                if advance is not None:
                    advance(count)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _sort_key(relative: str) -> bytes:
    return relative.encode("utf-8", "surrogateescape")


def _walk(root: str) -> Iterator[tuple[str, str, int]]:
    """(relative path, absolute path, size) of every regular file; symlinks to files are followed."""

    def fail(exc: OSError) -> None:
        raise DataError(f"cannot list {exc.filename}: {exc.strerror or exc}")

    for directory, _dirs, names in os.walk(root, onerror=fail):
        for name in names:
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except OSError as exc:
                raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
            if stat.S_ISREG(info.st_mode):
                yield os.path.relpath(path, root).replace(os.sep, "/"), path, info.st_size


def _manifest_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 of ``<digest>  <name>\\n`` lines, sorted by name: the listing order never matters."""
    digest = hashlib.sha256()
    for name, file_digest in sorted(entries, key=lambda entry: _sort_key(entry[0])):
        digest.update(f"{file_digest}  {name}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _data_format(names: Iterable[str]) -> str | None:
    """csv or parquet when every data file (not under a ``_`` or ``.`` name, as Spark marks) has it."""
    formats = set()
    for name in names:
        if any(part.startswith(("_", ".")) for part in name.split("/")):
            continue
        formats.add(DATA_FORMATS.get(os.path.splitext(name)[1].lower()))
    return formats.pop() if len(formats) == 1 else None


def _fingerprint_local(path: str, *, profile: bool, workers: int | None) -> DataFingerprint:
    path = os.path.abspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(info.st_mode):
        name = os.path.basename(path)
        files = [(name, path, info.st_size)]
        with progress.task(f"hashing {path}", total=info.st_size, unit="bytes") as bar:
            hexdigest = _hash_file(path, bar.advance)
        digests = [(name, hexdigest)]
    elif stat.S_ISDIR(info.st_mode):
        files = sorted(_walk(path), key=lambda entry: _sort_key(entry[0]))
        if not files:
            raise DataError(f"{path}: no files in this folder")
        threads = workers or min(4, os.cpu_count() or 1)
        total = sum(size for _, _, size in files)
        with (
            progress.task(f"hashing {len(files)} files in {path}", total=total, unit="bytes") as bar,
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fingerprint") as pool,
        ):
            hashed = list(pool.map(lambda file: _hash_file(file, bar.advance), [a for _, a, _ in files]))
        digests = [
            (relative, file_digest) for (relative, _, _), file_digest in zip(files, hashed, strict=True)
        ]
        hexdigest = _manifest_digest(digests)
    else:
        raise DataError(f"{path}: not a regular file or folder")
    result = DataFingerprint(
        uri=path,
        fingerprint=f"sha256:{hexdigest}",
        files=len(files),
        bytes=sum(size for _, _, size in files),
        listing=tuple(
            (relative, file_digest, size)
            for (relative, file_digest), (_, _, size) in zip(digests, files, strict=True)
        ),
    )
    if profile:
        result = _profile(
            result, [absolute for relative, absolute, _ in files], _data_format(n for n, _, _ in files)
        )
    return result


# --- tables: rows and schema ---


def _columns(schema: Any) -> tuple[Column, ...]:
    return tuple(Column(str(item.name), str(item.type)) for item in schema)


def _table_stats(paths: list[Any], fmt: str) -> tuple[int, tuple[Column, ...]]:
    """Row count and schema. Parquet: footers only. CSV: streamed in blocks, never loaded whole."""
    import pyarrow.csv
    import pyarrow.parquet

    rows = 0
    columns: tuple[Column, ...] | None = None
    with progress.task(f"counting the rows of {len(paths)} {fmt} file(s)", unit="rows") as bar:
        for source in paths:
            if fmt == "parquet":
                parquet = pyarrow.parquet.ParquetFile(source)
                rows += parquet.metadata.num_rows
                bar.advance(parquet.metadata.num_rows)
                file_columns = _columns(parquet.schema_arrow)
            else:
                options = pyarrow.csv.ReadOptions(block_size=BLOCK_SIZE)
                reader = pyarrow.csv.open_csv(source, read_options=options)
                file_columns = _columns(reader.schema)
                for batch in reader:
                    rows += batch.num_rows
                    bar.advance(batch.num_rows)
            columns = file_columns if columns is None else columns
    assert columns is not None
    return rows, columns


def _profile(result: DataFingerprint, paths: list[Any], fmt: str | None) -> DataFingerprint:
    if fmt is None:
        return result
    data_paths = [
        path
        for path, (relative, _, _) in zip(paths, result.listing, strict=True)
        if not any(part.startswith(("_", ".")) for part in relative.split("/"))
    ]
    try:
        rows, columns = _table_stats(data_paths, fmt)
    except Exception as exc:  # a fingerprint without a row count beats no record at all
        _logger.warning(
            "mlflow_ext: %s: could not read it as %s, no row count or schema: %s", result.uri, fmt, exc
        )
        return result
    return DataFingerprint(
        result.uri, result.fingerprint, result.files, result.bytes, fmt, rows, columns, result.listing
    )


# --- S3 ---


def s3_client() -> Any:
    """A boto3 client configured the way MLflow configures its own (MLFLOW_S3_ENDPOINT_URL, ...)."""
    import boto3
    from botocore.config import Config

    addressing = os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "auto")
    verify = os.environ.get("MLFLOW_S3_IGNORE_TLS", "").lower() not in ("true", "1")
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
        verify=verify,
        config=Config(signature_version="s3v4", s3={"addressing_style": addressing}),
    )


class _S3Range(io.RawIOBase):
    """A read-only, seekable view of one S3 object through ranged GETs (for Parquet footers)."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self.client, self.bucket, self.key, self.size, self.position = client, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.size - self.position)
        if count <= 0:
            return 0
        end = self.position + count - 1
        body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}")[
            "Body"
        ]
        data = body.read()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _fingerprint_s3(uri: str, *, profile: bool, client: Any | None) -> DataFingerprint:
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket:
        raise DataError(f"{uri}: no bucket in this S3 URI")
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or s3_client()
    objects: list[tuple[str, str, str, int]] = []  # (relative name, key, etag, size)
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                objects.append((key.rsplit("/", 1)[-1], key, head["ETag"].strip('"'), head["ContentLength"]))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        if not objects:
            prefix = key if not key or key.endswith("/") else key + "/"
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            with progress.task(f"listing {uri}", unit="objects") as bar:
                for page in pages:
                    for item in page.get("Contents", []):
                        if not item["Key"].endswith("/"):
                            name = item["Key"][len(prefix) :]
                            objects.append((name, item["Key"], item["ETag"].strip('"'), item["Size"]))
                    bar.advance(len(page.get("Contents", [])))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DataError(f"{uri}: {error.get('Code', '')} {error.get('Message', '')}".strip()) from None
    except BotoCoreError as exc:
        raise DataError(f"{uri}: {exc}") from None
    if not objects:
        raise DataError(f"{uri}: no such object and no objects under this prefix")
    objects.sort(key=lambda item: _sort_key(item[0]))
    digest = hashlib.sha256()
    for name, _, etag, size in objects:
        digest.update(f"{etag}  {size}  {name}\n".encode())
    result = DataFingerprint(
        uri=uri,
        fingerprint=f"s3-etag:{digest.hexdigest()}",
        files=len(objects),
        bytes=sum(size for *_, size in objects),
        listing=tuple((name, etag, size) for name, _, etag, size in objects),
    )
    fmt = _data_format(name for name, *_ in objects)
    if profile and fmt == "parquet":  # footers through ranged reads; CSV would need a download
        sources = [
            io.BufferedReader(_S3Range(client, bucket, k, size), BLOCK_SIZE) for _, k, _, size in objects
        ]
        result = _profile(result, sources, fmt)
    return result


# --- public API ---


def fingerprint(
    path_or_uri: str | os.PathLike[str],
    *,
    profile: bool = True,
    workers: int | None = None,
    s3: Any | None = None,
) -> DataFingerprint:
    """Fingerprint a local file or folder (``file://`` too) or an ``s3://`` object or prefix.

    ``profile`` adds format, rows and schema for CSV and Parquet. ``workers`` caps the hashing
    threads (default: CPU count, at most 4). ``s3`` is a boto3 S3 client (default: from environment).
    Raises DataError for a missing, unreadable or empty path and for unknown URI schemes.
    """
    text = os.fspath(path_or_uri)
    if not text:
        raise DataError("empty path")
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme == "s3":
        return _fingerprint_s3(text, profile=profile, client=s3)
    if scheme == "file":
        text = unquote(urlsplit(text).path)
    elif scheme:
        raise DataError(f"{text}: unsupported scheme {scheme}:// (use a local path, file:// or s3://)")
    return _fingerprint_local(text, profile=profile, workers=workers)


def tag_name(name: str) -> str:
    """A dataset name made fit for a tag key (letters, digits, ``_ - . / space``)."""
    return _TAG_KEY_UNSAFE.sub("_", name)[:200] or "data"


def data_tags(result: DataFingerprint, name: str, role: str) -> dict[str, str]:
    """The ``lineage.data.<name>.*`` run tags for one dataset."""
    prefix = f"{DATA_PREFIX}{tag_name(name)}."
    tags = {
        "fingerprint": result.fingerprint,
        "role": role,
        "uri": result.uri,
        "files": str(result.files),
        "bytes": str(result.bytes),
    }
    if result.format:
        tags["format"] = result.format
    if result.rows is not None:
        tags["rows"] = str(result.rows)
    schema = result.schema_text()
    if schema is not None:
        tags["schema"] = schema[:_MAX_TAG_VALUE]
    return {prefix + key: value for key, value in tags.items()}


def _dataset(result: DataFingerprint, name: str) -> Any:
    """An MLflow MetaDataset (metadata only, no copy of the data) carrying our fingerprint and profile."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, DataType, Schema

    class FingerprintedDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return {
                "fingerprint": result.fingerprint,
                "files": result.files,
                "bytes": result.bytes,
                "format": result.format,
                "rows": result.rows,
            }

        def to_dict(self) -> dict[str, str]:
            config = super().to_dict()
            config["profile"] = json.dumps(self.profile)
            return config

    schema = None
    if result.schema:
        schema = Schema(
            [ColSpec(_mlflow_type(column.type, DataType), column.name) for column in result.schema]
        )
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": local and file: share a class
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(result.uri)
    return FingerprintedDataset(source, name=name, digest=result.hexdigest[:32], schema=schema)


def _mlflow_type(arrow_type: str, data_type: Any) -> Any:
    exact = {
        "bool": data_type.boolean,
        "int8": data_type.integer,
        "int16": data_type.integer,
        "int32": data_type.integer,
        "uint8": data_type.integer,
        "uint16": data_type.integer,
        "int64": data_type.long,
        "uint32": data_type.long,
        "uint64": data_type.long,
        "halffloat": data_type.float,
        "float": data_type.float,
        "double": data_type.double,
        "string": data_type.string,
        "large_string": data_type.string,
        "binary": data_type.binary,
        "large_binary": data_type.binary,
    }
    if arrow_type in exact:
        return exact[arrow_type]
    if arrow_type.startswith(("timestamp", "date")):
        return data_type.datetime
    if arrow_type.startswith("fixed_size_binary"):
        return data_type.binary
    return data_type.string  # decimals, lists, structs: recorded exactly in the schema tag


def log_data(
    path_or_uri: str | os.PathLike[str],
    name: str | None = None,
    role: str = "training",
    *,
    profile: bool = True,
) -> DataFingerprint:
    """Record data a run used: a dataset input (context ``role``) and ``lineage.data.<name>.*`` tags.

    Logs to the active run (MLflow starts one if none is active). ``name`` defaults to the last
    component of the path. Returns the fingerprint. Raises DataError when the data cannot be read.
    """
    if not role or len(role) > 500:
        raise DataError("role must be a non-empty string of at most 500 characters")
    result = fingerprint(path_or_uri, profile=profile)
    name = name or os.path.basename(result.uri.rstrip("/")) or result.uri
    import mlflow

    mlflow.log_input(_dataset(result, name), context=role)
    mlflow.set_tags(data_tags(result, name, role))
    return result
