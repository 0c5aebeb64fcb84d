"""CI runs (issue 13): each run of a Gerrit change's patch set, its state, hosts,
result and vote.

``event_digest`` is the SHA-256 of the dispatcher's event key, unique so
that the same event posted twice (a dispatcher restarted) makes one run;
``version`` is bumped at every write, so two writes of one run at once
cannot both pass the check of its state.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "ci_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_digest", sa.String(64), nullable=False, unique=True),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("gerrit_project", sa.String(255), nullable=False, index=True),
        sa.Column("change", sa.Integer(), nullable=False, index=True),
        sa.Column("patchset", sa.Integer(), nullable=False),
        sa.Column("revision", sa.String(40), nullable=False),
        sa.Column("branch", sa.String(200), nullable=False),
        sa.Column("change_id", sa.String(41), nullable=True),
        sa.Column("change_url", sa.String(1000), nullable=True),
        sa.Column("subject", sa.String(1000), nullable=True),
        sa.Column("trigger", sa.String(200), nullable=False),
        sa.Column("requested_by", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("jenkins_queue_id", sa.BigInteger(), nullable=True),
        sa.Column("build_url", sa.String(1000), nullable=True),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("left_out", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("vote", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ci_runs")
