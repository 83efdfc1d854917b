"""Fingerprints and log_data on real files; sha256sum is the reference. (S3: tests/integration.)"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlflow_ext import data
from mlflow_ext.data import DataError, fingerprint


def sha256sum(path: Path) -> str:
    return subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def shell_folder_digest(folder: Path) -> str:
    """The documented by-hand check of a folder fingerprint."""
    command = "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    out = subprocess.run(
        ["bash", "-c", command], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    return out.split()[0]


def make_folder(root: Path, files: dict[str, bytes], order: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in order or list(files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    return root


FILES = {
    "part-0.bin": os.urandom(3 << 20),
    "part-1.bin": b"hello\n" * 1000,
    "nested/deeper/labels.txt": b"a,b\n1,2\n",
    "nested/empty": b"",
    "Zed.bin": b"upper case sorts first in byte order",
    "_SUCCESS": b"",
}


# --- the fingerprint ---


def test_single_file_fingerprint_is_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom((5 << 20) + 123))  # several blocks and a partial one
    result = fingerprint(path)
    assert result.fingerprint == f"sha256:{sha256sum(path)}"
    assert (result.files, result.bytes, result.format, result.rows) == (1, (5 << 20) + 123, None, None)


def test_folder_fingerprint_matches_the_documented_shell_pipeline(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", FILES)
    result = fingerprint(folder)
    assert result.fingerprint == f"sha256:{shell_folder_digest(folder)}"
    assert result.files == len(FILES)
    assert result.bytes == sum(len(content) for content in FILES.values())


def test_fingerprint_is_stable_across_runs_and_listing_order(tmp_path: Path) -> None:
    names = list(FILES)
    first = make_folder(tmp_path / "a", FILES, names)
    second = make_folder(tmp_path / "b", FILES, list(reversed(names)))
    results = {
        fingerprint(first).fingerprint,
        fingerprint(first).fingerprint,
        fingerprint(second).fingerprint,
    }
    results.add(fingerprint(second, workers=1).fingerprint)
    assert len(results) == 1
    entries = [(name, hashlib.sha256(content).hexdigest()) for name, content in FILES.items()]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    assert data._manifest_digest(entries) == data._manifest_digest(shuffled)


def test_one_byte_changes_the_fingerprint(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", FILES)
    before = fingerprint(folder).fingerprint
    target = folder / "part-0.bin"
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0x01
    target.write_bytes(bytes(content))
    changed = fingerprint(folder).fingerprint
    assert changed != before
    content[len(content) // 2] ^= 0x01
    target.write_bytes(bytes(content))
    assert fingerprint(folder).fingerprint == before
    (folder / "part-1.bin").rename(folder / "part-2.bin")
    assert fingerprint(folder).fingerprint != before  # a rename is a change too


def test_file_uri_and_symlinked_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", {"a.bin": b"abc"})
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"linked content")
    (folder / "link.bin").symlink_to(outside)
    by_path = fingerprint(folder)
    assert fingerprint(folder.as_uri()) == by_path
    assert by_path.files == 2 and by_path.bytes == 3 + len(b"linked content")


# --- rows and schema ---


def test_csv_rows_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "id,name,score,when\n" + "".join(f"{i},n{i},{i / 10},2025-01-0{i % 9 + 1}\n" for i in range(5000))
    )
    result = fingerprint(path)
    assert (result.format, result.rows) == ("csv", 5000)
    assert [(c.name, c.type) for c in result.schema or ()] == [
        ("id", "int64"),
        ("name", "string"),
        ("score", "double"),
        ("when", "date32[day]"),
    ]


def test_parquet_folder_rows_schema_and_spark_markers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "events"
    (folder / "day=1").mkdir(parents=True)
    for part in range(3):
        table = pa.table({"user": list(range(100 * part, 100 * part + 100)), "ok": [True] * 100})
        pq.write_table(table, folder / "day=1" / f"part-{part}.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00\x01")
    result = fingerprint(folder)
    assert (result.format, result.rows, result.files) == ("parquet", 300, 5)
    assert result.schema_text() == "user:int64, ok:bool"


def test_mixed_formats_get_no_row_count(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", {"a.csv": b"x\n1\n", "b.json": b"{}"})
    result = fingerprint(folder)
    assert (result.format, result.rows, result.schema) == (None, None, None)


def test_unparseable_csv_keeps_its_fingerprint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "broken.csv"
    path.write_text('a,b\n1,2\n3,4,5,6\n"unclosed\n')
    result = fingerprint(path)
    assert result.fingerprint == f"sha256:{sha256sum(path)}"
    assert result.rows is None and result.schema is None
    assert "could not read it as csv" in caplog.text


# --- bad input ---


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file or directory"):
        fingerprint(tmp_path / "nope.csv")


def test_dangling_symlink_in_a_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", {"a.bin": b"abc"})
    (folder / "gone.bin").symlink_to(tmp_path / "deleted.bin")
    with pytest.raises(DataError, match=r"cannot read .*gone\.bin"):
        fingerprint(folder)


def test_unreadable_file(tmp_path: Path) -> None:
    """Root reads everything, so as root the check runs as user nobody in a subprocess."""
    base = Path(tempfile.mkdtemp(prefix="unreadable-"))
    try:
        base.chmod(0o755)
        (base / "ok.bin").write_bytes(b"fine")
        (base / "ok.bin").chmod(0o644)
        secret = base / "secret.bin"
        secret.write_bytes(b"no")
        secret.chmod(0o000)
        code = (
            "import sys\nfrom mlflow_ext.data import fingerprint, DataError\n"
            "try:\n    fingerprint(sys.argv[1])\nexcept DataError as e:\n    print(e)\n"
        )
        as_nobody = (
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        )
        result = subprocess.run(
            [*as_nobody, sys.executable, "-c", code, str(base)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"cannot read {secret}: Permission denied"
    finally:
        secret.chmod(0o600)
        for path in base.iterdir():
            path.unlink()
        base.rmdir()


def test_empty_folder_and_unknown_schemes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files in this folder"):
        fingerprint(tmp_path / "empty")
    with pytest.raises(DataError, match=r"unsupported scheme gs://"):
        fingerprint("gs://bucket/data.csv")
    with pytest.raises(DataError, match="empty path"):
        fingerprint("")
    with pytest.raises(DataError, match="no bucket"):
        fingerprint("s3:///key")


# --- bounded memory ---


def test_hundreds_of_megabytes_in_bounded_memory(tmp_path: Path) -> None:
    """200 MB in two 100 MB files: reading a whole file would add 100 MB; the limit is 48 MB."""
    folder = tmp_path / "big"
    folder.mkdir()
    block = os.urandom(1 << 20)
    for index in range(2):
        with open(folder / f"part-{index}.bin", "wb") as handle:
            for _ in range(100):
                handle.write(block)
    code = (
        "import json, resource, sys\n"
        "from mlflow_ext.data import fingerprint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "result = fingerprint(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'before_kb': before, 'after_kb': after, 'bytes': result.bytes}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    measured = json.loads(out.stdout)
    assert measured["bytes"] == 200 << 20
    growth_mb = (measured["after_kb"] - measured["before_kb"]) / 1024
    assert growth_mb < 48, f"peak RSS grew by {growth_mb:.0f} MB while fingerprinting 200 MB"


# --- log_data ---


@pytest.fixture
def tracking(tmp_path: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("data", artifact_location=(tmp_path / "artifacts").as_uri())
    yield mlflow.MlflowClient(), experiment
    mlflow.set_tracking_uri(None)


def test_log_data_records_a_dataset_input_and_tags(tmp_path: Path, tracking) -> None:
    import mlflow

    import mlflow_ext

    client, experiment = tracking
    folder = make_folder(tmp_path / "train", {"a.csv": b"x,y\n1,2\n3,4\n", "b.csv": b"x,y\n5,6\n"})
    test_file = tmp_path / "holdout.csv"
    test_file.write_bytes(b"x,y\n7,8\n")
    with mlflow.start_run(experiment_id=experiment) as run:
        logged = mlflow_ext.log_data(folder, role="training")
        mlflow_ext.log_data(str(test_file), name="holdout set", role="test")
    stored = client.get_run(run.info.run_id)
    inputs = {item.dataset.name: item for item in stored.inputs.dataset_inputs}
    assert set(inputs) == {"train", "holdout set"}
    train = inputs["train"]
    assert {tag.key: tag.value for tag in train.tags}["mlflow.data.context"] == "training"
    assert train.dataset.digest == logged.hexdigest[:32]
    assert json.loads(train.dataset.source) == {"uri": str(folder)}
    assert json.loads(train.dataset.profile) == {
        "fingerprint": logged.fingerprint,
        "files": 2,
        "bytes": logged.bytes,
        "format": "csv",
        "rows": 3,
    }
    assert json.loads(train.dataset.schema)["mlflow_colspec"][0]["name"] == "x"
    tags = stored.data.tags
    assert (
        tags["lineage.data.train.fingerprint"]
        == logged.fingerprint
        == f"sha256:{shell_folder_digest(folder)}"
    )
    assert tags["lineage.data.train.role"] == "training"
    assert tags["lineage.data.train.rows"] == "3"
    assert tags["lineage.data.train.schema"] == "x:int64, y:int64"
    assert tags["lineage.data.holdout set.role"] == "test"
    assert tags["lineage.data.holdout set.fingerprint"] == f"sha256:{sha256sum(test_file)}"


def test_log_data_errors_leave_the_run_alone(tmp_path: Path, tracking) -> None:
    import mlflow

    import mlflow_ext

    client, experiment = tracking
    with mlflow.start_run(experiment_id=experiment) as run:
        with pytest.raises(DataError, match="no such file"):
            mlflow_ext.log_data(tmp_path / "missing")
        with pytest.raises(DataError, match="role"):
            mlflow_ext.log_data(tmp_path, role="")
    assert not client.get_run(run.info.run_id).inputs.dataset_inputs
