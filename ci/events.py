"""Gerrit events as opslab reads them, from stream-events lines and webhook bodies alike.

Gerrit sends the same event objects two ways: one JSON object per line on
``gerrit stream-events`` over SSH, and one JSON body per POST from the
webhooks plugin. :func:`parse_event` reads either into a typed event:
:class:`CommentAdded`, :class:`PatchsetCreated`, :class:`ChangeAbandoned`,
:class:`ChangeMerged`, :class:`RefUpdated`, and :class:`OtherEvent` for
every other type (kept, never dropped: a consumer may still log it).

It is tolerant the way the contract asks (``gerrit-jenkins-openstack.md``,
sections 1.2 to 1.4 and 2): numbers come as JSON strings (2.x) or integers
(3.x); any field may be missing; the top-level ``project`` is a string, or
an object ``{"name": ...}`` in a webhook body, or absent (2.x). Only what
opslab cannot act without is required: the change's project and number on a
change event, the patch set's number on a comment or a new patch set, the
ref on a ref update. An event that lacks it, or that is not JSON at all, is
returned as a :class:`Malformed` value naming what was wrong: never an
exception, so one bad line cannot stop a stream or lose its position
(section 8, complaint 3).

:attr:`Event.key` identifies an event whatever path it came by, so the same
comment received over SSH and by webhook, or replayed, is recognised;
:class:`SeenEvents` remembers keys for a while, bounded and thread-safe.
"""

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opslab.config import CiSettings

# A stream-events line or a webhook body longer than this is refused before it is
# parsed: a real event carries at most a commit message (Gerrit refuses pushes with
# messages far smaller), and json.loads of an endless line would hold the whole of it.
MAX_EVENT_BYTES = 4 * 1024 * 1024
# A change or patch-set number: Gerrit's are Java ints (positive, below 2**31).
_MAX_NUMBER = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")
_REVISION = re.compile(r"[0-9a-f]{40}")


class MalformedEvent(ValueError):
    """Raised inside the parser only; :func:`parse_event` turns it into :class:`Malformed`."""


@dataclass(frozen=True)
class Malformed:
    """An event that could not be read: why, and the start of what was received."""

    reason: str
    excerpt: str
    type: str | None = None  # the event's type, when that much could be read

    def __str__(self) -> str:
        kind = f"{self.type} event" if self.type else "event"
        return f"malformed Gerrit {kind}: {self.reason} (received {self.excerpt!r})"


@dataclass(frozen=True)
class Account:
    """A Gerrit account as events name it; every field may be missing."""

    name: str | None = None
    email: str | None = None
    username: str | None = None

    def describe(self) -> str:
        """The account for a message: its username, else its name or e-mail."""
        return self.username or self.name or self.email or "an unnamed account"


@dataclass(frozen=True)
class Approval:
    """One label of a ``comment-added`` event's ``approvals``.

    ``value`` and ``old_value`` are text as Gerrit sends them (``"-1"``, ``"2"``);
    ``old_value`` is present only when the vote changed in this event (2.13+).
    """

    type: str
    value: str
    description: str | None = None
    old_value: str | None = None
    by: Account | None = None


@dataclass(frozen=True)
class Change:
    """The ``change`` attribute: what a run is about."""

    project: str
    number: int
    branch: str | None = None  # short name, without refs/heads/
    id: str | None = None  # the Change-Id, I + 40 hex
    subject: str | None = None
    topic: str | None = None
    url: str | None = None
    commit_message: str | None = None
    status: str | None = None  # NEW, MERGED, ABANDONED (DRAFT, SUBMITTED in old 2.x)
    owner: Account | None = None
    wip: bool = False  # sent only when true
    private: bool = False  # sent only when true
    hashtags: tuple[str, ...] = ()

    @property
    def closed(self) -> bool:
        """Merged or abandoned: a vote on it would be refused (409 ``change is closed``)."""
        return self.status in ("MERGED", "ABANDONED")


@dataclass(frozen=True)
class PatchSet:
    """The ``patchSet`` attribute."""

    number: int
    revision: str | None = None
    ref: str | None = None
    uploader: Account | None = None
    author: Account | None = None
    created_on: int | None = None
    kind: str | None = None  # REWORK, TRIVIAL_REBASE, ... (absent before 2.10)

    def refspec(self, change: int) -> str:
        """The ref to fetch: the event's ``ref``, else ``refs/changes/NN/C/P`` (section 3.5)."""
        return self.ref or change_ref(change, self.number)


def change_ref(change: int, patchset: int) -> str:
    """``refs/changes/NN/CHANGE/PATCHSET``, NN the change's last two digits, zero-padded."""
    return f"refs/changes/{change % 100:02d}/{change}/{patchset}"


@dataclass(frozen=True)
class RefUpdate:
    """The ``refUpdate`` attribute of ``ref-updated``."""

    project: str
    ref_name: str
    old_rev: str | None = None
    new_rev: str | None = None


@dataclass(frozen=True)
class Event:
    """What every event has: its type, when Gerrit made it, its project, its account.

    ``account`` is the event's own account (Zuul's map, contract section 1.4):
    the uploader of a new patch set, the author of a comment, the abandoner,
    the submitter. ``raw`` is the decoded JSON object, kept for logs and for
    the fields this module does not read.
    """

    type: str
    created_on: int | None
    project: str | None
    account: Account | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """The event's identity, the same by SSH and by webhook, and on a replay."""
        return _key(self._identity())

    def _identity(self) -> tuple[Any, ...]:
        # An event opslab does not read: its whole content, with the one field the
        # webhooks plugin serialises differently (project) normalised.
        body = {name: value for name, value in self.raw.items() if name != "project"}
        return (self.type, self.project, json.dumps(body, sort_keys=True, default=str))


@dataclass(frozen=True)
class ChangeEvent(Event):
    """An event about a change, and usually one of its patch sets."""

    change: Change
    patchset: PatchSet | None
    ref_name: str | None  # the target branch's full ref (3.x only)

    @property
    def branch(self) -> str | None:
        """The change's target branch, short: ``change.branch``, else from ``refName``."""
        if self.change.branch:
            return self.change.branch
        if self.ref_name and self.ref_name.startswith("refs/heads/"):
            return self.ref_name[len("refs/heads/"):]
        return None

    def _identity(self) -> tuple[Any, ...]:
        return (self.type, self.change.project, self.change.number,
                self.patchset.number if self.patchset else None, self.created_on,
                _account_identity(self.account))


@dataclass(frozen=True)
class CommentAdded(ChangeEvent):
    """``comment-added``: a review message, with the votes given in it."""

    patchset: PatchSet
    comment: str
    approvals: tuple[Approval, ...]

    def _identity(self) -> tuple[Any, ...]:
        # Gerrit makes one event per message: the same change, patch set, author,
        # creation second and text is the same comment, whichever way it came.
        return (*super()._identity(), self.comment)


@dataclass(frozen=True)
class PatchsetCreated(ChangeEvent):
    """``patchset-created``: a new patch set (a new revision) of a change."""

    patchset: PatchSet

    def _identity(self) -> tuple[Any, ...]:
        # A patch set is created once: its number (and revision) name it.
        return (self.type, self.change.project, self.change.number, self.patchset.number,
                self.patchset.revision)


@dataclass(frozen=True)
class ChangeAbandoned(ChangeEvent):
    """``change-abandoned``."""

    reason: str | None


@dataclass(frozen=True)
class ChangeMerged(ChangeEvent):
    """``change-merged``: ``new_rev`` is the resulting commit (absent in early 2.x)."""

    new_rev: str | None

    def _identity(self) -> tuple[Any, ...]:
        # A change merges once.
        return (self.type, self.change.project, self.change.number)


@dataclass(frozen=True)
class RefUpdated(Event):
    """``ref-updated``: a branch or tag moved, was created (old = zeros) or deleted."""

    ref_update: RefUpdate

    @property
    def created(self) -> bool:
        return self.ref_update.old_rev == "0" * 40

    @property
    def deleted(self) -> bool:
        return self.ref_update.new_rev == "0" * 40

    def _identity(self) -> tuple[Any, ...]:
        update = self.ref_update
        return (self.type, update.project, update.ref_name, update.old_rev, update.new_rev)


@dataclass(frozen=True)
class OtherEvent(Event):
    """Any other type (reviewer-added, topic-changed, dropped-output, ...), kept as is."""


def parse_event(data: str | bytes | Mapping[str, Any]) -> Event | Malformed:
    """One event from a stream-events line, a webhook body, or an already decoded object.

    Never raises: what cannot be read is a :class:`Malformed` naming why.
    """
    document: Mapping[str, Any] | None = None
    try:
        document = _decode(data)
        return _event(document)
    except MalformedEvent as error:
        kind = document.get("type") if document is not None else None
        return Malformed(str(error), _excerpt(data), kind if isinstance(kind, str) else None)
    except Exception as error:  # a parser bug must not stop a stream either
        return Malformed(f"unreadable ({type(error).__name__}: {error})", _excerpt(data))


def _decode(data: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        document: Any = data
    else:
        if len(data) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"longer than {MAX_EVENT_BYTES} bytes ({len(data)})")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise MalformedEvent(f"not UTF-8 ({error.reason} at byte {error.start})") \
                    from None
        if len(data.encode("utf-8", "surrogatepass")) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"longer than {MAX_EVENT_BYTES} bytes")
        if not data.strip():
            raise MalformedEvent("empty")
        try:
            document = json.loads(data)
        except json.JSONDecodeError as error:
            raise MalformedEvent(f"not JSON ({error.msg} at character {error.pos})") from None
        except RecursionError:
            raise MalformedEvent("not JSON (nested too deeply)") from None
    if not isinstance(document, Mapping):
        raise MalformedEvent(f"not a JSON object but {_json_kind(document)}")
    return document


def _event(raw: Mapping[str, Any]) -> Event:
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedEvent("no type")
    created_on = _optional_number(raw, "eventCreatedOn", "eventCreatedOn")
    top_project = _project_name(raw.get("project"))
    if kind == "ref-updated":
        update = _ref_update(_mapping(raw, "refUpdate"))
        return RefUpdated(kind, created_on, update.project, _account(raw.get("submitter")), raw,
                          update)
    builder = _CHANGE_EVENTS.get(kind)
    if builder is None:
        account = _account(raw.get(_ACCOUNTS[kind])) if kind in _ACCOUNTS else None
        change_raw = raw.get("change")
        if top_project is None and isinstance(change_raw, Mapping):  # 2.x: no top level
            top_project = _project_name(change_raw.get("project"))
        return OtherEvent(kind, created_on, top_project, account, raw)
    change = _change(_mapping(raw, "change"))
    patchset_raw = raw.get("patchSet", raw.get("patchset"))  # old 2.x docs: lower case
    patchset = _patchset(patchset_raw) if isinstance(patchset_raw, Mapping) else None
    if patchset_raw is not None and not isinstance(patchset_raw, Mapping):
        raise MalformedEvent(f"patchSet is {_json_kind(patchset_raw)}, not an object")
    common: dict[str, Any] = {
        "type": kind, "created_on": created_on, "project": change.project,
        "account": _account(raw.get(_ACCOUNTS[kind])), "raw": raw, "change": change,
        "patchset": patchset, "ref_name": _optional_text(raw, "refName")}
    return builder(raw, common)


def _comment_added(raw: Mapping[str, Any], common: dict[str, Any]) -> Event:
    if common["patchset"] is None:
        raise MalformedEvent("comment-added without patchSet: the comment names no patch set")
    comment = raw.get("comment", "")
    if not isinstance(comment, str):
        raise MalformedEvent(f"comment is {_json_kind(comment)}, not text")
    approvals_raw = raw.get("approvals") or []
    if not isinstance(approvals_raw, list):
        raise MalformedEvent(f"approvals is {_json_kind(approvals_raw)}, not a list")
    approvals = tuple(approval for approval in map(_approval, approvals_raw) if approval)
    return CommentAdded(**common, comment=comment, approvals=approvals)


def _patchset_created(raw: Mapping[str, Any], common: dict[str, Any]) -> Event:
    patchset = common["patchset"]
    if patchset is None:
        raise MalformedEvent("patchset-created without patchSet")
    if common["account"] is None:  # no top-level uploader (old 2.x): the patch set's own
        common["account"] = patchset.uploader
    return PatchsetCreated(**common)


def _change_abandoned(raw: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return ChangeAbandoned(**common, reason=_optional_text(raw, "reason"))


def _change_merged(raw: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return ChangeMerged(**common, new_rev=_optional_text(raw, "newRev"))


_CHANGE_EVENTS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Event]] = {
    "comment-added": _comment_added,
    "patchset-created": _patchset_created,
    "change-abandoned": _change_abandoned,
    "change-merged": _change_merged,
}
# The field that names each event's account (contract section 1.4, Zuul's map).
_ACCOUNTS = {
    "patchset-created": "uploader", "change-abandoned": "abandoner",
    "change-restored": "restorer", "change-merged": "submitter", "comment-added": "author",
    "ref-updated": "submitter", "reviewer-added": "reviewer", "topic-changed": "changer",
    "draft-published": "uploader", "merge-failed": "submitter",
}


def _change(raw: Mapping[str, Any]) -> Change:
    project = raw.get("project")
    if not isinstance(project, str) or not project:
        raise MalformedEvent("change has no project")
    number = _number(raw.get("number"), "change.number")
    hashtags = raw.get("hashtags")
    return Change(
        project=project, number=number, branch=_optional_text(raw, "branch"),
        id=_optional_text(raw, "id"), subject=_optional_text(raw, "subject"),
        topic=_optional_text(raw, "topic"), url=_optional_text(raw, "url"),
        commit_message=_optional_text(raw, "commitMessage"),
        status=_optional_text(raw, "status"), owner=_account(raw.get("owner")),
        wip=raw.get("wip") is True, private=raw.get("private") is True,
        hashtags=tuple(tag for tag in hashtags if isinstance(tag, str))
        if isinstance(hashtags, list) else ())


def _patchset(raw: Mapping[str, Any]) -> PatchSet:
    revision = _optional_text(raw, "revision")
    if revision is not None and not _REVISION.fullmatch(revision):
        raise MalformedEvent(f"patchSet.revision {revision[:60]!r} is not a 40-hex commit")
    ref = _optional_text(raw, "ref")
    if ref is not None and not ref.startswith("refs/"):
        raise MalformedEvent(f"patchSet.ref {ref[:60]!r} is not a ref")
    return PatchSet(
        number=_number(raw.get("number"), "patchSet.number"), revision=revision, ref=ref,
        uploader=_account(raw.get("uploader")), author=_account(raw.get("author")),
        created_on=_optional_number(raw, "createdOn", "patchSet.createdOn"),
        kind=_optional_text(raw, "kind"))


def _ref_update(raw: Mapping[str, Any]) -> RefUpdate:
    project = raw.get("project")
    ref_name = raw.get("refName")
    if not isinstance(project, str) or not project:
        raise MalformedEvent("refUpdate has no project")
    if not isinstance(ref_name, str) or not ref_name:
        raise MalformedEvent("refUpdate has no refName")
    return RefUpdate(project, ref_name, _optional_text(raw, "oldRev"),
                     _optional_text(raw, "newRev"))


def _approval(raw: Any) -> Approval | None:
    """One approval; an entry that is not one (no label, no value) is left out."""
    if not isinstance(raw, Mapping):
        return None
    label = raw.get("type")
    value = raw.get("value")
    if not isinstance(label, str) or not label:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    old_value = raw.get("oldValue")
    if isinstance(old_value, int) and not isinstance(old_value, bool):
        old_value = str(old_value)
    return Approval(label, value, _optional_text(raw, "description"),
                    old_value if isinstance(old_value, str) else None, _account(raw.get("by")))


def _account(raw: Any) -> Account | None:
    if not isinstance(raw, Mapping):
        return None
    account = Account(_optional_text(raw, "name"), _optional_text(raw, "email"),
                      _optional_text(raw, "username"))
    return account if account != Account() else None


def _account_identity(account: Account | None) -> tuple[str | None, ...] | None:
    return (account.username, account.email, account.name) if account else None


def _project_name(value: Any) -> str | None:
    """The top-level ``project``: a string (stream-events), or ``{"name": ...}`` (webhooks)."""
    if isinstance(value, Mapping):
        value = value.get("name")
    return value if isinstance(value, str) and value else None


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if isinstance(value, Mapping):
        return value
    if value is None:
        raise MalformedEvent(f"no {key}")
    raise MalformedEvent(f"{key} is {_json_kind(value)}, not an object")


def _number(value: Any, name: str) -> int:
    """A positive number sent as a JSON integer (3.x) or a string of digits (2.x)."""
    if isinstance(value, bool):
        raise MalformedEvent(f"{name} is a boolean, not a number")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        shown = f"{value[:40]!r}" if isinstance(value, str) else _json_kind(value)
        raise MalformedEvent(f"{name} is {shown}, not a number" if value is not None
                             else f"no {name}")
    if not 0 < value <= _MAX_NUMBER:
        raise MalformedEvent(f"{name} {value} is out of range")
    return value


def _optional_number(raw: Mapping[str, Any], key: str, name: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MalformedEvent(f"{name} is {_json_kind(value)} {str(value)[:40]!r}, not a time")


def _optional_text(raw: Mapping[str, Any], key: str) -> str | None:
    """A text field; missing, null or of another type (a field opslab does not need to
    act on) reads as None rather than refusing the whole event."""
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def _excerpt(data: object, limit: int = 200) -> str:
    if isinstance(data, bytes):
        text = data[: limit * 4].decode("utf-8", "replace")
    elif isinstance(data, str):
        text = data[: limit * 4]
    else:
        try:
            text = json.dumps(data, default=str)[: limit * 4]
        except (TypeError, ValueError, RecursionError):
            text = repr(data)[: limit * 4]
    return text[:limit]


def _key(identity: tuple[Any, ...]) -> str:
    """``TYPE PROJECT CHANGE,PS DIGEST``: readable in a log, exact in the digest."""
    encoded = json.dumps(identity, ensure_ascii=False, default=str).encode("utf-8",
                                                                         "surrogatepass")
    digest = hashlib.sha256(encoded).hexdigest()[:32]
    readable = " ".join(str(part) for part in identity[:4] if part is not None)
    return f"{readable} {digest}"


class SeenEvents:
    """The keys of events already handled, each forgotten ``max_age`` seconds after it
    was first seen, at most ``max_size`` of them (the oldest go first). Thread-safe:
    the SSH reader and the webhook handler share one.

    :meth:`first_time` checks and records in one step, so of two paths delivering
    the same event at the same moment exactly one is told it is new.
    """

    def __init__(self, max_age: float, max_size: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_age <= 0 or max_size <= 0:
            raise ValueError("SeenEvents needs a positive max_age and max_size")
        self.max_age = max_age
        self.max_size = max_size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: "CiSettings") -> "SeenEvents":
        """The set ``ci.dedup_seconds`` and ``ci.dedup_size`` describe."""
        return cls(settings.dedup_seconds, settings.dedup_size)

    def first_time(self, key: str) -> bool:
        """True if ``key`` was not seen within ``max_age``, and remember it from now."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if key in self._seen:
                return False
            self._seen[key] = now
            while len(self._seen) > self.max_size:
                self._seen.popitem(last=False)
            return True

    def __contains__(self, key: object) -> bool:
        with self._lock:
            self._expire(self._clock())
            return key in self._seen

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._seen)

    def _expire(self, now: float) -> None:
        # Keys are kept in the order they were first seen, so the oldest are in front.
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if now - seen < self.max_age:
                break
            del self._seen[key]
