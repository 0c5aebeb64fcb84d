"""The first schema: audit log, Server Admin Log, run reports, host tokens.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("actor", sa.String(255), nullable=False, index=True),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("project", sa.String(64), nullable=True, index=True),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    op.create_table(
        "server_admin_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=False, index=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "run_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("host", sa.String(253), nullable=False, index=True),
        sa.Column("project", sa.String(64), nullable=True, index=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("environment", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=False),
        sa.Column("changed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("failures", sa.JSON, nullable=False),
        sa.Column("duration", sa.Float, nullable=True),
    )
    op.create_table(
        "host_tokens",
        sa.Column("host", sa.String(253), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("host_tokens", "run_reports", "server_admin_log", "changes"):
        op.drop_table(table)
