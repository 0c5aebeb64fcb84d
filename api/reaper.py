"""The reaper, ``opslab instances reap``: servers nobody claims, and launches nobody finished.

Run it every few minutes (a systemd timer beside the API, docs/operations.md).
One pass:

* **Orphans.** A server that carries this installation's tag
  (``instances.installation``) but that no host's instance claims is seen
  once and remembered; seen again on a later pass, it is deleted. A launch
  in flight (its server made, its id not yet stored) is not a leak: it is
  claimed by the next pass.
* **Launches nobody finished.** An instance still ``building`` long after
  ``instances.launch_timeout`` (the API was killed in the middle) is undone
  as a failed launch is: its server deleted (by id, or by the host its tag
  names), then its host.
* **Servers gone.** A host whose server the cloud no longer has is
  reported, and its instance marked in error, for people to decide.
* **CI clones past their run.** A host of the CI project (``ci.clone_project``)
  whose instance is older than ``ci.run_timeout`` (and the grace) belongs to a
  run that is over or was killed without its clean-up (``opslab ci run``
  deletes its clones itself): it is deleted, instance and all.

Every deletion is in the audit log and its project's Server Admin Log,
written by ``service:reaper``.
"""

import argparse
import logging
import sys
from contextlib import suppress
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, select

from opslab.config import add_config_option
from opslab.directory import DirectoryError, DirectoryUnavailable
from opslab.instances.provider import BUILDING, ERROR, HOST, PROJECT, ProviderError, Server

from . import context, hosts, instances
from .auth import Actor
from .cli import configured
from .errors import Refused
from .store import Change, Instance, LogEntry, OrphanSighting, now

log = logging.getLogger(__name__)
REAPER = Actor("service", "reaper")
# How long after launch_timeout a launch still building is taken as abandoned.
GRACE = timedelta(minutes=2)


class Pass(NamedTuple):
    """What one pass did, server ids and host names."""

    deleted: list[str]  # orphans deleted
    watching: list[str]  # orphans seen for the first time
    undone: list[str]  # hosts whose launch was abandoned, removed
    gone: list[str]  # hosts whose server is gone
    failed: list[str]  # servers or hosts it could not deal with (tried again next pass)
    clones: list[str]  # CI clones past their run, deleted


def reap(at: datetime | None = None) -> Pass:
    """One pass of the reaper (in an app context); ``at`` is now."""
    at = at or now()
    settings = context.config().instances
    cloud = context.provider()
    servers = {server.id: server for server in cloud.servers(settings.installation)}
    failed: list[str] = []
    undone = _undo_abandoned(at - timedelta(seconds=settings.launch_timeout) - GRACE, servers,
                             failed)
    clones = _delete_old_clones(at - timedelta(seconds=context.config().ci.run_timeout) - GRACE,
                                failed)
    if undone or clones:
        servers = {server.id: server for server in cloud.servers(settings.installation)}
    with context.session() as session:
        rows = list(session.scalars(select(Instance)).all())
        sightings = {row.server_id: row for row in session.scalars(select(OrphanSighting))}
    claimed = {row.server_id for row in rows if row.server_id is not None}
    deleted, watching = [], []
    for server in servers.values():
        if server.id in claimed:
            continue
        if server.id in sightings:
            # One server the cloud will not delete must not stop the pass.
            try:
                _delete_orphan(server)
            except ProviderError as error:
                log.error("the orphaned server %s could not be deleted: %s", server.id, error)
                failed.append(server.id)
                continue
            deleted.append(server.id)
        else:
            watching.append(server.id)
    with context.session() as session:
        # Only what is still an orphan stays remembered (one that could not be deleted
        # is deleted at the next pass).
        session.execute(delete(OrphanSighting).where(
            OrphanSighting.server_id.not_in([*watching, *failed])))
        for server_id in watching:
            session.add(OrphanSighting(server_id=server_id,
                                       host=servers[server_id].metadata.get(HOST), first_seen=at))
        session.commit()
    gone = [row.host for row in rows if row.server_id is not None and row.state != BUILDING
            and row.server_id not in servers and row.state != ERROR]
    for host in gone:
        instances.mark_gone(host)
        log.warning("the server of %s is gone from the cloud; its host is kept", host)
    return Pass(deleted, watching, undone, gone, failed, clones)


def _delete_old_clones(before: datetime, failed: list[str]) -> list[str]:
    project = context.config().ci.clone_project
    with context.session() as session:
        old = list(session.scalars(select(Instance.host).where(
            Instance.project == project, Instance.created_at < before)).all())
    deleted = []
    for host in old:
        try:
            try:
                entry = hosts.existing(host)[2]
            except Refused:  # its entry was removed by hand: the instance is still there
                entry = {"name": host, "project": project}
            instances.destroy(REAPER, entry)
            with suppress(Refused):
                hosts.discard(REAPER, host)
        # A clone being deleted by its own run at the same moment (its names half gone),
        # or a directory that does not answer: tried again at the next pass.
        except (ProviderError, DirectoryError, DirectoryUnavailable) as error:
            log.error("the CI clone %s could not be deleted: %s", host, error)
            failed.append(host)
            continue
        log.warning("deleted the CI clone %s, older than its run", host)
        deleted.append(host)
    return deleted


def _undo_abandoned(before: datetime, servers: dict[str, Server],
                    failed: list[str]) -> list[str]:
    with context.session() as session:
        abandoned = list(session.scalars(select(Instance).where(
            Instance.state == BUILDING, Instance.updated_at < before)).all())
    undone = []
    for row in abandoned:
        # Its server, by the id stored, or by the host its tag names (the API died
        # before it stored the id).
        ids = {row.server_id} if row.server_id else {
            server.id for server in servers.values() if server.metadata.get(HOST) == row.host}
        host = {"name": row.host, "project": row.project}
        try:
            for server_id in ids:
                context.provider().delete(server_id, context.config().instances.delete_timeout)
                instances.fresh_deadline()
                instances.forget_alias(REAPER, host, server_id)
        except ProviderError as error:
            log.error("the abandoned launch of %s could not be undone: %s", row.host, error)
            failed.append(row.host)
            continue
        instances.forget(row.host)
        with suppress(Refused):  # its entry is gone already
            hosts.discard(REAPER, row.host)
        log.warning("undid the abandoned launch of %s (servers: %s)", row.host,
                    ", ".join(sorted(ids)) or "none")
        undone.append(row.host)
    return undone


def _delete_orphan(server: Server) -> None:
    settings = context.config().instances
    context.provider().delete(server.id, settings.delete_timeout)
    project = server.metadata.get(PROJECT)
    with context.session() as session:
        session.add(Change(actor=str(REAPER), action="instance.reap", target=server.id,
                           project=project, before={"server_id": server.id,
                                                    "name": server.name,
                                                    "host": server.metadata.get(HOST)},
                           after=None))
        if project:
            session.add(LogEntry(project=project, author=str(REAPER),
                                 message=f"deleted the server {server.id} ({server.name}), "
                                         "which no host claimed"))
        session.commit()
    log.warning("deleted the orphaned server %s (%s)", server.id, server.name)


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab instances ARGV``."""
    parser = argparse.ArgumentParser(prog="opslab instances",
                                     description="Instances: the reaper.")
    add_config_option(parser, config_path)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("reap", help="delete servers no host claims (seen twice), undo "
                                    "abandoned launches, report servers gone")
    arguments = parser.parse_args(argv)
    config = configured(arguments.config)
    if config is None:
        return 2
    from .app import create_app

    app = create_app(config)
    with app.app_context():
        context.directory().begin_request()
        try:
            done = reap()
        except ProviderError as error:
            log.error("the reaper could not finish: %s", error)
            return 1
    for name, items in done._asdict().items():
        if items:
            sys.stdout.write(f"{name}: {' '.join(items)}\n")
    return 1 if done.failed else 0
