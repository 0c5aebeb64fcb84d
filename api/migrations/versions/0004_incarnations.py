"""Host incarnations, reports that say they were cut short, pending audit records.

A host name can be deleted and created again. Each creation is an
*incarnation* (``host_tokens.incarnation``), and every report and agent
state records the incarnation that sent it, so a new host never inherits
the old one's last run, agent state or report history. Existing rows keep
being shown: each token gets an incarnation, and each report and state
takes its host's current one.

``run_reports.truncated`` records that the agent cut the report to the
bounds the API takes (it keeps the full report on the instance). An
idempotency key is unique per host incarnation, no longer per host name.

``changes.state`` is ``pending`` from the moment a change is recorded until
its directory write is done, so a process killed in between leaves a
record of a change the directory may hold, never a change without one.

Revision ID: 0004
Revises: 0003
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("changes") as table:
        table.add_column(sa.Column("state", sa.String(16), nullable=False,
                                   server_default="done"))
    with op.batch_alter_table("host_tokens") as table:
        table.add_column(sa.Column("incarnation", sa.String(32), nullable=True))
    connection = op.get_bind()
    tokens = sa.table("host_tokens", sa.column("host", sa.String), sa.column("incarnation",
                                                                              sa.String))
    for (host,) in connection.execute(sa.select(tokens.c.host)).all():
        connection.execute(tokens.update().where(tokens.c.host == host)
                           .values(incarnation=uuid.uuid4().hex))
    with op.batch_alter_table("host_tokens") as table:
        table.alter_column("incarnation", existing_type=sa.String(32), nullable=False)

    with op.batch_alter_table("run_reports") as table:
        table.add_column(sa.Column("incarnation", sa.String(32), nullable=True))
        table.add_column(sa.Column("truncated", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        table.create_index("ix_run_reports_incarnation", ["incarnation"])
        # An idempotency key names a report of one incarnation: a host created
        # again must never be answered with the deleted one's report.
        table.drop_constraint("uq_run_reports_host_key", type_="unique")
        table.create_unique_constraint("uq_run_reports_host_incarnation_key",
                                       ["host", "incarnation", "idempotency_key"])
    with op.batch_alter_table("agent_states") as table:
        table.add_column(sa.Column("incarnation", sa.String(32), nullable=True))
    for name in ("run_reports", "agent_states"):
        op.execute(f"UPDATE {name} SET incarnation = (SELECT host_tokens.incarnation "  # noqa: S608 (fixed names)
                   f"FROM host_tokens WHERE host_tokens.host = {name}.host)")


def downgrade() -> None:
    with op.batch_alter_table("changes") as table:
        table.drop_column("state")
    with op.batch_alter_table("agent_states") as table:
        table.drop_column("incarnation")
    with op.batch_alter_table("run_reports") as table:
        table.drop_constraint("uq_run_reports_host_incarnation_key", type_="unique")
        table.create_unique_constraint("uq_run_reports_host_key", ["host", "idempotency_key"])
        table.drop_index("ix_run_reports_incarnation")
        table.drop_column("truncated")
        table.drop_column("incarnation")
    with op.batch_alter_table("host_tokens") as table:
        table.drop_column("incarnation")
