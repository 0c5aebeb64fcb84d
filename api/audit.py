"""Directory writes and their audit records: a change is never made unrecorded.

A directory (LDAP) and an SQL database cannot commit together, so the record
goes first: the change is committed to the audit log as ``pending`` (its
intent), then the directory write is made, then the same transaction as the
caller's other rows (a host's token, say) marks it ``done``:

* the directory write fails: the pending record is removed, nothing is
  recorded, nothing was changed;
* the final commit fails: the write is undone and the record removed; if
  even the undo fails, the error says so, and the record stays pending;
* the process dies (kill -9, a power cut) after the write: the record stays
  ``pending``, and the audit log shows a change the directory may hold.
  Nothing the directory holds is ever missing from the log.
"""

import logging
from collections.abc import Callable
from typing import Any

import ldap
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from . import context, rows
from .store import Change

log = logging.getLogger("opslab.api.audit")


class AuditFailed(Exception):
    """The audit record could not be written; the directory was left or put back as it was."""


def recorded_write(
    session: Session,
    change: Change,
    write: Callable[[], None],
    undo: Callable[[], None],
    rows: Callable[[Session], None] | None = None,
) -> Change:
    """Make ``write`` and record ``change`` (see the module doc); commits ``session``.

    ``rows`` adds the rows that go with the write (a host's token, say) to
    ``session`` once the write is made, to commit with the record's "done".
    They must not be added before: the record is committed on a connection
    of its own, which a database holding ``session``'s writes (SQLite) would
    make wait.
    """
    change.state = "pending"
    with Session(session.get_bind(), expire_on_commit=False) as intent:
        intent.add(change)
        try:
            intent.commit()
        except Exception as error:
            raise AuditFailed(f"recording {change.action} failed; nothing was changed") \
                from error
        intent.expunge(change)
    try:
        write()
    except BaseException:
        session.rollback()
        _forget(session, change)
        raise
    try:
        if rows is not None:
            rows(session)
        session.execute(update(Change).where(Change.id == change.id).values(state="done"))
        session.commit()
    except Exception as error:
        session.rollback()
        try:
            undo()
        except Exception:
            log.critical("directory write %s %s could not be undone after its audit record "
                         "failed; it stays pending in the audit log; before=%r after=%r",
                         change.action, change.target, change.before, change.after)
            raise AuditFailed(f"recording {change.action} failed and undoing it failed too; "
                              "it stays pending in the audit log") from error
        _forget(session, change)
        raise AuditFailed(f"recording {change.action} failed; the change was undone") from error
    change.state = "done"
    return change


def recorded_modify(change: Change, dn: str,
                    changes: list[tuple[int, str, list[str]]]) -> None:
    """Add or delete single values of the entry ``dn`` (``ldap.MOD_ADD``/``MOD_DELETE``)
    and record ``change``, as :func:`recorded_write` does; the undo is the inverse."""
    directory = context.directory()
    undo = [(ldap.MOD_DELETE if operation == ldap.MOD_ADD else ldap.MOD_ADD, name, values)
            for operation, name, values in reversed(changes)]
    with context.session() as session:
        recorded_write(session, change, write=lambda: directory.modify(dn, changes),
                       undo=lambda: directory.modify(dn, undo))


def _forget(session: Session, change: Change) -> None:
    """Remove the pending record of a change that was not made (it stays, should this fail)."""
    try:
        with Session(session.get_bind()) as cleanup:
            cleanup.execute(delete(Change).where(Change.id == change.id))
            cleanup.commit()
    except Exception:
        log.exception("the pending audit record %s of a change not made could not be removed",
                      change.id)


def as_json(change: Change) -> dict[str, Any]:
    return {"id": change.id, "at": change.at.isoformat(), "actor": change.actor,
            "action": change.action, "target": change.target, "project": change.project,
            "before": change.before, "after": change.after, "state": change.state}


FILTERS = ("project", "actor", "action", "target")
MAX_CHANGES = 1000


def recent(filters: dict[str, str], limit: int = 100) -> list[Change]:
    """The newest ``limit`` changes (at most MAX_CHANGES) whose FILTERS fields are
    exactly the values of ``filters``."""
    return rows.newest(Change, limit, MAX_CHANGES, **filters)


def one(change_id: int) -> dict[str, Any]:
    """One change; Refused (404) if there is none."""
    return as_json(rows.by_id(Change, change_id, "change"))
