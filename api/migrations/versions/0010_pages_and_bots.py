"""The pages and the log bot (issue 14): projects' documentation, and Server Admin
Log entries relayed from chat.

``project_documents`` holds each project's free-form Markdown, with a
version bumped at every write so an edit made from an older copy is refused.
``server_admin_log.via`` names the bot account that relayed an entry from
chat (the entry's author is then the nick), ``person`` the directory person
behind that nick when the bot could tell.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "project_documents",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    with op.batch_alter_table("server_admin_log") as table:
        table.add_column(sa.Column("via", sa.String(64), nullable=True))
        table.add_column(sa.Column("person", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("server_admin_log") as table:
        table.drop_column("person")
        table.drop_column("via")
    op.drop_table("project_documents")
