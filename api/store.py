"""The SQL store: what the directory does not hold.

SQLAlchemy 2 with Alembic migrations (``opslab api migrate``); SQLite by
default, PostgreSQL or MariaDB/MySQL by URL. The tables:

* ``changes``: the audit log, one row per write to the directory: who,
  when, what, before and after;
* ``server_admin_log``: the Server Admin Log, what people say they did;
* ``run_reports``: the Puppet runs instances report, each with the smoke
  results it carried;
* ``agent_states``: what each instance's agent last said about itself
  (version, disabled and why);
* ``smoke_results``: each host's latest smoke results (its checks per
  Puppet class), from a run report or the agent's interval check;
* ``host_tokens``: the digest of each host's token (the token itself is
  shown once, when the host is created, and never stored), and its
  *incarnation*: a name can be deleted and created again, and the reports
  and agent state of the host that was deleted must never show as the new
  one's. Reports, agent states and smoke results carry the incarnation
  they were sent by;
* ``instances``: the server launched for a host (provider, server id,
  state, the cloud's fault, image, flavor, size, addresses);
* ``project_quotas``: what operations allow a project to launch;
* ``project_instance_defaults``: the image and flavor a project's members
  chose for its instances when a launch names none;
* ``orphan_sightings``: servers of this installation that no host claims,
  and when the reaper first saw each (it deletes one seen twice);
* ``ci_runs``: every CI run of a Gerrit change's patch set (issue 13): what
  was tested, who asked, its state, hosts, result and vote.

Every time is stored in UTC and read back as an aware datetime, on every
database (:class:`UTCDateTime`).
"""

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


def new_incarnation() -> str:
    """A fresh incarnation id for a host created (again) under its name."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC, always read back with its zone.

    SQLite and MariaDB keep no zone and hand back naive values; PostgreSQL
    keeps it. One column type makes every database answer alike, so every
    time the API serves (JSON, Atom) is valid RFC 3339.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a stored time must carry its time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The models' common base."""


class Change(Base):
    """One write to the directory, recorded in the same breath as the write."""

    __tablename__ = "changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, index=True)
    actor: Mapped[str] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512))
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    # "pending" until the directory write is done (see api/audit.py).
    state: Mapped[str] = mapped_column(String(16), default="done")


class LogEntry(Base):
    """One line of the Server Admin Log."""

    __tablename__ = "server_admin_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    # A person's uid, or the chat nick an entry came from through a bot.
    author: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    # The bot account that relayed the entry from chat (None: posted directly).
    via: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The directory person behind a relayed nick, when the bot could tell.
    person: Mapped[str | None] = mapped_column(String(32), nullable=True)


class LoginFailure(Base):
    """A wrong password for ``uid`` from ``address`` (see api/logins.py)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_uid_address", "uid", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, index=True)
    uid: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(64))


class ProjectDocument(Base):
    """A project's free-form documentation (Markdown), as its members last wrote it."""

    __tablename__ = "project_documents"
    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_by: Mapped[str] = mapped_column(String(255))
    # Bumped at every write: an edit made from an older version is refused.
    version: Mapped[int] = mapped_column(Integer, default=1)


class RunReport(Base):
    """One Puppet run as an instance reported it."""

    __tablename__ = "run_reports"
    __table_args__ = (UniqueConstraint("host", "incarnation", "idempotency_key",
                                       name="uq_run_reports_host_incarnation_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now,
                                                  index=True)
    host: Mapped[str] = mapped_column(String(253), index=True)
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    commit: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[Any] = mapped_column(JSON, default=list)
    duration: Mapped[float | None] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str | None] = mapped_column(String(32))
    errors: Mapped[Any] = mapped_column(JSON, nullable=True)
    incarnation: Mapped[str | None] = mapped_column(String(32), index=True)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # A report without smoke results is SQL NULL, as the rows from before they existed.
    smoke: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)


class AgentState(Base):
    """What a host's agent last said about itself."""

    __tablename__ = "agent_states"
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[str | None] = mapped_column(String(64))
    disabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    incarnation: Mapped[str | None] = mapped_column(String(32))


class SmokeResult(Base):
    """A host's latest smoke results: the stored form of a ``SmokeSummary``."""

    __tablename__ = "smoke_results"
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(64))
    incarnation: Mapped[str | None] = mapped_column(String(32))
    # Also in the summary; a column of its own to compare by.
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    summary: Mapped[Any] = mapped_column(JSON)


class HostToken(Base):
    """The digest of a host's token."""

    __tablename__ = "host_tokens"
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    incarnation: Mapped[str] = mapped_column(String(32), default=new_incarnation)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Instance(Base):
    """The server a provider runs for a host (one per host incarnation)."""

    __tablename__ = "instances"
    host: Mapped[str] = mapped_column(String(253), primary_key=True)
    incarnation: Mapped[str] = mapped_column(String(32))
    project: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    fault: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str] = mapped_column(String(255))
    flavor: Mapped[str] = mapped_column(String(255))
    cores: Mapped[int | None] = mapped_column(Integer)
    ram_mb: Mapped[int | None] = mapped_column(Integer)
    addresses: Mapped[Any] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class ProjectQuota(Base):
    """What a project may launch; a missing row or a null limit is no limit."""

    __tablename__ = "project_quotas"
    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    instances: Mapped[int | None] = mapped_column(Integer)
    cores: Mapped[int | None] = mapped_column(Integer)
    ram_mb: Mapped[int | None] = mapped_column(Integer)


class ProjectInstanceDefaults(Base):
    """A project's own image and flavor for launches that name none; a missing row or a
    null is none (the configuration's ``instances.image`` and ``instances.flavor`` apply)."""

    __tablename__ = "project_instance_defaults"
    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    image: Mapped[str | None] = mapped_column(String(255))
    flavor: Mapped[str | None] = mapped_column(String(255))


class OrphanSighting(Base):
    """A server the reaper found with no host to claim it, first seen at ``first_seen``."""

    __tablename__ = "orphan_sightings"
    server_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str | None] = mapped_column(String(253))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class CiRun(Base):
    """One CI run of a Gerrit change's patch set (the rules are in api/ciruns.py)."""

    __tablename__ = "ci_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The SHA-256 of the dispatcher's event key: unique whatever the database's
    # collation (MariaDB's would match keys differing in case or trailing spaces).
    event_digest: Mapped[str] = mapped_column(String(64), unique=True)
    event_key: Mapped[str] = mapped_column(String(255))
    gerrit_project: Mapped[str] = mapped_column(String(255), index=True)
    change: Mapped[int] = mapped_column(Integer, index=True)
    patchset: Mapped[int] = mapped_column(Integer)
    revision: Mapped[str] = mapped_column(String(40))
    branch: Mapped[str] = mapped_column(String(200))
    change_id: Mapped[str | None] = mapped_column(String(41))
    change_url: Mapped[str | None] = mapped_column(String(1000))
    subject: Mapped[str | None] = mapped_column(String(1000))
    trigger: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    jenkins_queue_id: Mapped[int | None] = mapped_column(BigInteger)
    build_url: Mapped[str | None] = mapped_column(String(1000))
    hosts: Mapped[Any] = mapped_column(JSON)
    left_out: Mapped[Any] = mapped_column(JSON)
    result: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    vote: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped by every write: two writes of one run at once cannot both pass its
    # transition check (the later one fails; it would log a finished run twice).
    version: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (declarative's own form)


def token_digest(token: str) -> str:
    """The stored form of a token. Tokens are 256 random bits, so a plain hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def engine_for(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys and a busy timeout."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 5000")
            cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL is crash-safe; a power cut may lose the last
            # commits (run reports), never corrupt the database.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

    return engine


def sessions(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(settings, "head")
