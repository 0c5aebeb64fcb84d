"""Per-project defaults for an instance's image and flavor.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "project_instance_defaults",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("image", sa.String(255), nullable=True),
        sa.Column("flavor", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("project_instance_defaults")
