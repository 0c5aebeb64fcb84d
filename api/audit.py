"""Directory writes and their audit records: both happen, or neither.

The audit row is written first inside an open transaction, then the
directory write is made, then the transaction commits. If the directory
write fails, the transaction is rolled back: nothing is recorded as done.
If the commit fails after the write, the write is undone; if even that
fails, the error says so and the log has both states for a person to fix.
"""

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from .store import Change

log = logging.getLogger("opslab.api.audit")


class AuditFailed(Exception):
    """The audit record could not be written; the directory write was undone."""


def recorded_write(
    session: Session,
    change: Change,
    write: Callable[[], None],
    undo: Callable[[], None],
) -> Change:
    """Make ``write`` and record ``change``, all or nothing (see module doc)."""
    session.add(change)
    session.flush()  # the database takes the row, or fails before anything is written
    try:
        write()
    except BaseException:
        session.rollback()
        raise
    try:
        session.commit()
    except Exception as error:
        session.rollback()
        try:
            undo()
        except Exception:
            log.critical("directory write %s %s could not be undone after its audit record "
                         "failed; before=%r after=%r", change.action, change.target,
                         change.before, change.after)
            raise AuditFailed(f"recording {change.action} failed and undoing it failed too; "
                              "operations have been alerted in the log") from error
        raise AuditFailed(f"recording {change.action} failed; the change was undone") from error
    return change


def as_json(change: Change) -> dict[str, Any]:
    return {"id": change.id, "at": change.at.isoformat(), "actor": change.actor,
            "action": change.action, "target": change.target, "project": change.project,
            "before": change.before, "after": change.after}
