"""The tables of mlflow-ext-auth as ``create_all`` made them before revisions existed, and the state row.

Revision ID: 0001_baseline
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_ext_auth_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "mlflow_ext_login_failures",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "mlflow_ext_rights",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("right", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username", "right", "resource", name="uq_mlflow_ext_rights"),
    )
    op.create_index(op.f("ix_mlflow_ext_rights_username"), "mlflow_ext_rights", ["username"], unique=False)
    op.create_table(
        "mlflow_ext_service_accounts",
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )
    op.create_table(
        "mlflow_ext_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_mlflow_ext_tokens_username"), "mlflow_ext_tokens", ["username"], unique=False)
    # The state row every worker reads (generation 0: nothing revoked yet).
    op.bulk_insert(
        sa.table(
            "mlflow_ext_auth_state", sa.column("id"), sa.column("generation"), sa.column("schema_version")
        ),
        [{"id": 1, "generation": 0, "schema_version": 1}],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mlflow_ext_tokens_username"), table_name="mlflow_ext_tokens")
    op.drop_table("mlflow_ext_tokens")
    op.drop_table("mlflow_ext_service_accounts")
    op.drop_index(op.f("ix_mlflow_ext_rights_username"), table_name="mlflow_ext_rights")
    op.drop_table("mlflow_ext_rights")
    op.drop_table("mlflow_ext_login_failures")
    op.drop_table("mlflow_ext_auth_state")
