"""The instance agent: idempotent run reports with their run's facts, and agent states.

``run_reports`` gains the idempotency key a spooled report is delivered
with (unique per host, so a report retried after a lost answer is stored
once), when the run started (a spooled report arrives late), the agent's
version, what triggered the run and the run's error messages.
``agent_states`` holds what each agent last said about itself: its
version, and whether it is disabled and why.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("run_reports") as table:
        table.add_column(sa.Column("idempotency_key", sa.String(64), nullable=True))
        table.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("agent_version", sa.String(64), nullable=True))
        table.add_column(sa.Column("trigger", sa.String(32), nullable=True))
        table.add_column(sa.Column("errors", sa.JSON(), nullable=True))
        table.create_unique_constraint("uq_run_reports_host_key", ["host", "idempotency_key"])
    op.create_table(
        "agent_states",
        sa.Column("host", sa.String(253), primary_key=True),
        sa.Column("project", sa.String(64), nullable=True, index=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_states")
    with op.batch_alter_table("run_reports") as table:
        table.drop_constraint("uq_run_reports_host_key", type_="unique")
        for column in ("errors", "trigger", "agent_version", "started_at", "idempotency_key"):
            table.drop_column(column)
