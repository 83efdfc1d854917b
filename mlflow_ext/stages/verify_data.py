"""`verify-data`: the test data checked out for a release is the data the version was tested on.

Training records its test data with ``mlflow_ext.data.log_data(path, role="test")``: the run that logged
the version's model then carries ``lineage.data.<name>.fingerprint``, ``.rows``, ``.schema`` and
``.format``. This stage fingerprints the file (or folder, or s3:// prefix) it is given and compares.
Anything that differs (contents, columns added, removed, retyped or reordered, row count, format) or
missing data fails with StageFailed listing every difference.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_ext.data import DataError, DataFingerprint, fingerprint
from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.common import RecordedData, parse_schema, recorded_data, version_run_id

TEST_ROLE = "test"


@dataclass(frozen=True)
class Verified:
    model: str
    version: str
    run_id: str
    data: str
    dataset: str
    fingerprint: str
    rows: int | None
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "matches": True}


def choose(recorded: list[RecordedData], path: str, dataset: str | None, where: str) -> RecordedData:
    """The recorded dataset to compare with: by name when given, else the one with role ``test``
    (the one named like the file when there are several)."""
    listing = ", ".join(f"{item.name} ({item.role or 'no role'})" for item in recorded) or "nothing"
    if dataset:
        named = [item for item in recorded if item.name == dataset]
        if not named:
            raise StageFailed(f"{where} recorded no dataset named {dataset!r} (it recorded: {listing})")
        return named[0]
    tests = [item for item in recorded if item.role == TEST_ROLE]
    if not tests:
        raise StageFailed(
            f"{where} recorded no test data (it recorded: {listing}); training must call "
            f"mlflow_ext.data.log_data(path, role={TEST_ROLE!r})"
        )
    if len(tests) == 1:
        return tests[0]
    base = os.path.basename(path.rstrip("/"))
    named = [item for item in tests if item.name == base]
    if len(named) == 1:
        return named[0]
    names = ", ".join(item.name for item in tests)
    raise StageFailed(f"{where} recorded several test datasets ({names}): choose one with --dataset")


def differences(recorded: RecordedData, found: DataFingerprint) -> list[str]:
    """Human-readable differences, most telling first; empty when the data matches."""
    problems: list[str] = []
    if recorded.schema_text is not None and found.schema is not None:
        before = {column.name: column.type for column in parse_schema(recorded.schema_text)}
        after = {column.name: column.type for column in found.schema}
        for name in after:
            if name not in before:
                problems.append(f"column added: {name} ({after[name]})")
        for name in before:
            if name not in after:
                problems.append(f"column removed: {name} ({before[name]})")
        for name in before:
            if name in after and before[name] != after[name]:
                problems.append(f"column retyped: {name} {before[name]} -> {after[name]}")
        common_before = [name for name in before if name in after]
        common_after = [name for name in after if name in before]
        if common_before != common_after:
            problems.append(f"columns reordered: {', '.join(common_before)} -> {', '.join(common_after)}")
    elif recorded.schema_text is not None:
        problems.append(f"schema unreadable: recorded {recorded.schema_text}, found no table schema")
    if recorded.format and found.format != recorded.format:
        problems.append(f"format: recorded {recorded.format}, found {found.format or 'unknown'}")
    if recorded.rows is not None and found.rows is not None and recorded.rows != found.rows:
        change = found.rows - recorded.rows
        problems.append(f"rows: recorded {recorded.rows}, found {found.rows} ({change:+d})")
    if found.fingerprint != recorded.fingerprint:
        problems.append(f"fingerprint: recorded {recorded.fingerprint}, found {found.fingerprint}")
    return problems


def verify(client: Any, version: Any, data: str, *, dataset: str | None = None) -> Verified:
    """Compare ``data`` with what the run behind ``version`` recorded; raise StageFailed on any difference."""
    run_id = version_run_id(client, version)
    where = f"version {version.version} of model {version.name} (run {run_id})"
    recorded = choose(recorded_data(client.get_run(run_id).data.tags), data, dataset, where)
    try:
        found = fingerprint(data)
    except DataError as exc:
        raise StageFailed(
            f"test data missing or unreadable: {exc}; {where} recorded {recorded.describe()}"
        ) from None
    problems = differences(recorded, found)
    if problems:
        listing = "\n  - ".join(problems)
        raise StageFailed(
            f"test data {data} differs from {recorded.name} as {where} recorded it:\n  - {listing}"
        )
    return Verified(
        model=version.name,
        version=str(version.version),
        run_id=run_id,
        data=data,
        dataset=recorded.name,
        fingerprint=found.fingerprint,
        rows=found.rows,
        columns=[column.name for column in found.schema or ()],
    )
