"""Wrong passwords, counted per account and address (api/logins.py), in a table every
worker shares, so that a guesser cannot spread tries over the API's workers.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
    )
    op.create_index("ix_login_failures_uid_address", "login_failures", ["uid", "address"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_uid_address", table_name="login_failures")
    op.drop_table("login_failures")
