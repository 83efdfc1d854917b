"""Versioned indexes the PostgreSQL tracking store adds to MLflow's tables, so search stays fast at scale.

MLflow's schema has no index for the questions its own search asks most: runs of one experiment in
start-time order (the UI's experiment page), runs by a metric's latest value. These revisions add them,
and only them: ``CREATE INDEX IF NOT EXISTS`` on MLflow's tables under names starting with ``mlflow_ext_``,
never a change to MLflow's columns or constraints, so ``mlflow db upgrade`` runs as before on a database
that has them. Their version lives in a table of their own (``alembic_version_mlflow_ext_tracking``).

They run after MLflow's own migrations (``mlflow-ext server migrate``), only on PostgreSQL. Building an
index blocks writes to its table for the while (seconds per million rows on this machine's disks).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, MetaData

from mlflow_ext import migrations

SCHEMA = migrations.Schema(
    name="tracking",
    # No tables of our own: only indexes on MLflow's tables, which alembic's comparison leaves alone.
    metadata=MetaData(),
    package="mlflow_ext.tracking_migrations",
    version_table="alembic_version_mlflow_ext_tracking",
    # The empty revision: a database that never had these indexes is stamped there, then upgraded.
    baseline="0001_baseline",
    lock_id=0x6D6C6574,  # "mlet"
)


def migrate(engine: Engine) -> dict[str, Any]:
    """Bring the indexes to the newest revision; ``changed`` only when a revision ran or a stamp was set."""
    return migrations.upgrade(engine, SCHEMA)
