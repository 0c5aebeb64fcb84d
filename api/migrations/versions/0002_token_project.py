"""Host tokens carry their host's project, so a run report needs no directory read.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("host_tokens") as table:
        table.add_column(sa.Column("project", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("host_tokens") as table:
        table.drop_column("project")
