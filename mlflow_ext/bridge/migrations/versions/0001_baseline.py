"""The outbox tables as ``create_all`` made them before revisions existed, and the meta row.

Revision ID: 0001_baseline
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_ext_bridge_deliveries",
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    op.create_index(
        op.f("ix_mlflow_ext_bridge_deliveries_received_at"),
        "mlflow_ext_bridge_deliveries",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "mlflow_ext_bridge_meta",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("baseline_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "mlflow_ext_bridge_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=2600), nullable=False),
        sa.Column("subject", sa.String(length=2048), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("alias", sa.String(length=256), nullable=True),
        sa.Column("tag_key", sa.String(length=512), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("pipeline", sa.String(length=255), nullable=False),
        sa.Column("variables", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=True),
        sa.Column("claim_floor", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gocd_status", sa.Integer(), nullable=True),
        sa.Column("gocd_message", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("counter", sa.Integer(), nullable=True),
        sa.Column("scheduled_at", sa.BigInteger(), nullable=True),
        sa.Column("feedback_at", sa.BigInteger(), nullable=True),
        sa.Column("feedback_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        "ix_mlflow_ext_bridge_outbox_pipeline_counter",
        "mlflow_ext_bridge_outbox",
        ["pipeline", "counter"],
        unique=False,
    )
    op.create_index(
        "ix_mlflow_ext_bridge_outbox_status",
        "mlflow_ext_bridge_outbox",
        ["status", "pipeline", "id"],
        unique=False,
    )
    op.create_table(
        "mlflow_ext_bridge_subjects",
        sa.Column("key", sa.String(length=2048), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("sent_us", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        op.f("ix_mlflow_ext_bridge_subjects_model"), "mlflow_ext_bridge_subjects", ["model"], unique=False
    )
    # The meta row, as the first migration wrote it.
    op.bulk_insert(
        sa.table(
            "mlflow_ext_bridge_meta", sa.column("id"), sa.column("schema_version"), sa.column("created_at")
        ),
        [{"id": 1, "schema_version": 1, "created_at": int(time.time() * 1000)}],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mlflow_ext_bridge_subjects_model"), table_name="mlflow_ext_bridge_subjects")
    op.drop_table("mlflow_ext_bridge_subjects")
    op.drop_index("ix_mlflow_ext_bridge_outbox_status", table_name="mlflow_ext_bridge_outbox")
    op.drop_index("ix_mlflow_ext_bridge_outbox_pipeline_counter", table_name="mlflow_ext_bridge_outbox")
    op.drop_table("mlflow_ext_bridge_outbox")
    op.drop_table("mlflow_ext_bridge_meta")
    op.drop_index(
        op.f("ix_mlflow_ext_bridge_deliveries_received_at"), table_name="mlflow_ext_bridge_deliveries"
    )
    op.drop_table("mlflow_ext_bridge_deliveries")
