"""Nothing of ours yet: the revision a database without the tracking store's indexes is stamped at.

Revision ID: 0001_baseline
"""

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
