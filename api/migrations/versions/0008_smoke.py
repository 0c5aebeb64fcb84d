"""Smoke test results: each host's latest, and the ones each run report carried.

``smoke_results`` holds what a host's checks found last, whether a run
report or the agent's interval check brought it, per host incarnation as
agent states are. ``run_reports.smoke`` keeps a report's own results, so a
report shows what was checked after its run even once newer results came.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "smoke_results",
        sa.Column("host", sa.String(253), primary_key=True),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("incarnation", sa.String(32), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
    )
    with op.batch_alter_table("run_reports") as table:
        table.add_column(sa.Column("smoke", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_reports") as table:
        table.drop_column("smoke")
    op.drop_table("smoke_results")
