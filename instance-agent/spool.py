"""The agent's outbox: run reports, state changes and smoke results, kept on disk until
the API has them.

Everything the agent tells the API goes through here, in order: written to
the spool first (atomically, with an idempotency key of its own), then
delivered oldest first. A crash after writing loses nothing; a crash after
the API stored an item but before it was removed here sends it again, and
the API recognises the key and does not store it twice.

Delivery stops at the first item the API cannot take now (unreachable, a
5xx, the token refused), so later items never overtake earlier ones. An
item the API refuses as invalid (any other 4xx) would block the queue
forever; it is moved to ``rejected/`` with the reason, where an operator
can read it, never deleted and never overwritten.

Item numbers are never reused, so a name in ``rejected/`` always means one
item: the last number issued is kept in ``.sequence``, written before the
item it numbers (a crash in between skips a number, never repeats one),
and a new number is above it and above every item pending or set aside.
"""

import itertools
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from opslab.apiclient import ApiRefused, ApiUnavailable
from opslab.files import write_atomic
from opslab.lock import FileLock, LockHeld

# 401 and 403 say the token is wrong, not the item: keep it for a fixed token.
_RETRY_LATER = (401, 403)
# Adding holds its lock for a rename; delivering holds its own across requests,
# so `opslab agent disable` never waits on a slow API to spool its state.
ADD_LOCK_TIMEOUT = 10.0
KINDS = ("report", "state", "smoke")
SEQUENCE_FILE = ".sequence"


class Item(NamedTuple):
    """One spooled message: ``kind`` is "report", "state" or "smoke"."""

    path: Path
    key: str
    kind: str
    certname: str
    body: dict[str, Any]


class Delivery(NamedTuple):
    """What one delivery round did."""

    delivered: int
    rejected: int
    pending: int
    error: str | None


class Spool:
    """The spool directory: ``NNNNNNNNNNNN.json`` files, delivered in name order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected = directory / "rejected"

    def add(self, kind: str, certname: str, body: dict[str, Any], key: str | None = None) -> str:
        """Spool one message under ``key`` (default: a new one); returns its idempotency key."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        key = key or uuid.uuid4().hex
        envelope = {"key": key, "kind": kind, "certname": certname, "body": body,
                    "spooled_at": datetime.now(UTC).isoformat(timespec="seconds")}
        with FileLock(str(self.directory / ".add.lock"), "adding to the agent's spool",
                      ADD_LOCK_TIMEOUT):
            sequence = max([self._last_issued(), *self._numbers_in_use()]) + 1
            write_atomic(str(self.directory / SEQUENCE_FILE), f"{sequence}\n")
            write_atomic(str(self.directory / f"{sequence:012d}.json"),
                         json.dumps(envelope, default=str))
        return key

    def _last_issued(self) -> int:
        try:
            return int((self.directory / SEQUENCE_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            # None issued yet; or (it is written atomically) a damaged disk,
            # and then the items' own numbers tell.
            return 0

    def _numbers_in_use(self) -> list[int]:
        """The numbers of the items pending and of those set aside."""
        numbers = [int(path.stem) for path in self._files()]
        if self.rejected.exists():
            for path in self.rejected.glob("*.json"):
                # NNNNNNNNNNNN.json, NNNNNNNNNNNN-2.json, NNNNNNNNNNNN.reason.json
                number = path.name.split(".", 1)[0].split("-", 1)[0]
                if number.isdigit():
                    numbers.append(int(number))
        return numbers

    def pending(self) -> list[Item]:
        """The spooled messages, oldest first."""
        items = []
        for path in self._files():
            try:
                envelope = json.loads(path.read_text(encoding="utf-8"))
                if envelope["kind"] not in KINDS:
                    raise ValueError(f"unknown kind {envelope['kind']!r}")
                items.append(Item(path, envelope["key"], envelope["kind"],
                                  envelope["certname"], envelope["body"]))
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
                # Written atomically, so only a damaged disk gets here; keep it in sight.
                self._set_aside(path, f"unreadable: {error}")
        return items

    def deliver(self, send: Callable[[Item], None]) -> Delivery:
        """Send pending messages oldest first with ``send``, until one cannot go now.

        When another process is delivering, this one leaves it to that one.
        """
        if not self.directory.exists():
            return Delivery(0, 0, 0, None)
        delivered = rejected = 0
        lock = FileLock(str(self.directory / ".deliver.lock"), "delivering the agent's spool")
        try:
            lock.acquire()
        except LockHeld as error:
            return Delivery(0, 0, len(self._files()), f"another delivery is under way: {error}")
        try:
            items = self.pending()
            for index, item in enumerate(items):
                try:
                    send(item)
                except ApiUnavailable as error:
                    return Delivery(delivered, rejected, len(items) - index, str(error))
                except ApiRefused as error:
                    if error.status in _RETRY_LATER:
                        return Delivery(delivered, rejected, len(items) - index, str(error))
                    self._set_aside(item.path, str(error))
                    rejected += 1
                    continue
                item.path.unlink()
                delivered += 1
        finally:
            lock.release()
        return Delivery(delivered, rejected, 0, None)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move ``path`` to ``rejected/`` beside its reason, under a name not yet taken there."""
        self.rejected.mkdir(exist_ok=True)
        for attempt in itertools.count(1):
            name = path.stem if attempt == 1 else f"{path.stem}-{attempt}"
            try:
                # A link, unlike a rename, never replaces a file already there.
                os.link(path, self.rejected / f"{name}.json")
                break
            except FileExistsError:
                continue
        note = {"rejected_at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason}
        write_atomic(str(self.rejected / f"{name}.reason.json"), json.dumps(note))
        path.unlink()

    def _files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(path for path in self.directory.glob("*.json") if path.stem.isdigit())
