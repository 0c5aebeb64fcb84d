"""The reaper's sightings of servers no host claims.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "orphan_sightings",
        sa.Column("server_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(253), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("orphan_sightings")
