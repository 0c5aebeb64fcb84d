"""Instances launched for hosts, and project quotas.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("host", sa.String(253), primary_key=True),
        sa.Column("incarnation", sa.String(32), nullable=False),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=True, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("flavor", sa.String(255), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=True),
        sa.Column("ram_mb", sa.Integer(), nullable=True),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "project_quotas",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("instances", sa.Integer(), nullable=True),
        sa.Column("cores", sa.Integer(), nullable=True),
        sa.Column("ram_mb", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("project_quotas")
    op.drop_table("instances")
