"""Indexes for the searches MLflow runs most, where its schema has none (plans showed sequential scans).

- ``runs`` of one experiment in MLflow's start-time order (the UI's experiment page, ``search_runs``
  without ``order_by``, and the run set a metric filter joins against): the search reads that
  experiment's runs through the index instead of every run. The key follows MLflow's own sort expression;
  MLflow's ``DISTINCT`` still sorts the experiment's runs, so the plan is index scan plus sort;
- ``latest_metrics`` by key and value, carrying ``is_nan`` (``search_runs`` with ``metrics.k > x`` and
  ``order_by metrics.k``): both the filter and the sort key's join read the index alone, where MLflow's
  primary key (key, run_uuid) makes them read every table row of that key. The price: an update of a
  latest value also updates this index (no HOT update), on the ingest path;
- ``registered_model_tags`` by key and value (``search_registered_models`` with ``tags.k = 'v'``).

Revision ID: 0002_search_indexes
Revises: 0001_baseline
"""

from alembic import op

revision = "0002_search_indexes"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

INDEXES = {
    "mlflow_ext_runs_experiment_start_time": (
        "runs (experiment_id, (CASE WHEN start_time IS NULL THEN 1 ELSE 0 END), start_time DESC, run_uuid)"
    ),
    "mlflow_ext_latest_metrics_key_value": "latest_metrics (key, value, run_uuid) INCLUDE (is_nan)",
    "mlflow_ext_registered_model_tags_key_value": "registered_model_tags (key, value)",
}


def upgrade() -> None:
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
