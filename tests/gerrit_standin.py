"""A stand-in for Gerrit's REST API, enough of it for opslab's reporter, on a loopback port
in threads of this process; its changes' patch sets are real commits under
``refs/changes/NN/C/P`` in a real bare git repository.

It follows the project's wire contract for Gerrit (contracts/gerrit-jenkins-openstack.md,
section 3; gotchas 1, 2 and 13):

- the authenticated paths are ``/a/...`` with HTTP Basic auth of its one account: a
  missing or wrong ``Authorization`` gets **401** with a plain-text body and a
  ``WWW-Authenticate: Basic`` challenge (3.1); outside ``/a/`` a request is anonymous and
  sees nothing (the project is not readable anonymously: 404 for a read, 403 for a
  review);
- JSON answers are ``Content-Type: application/json; charset=UTF-8`` and start with the
  magic ``)]}'`` line (gotcha 1); errors are plain text, without it (3.1);
- ``{change-id}`` is taken in every form of 3.2: the number, ``project~number``,
  ``project~branch~Change-Id`` (project and branch URL-encoded: a ``/`` in a project
  name must arrive as ``%2F``, as on a real server where an unencoded one splits the
  path), and the Change-Id alone when one change has it; ``{revision-id}`` as
  ``current``, a commit SHA-1 or a unique prefix of at least 4 hex digits, or the
  patch-set number;
- ``GET /a/changes/{id}`` answers a ChangeInfo (3.3): ``id`` (the triplet), ``project``,
  ``branch``, ``change_id``, ``subject``, ``status`` (``NEW``, ``MERGED``,
  ``ABANDONED``), ``_number``, ``owner``, ``created``, ``updated``; with
  ``o=CURRENT_REVISION`` also ``current_revision`` and the current patch set in
  ``revisions``, with ``o=ALL_REVISIONS`` every patch set (``_number``, ``ref``,
  ``created``, ``kind``, ``fetch``); an unknown option is 400;
- ``POST /a/changes/{id}/revisions/{rev}/review`` takes a ReviewInput (3.4): ``message``,
  ``labels`` (``Verified`` -1..+1, ``Code-Review`` -2..+2; an unknown label or value is 400
  unless ``strict_labels`` is false, which drops unknown labels), ``tag``, ``notify``
  (``NONE``, ``OWNER``, ``OWNER_REVIEWERS``, ``ALL``; anything else 400), inline
  ``comments`` (``omit_duplicate_comments`` skips one identical to a comment already
  on the change: same file, line and message), and records it; **409** ``change is
  closed`` for labels on an abandoned or merged change (gotcha 13: the stand-in's labels
  allow no post-submit vote), a message without labels on one is accepted; 404 for an
  unknown change or revision; the answer is a ReviewResult ``{"labels": {...}}``.

- ``GET /a/changes/?q=QUERY`` (3.3) answers the matching changes, most recently updated
  first, as a JSON array, the last entry with ``"_more_changes": true`` when ``n=`` (the
  page size, 500 by default as Gerrit's ``queryLimit``) cut it short, and ``S=`` skipping
  that many; the query's terms are ``status:open|new|merged|abandoned|closed``,
  ``project:NAME``, ``change:N`` and ``after:``/``since:`` a time as Gerrit reads it
  (``"2006-01-02[ 15:04:05[.890][ -0700]]"``, UTC by default; inclusive, on the change's
  ``updated``), joined by blanks (AND); any other term is 400;
- ``o=MESSAGES`` adds the change's ``messages`` (ChangeMessageInfo: ``id``, ``author``,
  ``date``, ``message``, ``tag``, ``_revision_number``), oldest first; accounts (the owner,
  a message's author) are only ``_account_id`` unless ``o=DETAILED_ACCOUNTS`` is given.

State a test sets: :meth:`GerritStandIn.add_change`, :meth:`add_patchset` (a commit on
the change's branch, pushed to its ``refs/changes`` ref, with Gerrit's ``Uploaded patch
set N.`` message), :meth:`set_status`, :meth:`add_comment` (a review message, returning
the ``comment-added`` event stream-events would send for it, with the same creation
time: a test can deliver the same comment by SSH, by webhook and through the
catch-up), :meth:`patchset_event` (the ``patchset-created`` event of a patch set); and
reads:
:attr:`reviews` (every review recorded, in order), :meth:`votes`, :attr:`requests`.
:meth:`hang` makes matching requests wait before their answer; :attr:`fail_next` answers
the next matching requests with a status of the test's choosing; :attr:`before_review`
runs just before a review is judged (to close the change in the middle of a vote).
"""

import base64
import binascii
import calendar
import json
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.remote import Remote

USERNAME = "opslab-ci"
MAGIC = b")]}'\n"
JOIN_DEADLINE = 10.0
LABELS = {"Verified": range(-1, 2), "Code-Review": range(-2, 3)}
NOTIFY = ("NONE", "OWNER", "OWNER_REVIEWERS", "ALL")
OPTIONS = ("CURRENT_REVISION", "ALL_REVISIONS", "DETAILED_ACCOUNTS", "LABELS", "MESSAGES")
# Gerrit's default queryLimit: the most changes one query answers.
QUERY_LIMIT = 500
# The accounts of the stand-in's events: the owner and uploader of every change, and the
# reviewer who comments unless a test names another.
OWNER = {"_account_id": 1000001, "name": "Dev", "email": "dev@example.org", "username": "dev"}
REVIEWER = {"_account_id": 1000002, "name": "Rev", "email": "rev@example.org",
            "username": "rev"}
_HEX = re.compile(r"[0-9a-f]{4,40}")


def _timestamp(seconds: float) -> str:
    """Gerrit's timestamps: ``2012-07-17 07:18:30.854000000``, UTC."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + \
        f".{int((seconds - whole) * 1e9):09d}"


_QUERY_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?: (\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?"
                         r"(?: ([+-])(\d{2})(\d{2}))?)?")


def _query_time(text: str) -> float | None:
    """A time of ``after:`` as Gerrit reads it: ``2006-01-02[ 15:04:05[.890][ -0700]]``,
    UTC when no zone is given; None if it is not one."""
    match = _QUERY_TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, millis, sign, zone_h, zone_m = match.groups()
    try:
        seconds = calendar.timegm((int(year), int(month), int(day), int(hour or 0),
                                   int(minute or 0), int(second or 0), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if sign:
        offset = int(zone_h) * 3600 + int(zone_m) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds + int((millis or "0").ljust(3, "0")) / 1000


@dataclass
class PatchSet:
    number: int
    revision: str
    ref: str
    created: float


@dataclass
class Message:
    """A change message (ChangeMessageInfo): a review comment, or Gerrit's own."""

    id: str
    author: dict[str, Any]  # an account: _account_id, name, email, username
    date: float
    message: str
    revision_number: int
    tag: str | None = None


@dataclass
class Change:
    number: int
    project: str
    branch: str
    change_id: str
    subject: str
    status: str = "NEW"
    patchsets: list[PatchSet] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    comments: list[tuple[str, int | None, str]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    @property
    def current(self) -> PatchSet:
        return self.patchsets[-1]

    @property
    def updated(self) -> float:
        """When the change last changed: its newest patch set or message."""
        return max([self.created, *(p.created for p in self.patchsets),
                    *(m.date for m in self.messages)])


@dataclass(frozen=True)
class Review:
    """A review the stand-in accepted: on which change and patch set, and what it said."""

    change: int
    patchset: int
    revision: str
    message: str | None
    labels: dict[str, int]
    tag: str | None
    notify: str
    omit_duplicate_comments: bool
    comments: dict[str, list[dict[str, Any]]]  # the inline comments kept (duplicates omitted)
    body: dict[str, Any]  # the ReviewInput exactly as received


def _stream_account(who: dict[str, Any]) -> dict[str, Any]:
    """An AccountInfo as stream-events writes an account: name, email, username."""
    return {key: who[key] for key in ("name", "email", "username") if who.get(key)}


class GerritStandIn:
    """One Gerrit: its account, its projects' changes, and a bare repository per project."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.user = USERNAME
        self.password = "http-" + secrets.token_hex(12)
        self.changes: dict[int, Change] = {}
        self.reviews: list[Review] = []
        self.requests: list[tuple[str, str, bool]] = []  # (method, raw path, authenticated)
        self.hangs: list[tuple[Callable[[str, str], bool], float]] = []
        self.fail_next: list[tuple[Callable[[str, str], bool], int, str]] = []
        self.before_review: Callable[[Change], None] | None = None
        self.remotes: dict[str, Remote] = {}
        self._next_number = 1
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="gerrit-standin")
        self._thread.start()

    # -- for tests -----------------------------------------------------------------

    def remote(self, project: str) -> Remote:
        """The project's repository (a bare one, and a work tree to commit in); made with
        a first commit on ``production`` when first asked for."""
        with self._lock:
            if project not in self.remotes:
                remote = Remote(self.root / quote(project, safe=""))
                remote.commit("production", {"README": "the Puppet repository\n"}, "initial")
                self.remotes[project] = remote
            return self.remotes[project]

    def git_url(self, project: str) -> str:
        """Where the project's changes are fetched from (a path git takes as a URL)."""
        return self.remote(project).url

    def add_change(self, project: str = "operations/puppet", branch: str = "production",
                   subject: str = "A change", files: dict[str, str | None] | None = None,
                   number: int | None = None) -> Change:
        """A new change with its first patch set (``files`` committed on ``branch``)."""
        with self._lock:
            number = number if number is not None else self._next_number
            self._next_number = max(self._next_number, number + 1)
            change_id = "I" + secrets.token_hex(20)
            change = Change(number, project, branch, change_id, subject)
            self.changes[number] = change
        self.add_patchset(number, files if files is not None else {"README": "changed\n"})
        return change

    def add_patchset(self, number: int, files: dict[str, str | None]) -> PatchSet:
        """A new patch set of the change: a commit of ``files`` on the change's branch,
        pushed to ``refs/changes/NN/C/P`` (contract 3.5)."""
        with self._lock:
            change = self.changes[number]
            remote = self.remote(change.project)
            patchset = len(change.patchsets) + 1
            ref = f"refs/changes/{number % 100:02d}/{number}/{patchset}"
            remote.git("checkout", "--quiet", "--detach", remote.head(change.branch))
            for path, content in files.items():
                target = remote.work / path
                if content is None:
                    remote.git("rm", "--quiet", "-r", path)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            remote.git("add", "--all")
            remote.git("commit", "--quiet", "--allow-empty", "-m",
                       f"{change.subject}\n\nChange-Id: {change.change_id}\n")
            remote.git("push", "--quiet", "origin", f"HEAD:{ref}")
            made = PatchSet(patchset, remote.git("rev-parse", "HEAD"), ref, time.time())
            change.patchsets.append(made)
            change.messages.append(Message(
                secrets.token_hex(20), dict(OWNER), made.created,
                f"Uploaded patch set {patchset}.", patchset, "autogenerated:gerrit:newPatchSet"))
            return made

    def add_comment(self, number: int, text: str, author: dict[str, Any] | None = None,
                    patchset: int | None = None, created: float | None = None,
                    votes: str = "") -> dict[str, Any]:
        """A review message on the change (on its current patch set unless ``patchset``
        says which), by ``author`` (an AccountInfo; default :data:`REVIEWER`), at
        ``created`` (default now), as Gerrit writes it: ``Patch Set N:`` and the votes
        (``votes``, e.g. ``Code-Review+1``) on the first line, the text after a blank
        line. Returns the ``comment-added`` event stream-events sends for it (3.x shape,
        ``eventCreatedOn`` the message's second)."""
        with self._lock:
            change = self.changes[number]
            shown = change.current if patchset is None else \
                next(p for p in change.patchsets if p.number == patchset)
            who = dict(author if author is not None else REVIEWER)
            when = time.time() if created is None else created
            first = f"Patch Set {shown.number}:" + (f" {votes}" if votes else "")
            message = first + (f"\n\n{text}" if text else "")
            change.messages.append(Message(secrets.token_hex(20), who, when, message,
                                           shown.number))
            event = self._event("comment-added", change, shown, when)
            event["author"] = _stream_account(who)
            event["approvals"] = []
            event["comment"] = message
            return event

    def patchset_event(self, number: int, patchset: int | None = None) -> dict[str, Any]:
        """The ``patchset-created`` event stream-events sent for a patch set (default:
        the current one)."""
        with self._lock:
            change = self.changes[number]
            shown = change.current if patchset is None else \
                next(p for p in change.patchsets if p.number == patchset)
            event = self._event("patchset-created", change, shown, shown.created)
            event["uploader"] = _stream_account(OWNER)
            return event

    def _event(self, kind: str, change: Change, patchset: PatchSet,
               when: float) -> dict[str, Any]:
        """What every stream-events change event of ``change`` carries (3.x, section 1.2)."""
        owner = _stream_account(OWNER)
        return {
            "type": kind, "eventCreatedOn": int(when), "project": change.project,
            "refName": f"refs/heads/{change.branch}", "changeKey": {"id": change.change_id},
            "change": {"project": change.project, "branch": change.branch,
                       "id": change.change_id, "number": change.number,
                       "subject": change.subject, "owner": owner,
                       "url": f"{self.url}/c/{change.project}/+/{change.number}",
                       "commitMessage": f"{change.subject}\n\nChange-Id: {change.change_id}\n",
                       "createdOn": int(change.created), "status": change.status},
            "patchSet": {"number": patchset.number, "revision": patchset.revision,
                         "ref": patchset.ref, "uploader": owner, "author": owner,
                         "createdOn": int(patchset.created), "kind": "REWORK"},
        }

    def set_status(self, number: int, status: str) -> None:
        """``NEW``, ``MERGED`` or ``ABANDONED``."""
        assert status in ("NEW", "MERGED", "ABANDONED"), status
        with self._lock:
            self.changes[number].status = status

    def votes(self, number: int) -> list[tuple[int, dict[str, int]]]:
        """(patch set, labels) of every review with labels on the change, in order."""
        with self._lock:
            return [(review.patchset, review.labels) for review in self.reviews
                    if review.change == number and review.labels]

    def hang(self, seconds: float,
             when: Callable[[str, str], bool] = lambda method, path: True) -> None:
        """Requests for which ``when(method, raw path)`` holds wait ``seconds`` before
        their answer (cut short when the stand-in stops)."""
        self.hangs.append((when, seconds))

    def stop(self) -> None:
        """Release hanging requests, stop serving and join the thread."""
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(JOIN_DEADLINE)

    def __enter__(self) -> "GerritStandIn":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- Gerrit ----------------------------------------------------------------------

    def _authenticated(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user.encode(), self.user.encode()) and \
            secrets.compare_digest(password.encode(), self.password.encode())

    def _find_change(self, identifier: str) -> Change | None:
        """A change by any of the forms of contract 3.2 (``identifier`` still URL-encoded:
        each part is decoded after the split on ``~``)."""
        parts = [unquote(part) for part in identifier.split("~")]
        if len(parts) == 1 and parts[0].isdigit():
            return self.changes.get(int(parts[0]))
        if len(parts) == 1:
            found = [c for c in self.changes.values() if c.change_id == parts[0]]
            return found[0] if len(found) == 1 else None
        if len(parts) == 2 and parts[1].isdigit():
            change = self.changes.get(int(parts[1]))
            return change if change is not None and change.project == parts[0] else None
        if len(parts) == 3:
            branch = parts[1].removeprefix("refs/heads/")
            return next((c for c in self.changes.values() if c.project == parts[0]
                         and c.branch == branch and c.change_id == parts[2]), None)
        return None

    @staticmethod
    def _find_revision(change: Change, identifier: str) -> PatchSet | None:
        if identifier == "current":
            return change.current
        if identifier.isdigit() and len(identifier) < 4:
            return next((p for p in change.patchsets if p.number == int(identifier)), None)
        if _HEX.fullmatch(identifier):
            found = [p for p in change.patchsets if p.revision.startswith(identifier)]
            return found[0] if len(found) == 1 else None
        if identifier.isdigit():
            return next((p for p in change.patchsets if p.number == int(identifier)), None)
        return None

    def _change_info(self, change: Change, options: list[str]) -> dict[str, Any]:
        detailed = "DETAILED_ACCOUNTS" in options

        def account(who: dict[str, Any]) -> dict[str, Any]:
            return dict(who) if detailed else {"_account_id": who["_account_id"]}

        triplet = f"{quote(change.project, safe='')}~{quote(change.branch, safe='')}~" \
                  f"{change.change_id}"
        info: dict[str, Any] = {
            "id": triplet, "project": change.project, "branch": change.branch,
            "change_id": change.change_id, "subject": change.subject,
            "status": change.status, "created": _timestamp(change.created),
            "updated": _timestamp(change.updated), "insertions": 1, "deletions": 0,
            "_number": change.number, "owner": account(OWNER),
        }
        if "MESSAGES" in options:
            info["messages"] = [{
                "id": message.id, "author": account(message.author),
                "date": _timestamp(message.date), "message": message.message,
                "_revision_number": message.revision_number,
                **({"tag": message.tag} if message.tag else {}),
            } for message in change.messages]
        shown = change.patchsets if "ALL_REVISIONS" in options else \
            [change.current] if "CURRENT_REVISION" in options else []
        if shown:
            info["current_revision"] = change.current.revision
            info["revisions"] = {p.revision: {
                "kind": "REWORK", "_number": p.number, "created": _timestamp(p.created),
                "uploader": {"_account_id": 1000001}, "ref": p.ref,
                "fetch": {"anonymous http": {"url": f"{self.url}/{change.project}",
                                             "ref": p.ref}},
            } for p in shown}
        return info

    def _query(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        """``GET /a/changes/?q=...`` (contract 3.3): one ``q`` only, as opslab asks."""
        options = query.get("o", [])
        unknown = [o for o in options if o not in OPTIONS]
        if unknown:
            return 400, f"\"{unknown[0]}\" is not a valid value for \"-o\""
        if len(query.get("q", [])) != 1:
            return 400, "exactly one q= is answered here"
        try:
            limit = int(query.get("n", [str(QUERY_LIMIT)])[0])
            skip = int(query.get("S", ["0"])[0])
            terms = shlex.split(query["q"][0])
        except ValueError as error:
            return 400, f"bad query: {error}"
        matching = list(self.changes.values())
        for term in terms:
            operator, _, value = term.partition(":")
            if operator == "status" and value in ("open", "new"):
                matching = [c for c in matching if c.status == "NEW"]
            elif operator == "status" and value == "closed":
                matching = [c for c in matching if c.status != "NEW"]
            elif operator == "status" and value in ("merged", "abandoned"):
                matching = [c for c in matching if c.status == value.upper()]
            elif operator == "project":
                matching = [c for c in matching if c.project == value]
            elif operator == "change" and value.isdigit():
                matching = [c for c in matching if c.number == int(value)]
            elif operator in ("after", "since"):
                after = _query_time(value)
                if after is None:
                    return 400, f"Unrecognized date value: {value}"
                matching = [c for c in matching if c.updated >= after]
            else:
                return 400, f"unsupported query term {term!r}"
        matching.sort(key=lambda c: (c.updated, c.number), reverse=True)
        page = matching[skip:skip + max(limit, 0)]
        answer = [self._change_info(change, options) for change in page]
        if answer and skip + len(page) < len(matching):
            answer[-1]["_more_changes"] = True
        return 200, answer

    def _review(self, change: Change, patchset: PatchSet,
                body: dict[str, Any]) -> tuple[int, Any]:
        if self.before_review is not None:
            self.before_review(change)
        strict = body.get("strict_labels", True)
        labels = body.get("labels") or {}
        if not isinstance(labels, dict):
            return 400, "labels must be a map"
        kept: dict[str, int] = {}
        for label, value in labels.items():
            if label not in LABELS:
                if strict:
                    return 400, f'label "{label}" is not a configured label'
                continue
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value not in LABELS[label]:
                return 400, f'label "{label}": {value} is not a valid value'
            kept[label] = value
        notify = body.get("notify", "ALL")
        if notify not in NOTIFY:
            return 400, f"notify {notify!r} is not one of {', '.join(NOTIFY)}"
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            return 400, "message must be a string"
        if kept and change.status != "NEW":
            return 409, "change is closed"
        omit = bool(body.get("omit_duplicate_comments", False))
        comments: dict[str, list[dict[str, Any]]] = {}
        for path, entries in (body.get("comments") or {}).items():
            for entry in entries:
                key = (path, entry.get("line"), entry.get("message", ""))
                if omit and key in change.comments:
                    continue
                change.comments.append(key)
                comments.setdefault(path, []).append(entry)
        self.reviews.append(Review(
            change.number, patchset.number, patchset.revision, message, kept,
            body.get("tag"), notify, omit, comments, body))
        return 200, {"labels": kept}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: Any) -> None:
                if isinstance(body, str):  # errors: plain text, no magic prefix (3.1)
                    data = body.encode() + b"\n"
                    kind = "text/plain; charset=UTF-8"
                else:
                    data = MAGIC + json.dumps(body, separators=(",", ":")).encode()
                    kind = "application/json; charset=UTF-8"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="Gerrit Code Review"')
                self.end_headers()
                self.wfile.write(data)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                path = parts.path  # still URL-encoded: %2F stays inside a segment
                authenticated = standin._authenticated(self.headers.get("Authorization"))
                with standin._lock:
                    standin.requests.append((self.command, self.path, authenticated))
                for when, seconds in standin.hangs:
                    if when(self.command, self.path):
                        standin._stopping.wait(seconds)
                with standin._lock:
                    for index, (when, status, text) in enumerate(standin.fail_next):
                        if when(self.command, self.path):
                            del standin.fail_next[index]
                            return self._send(status, text)
                if not path.startswith("/a/"):
                    # Anonymous: the project is not readable without an account.
                    return self._send(403 if self.command == "POST" else 404,
                                      "Authentication required" if self.command == "POST"
                                      else "Not found")
                if not authenticated:
                    return self._send(401, "Unauthorized")
                segments = path[len("/a/"):].rstrip("/").split("/")
                with standin._lock:
                    status, body = self._route(segments, parse_qs(parts.query), raw)
                self._send(status, body)

            def _route(self, segments: list[str], query: dict[str, list[str]],
                       raw: bytes) -> tuple[int, Any]:
                if segments == ["changes"] and self.command == "GET":
                    return standin._query(query)
                if len(segments) < 2 or segments[0] != "changes":
                    return 404, "Not found"
                change = standin._find_change(segments[1])
                if change is None:
                    return 404, f"Not found: {unquote(segments[1])}"
                if len(segments) == 2 and self.command == "GET":
                    options = query.get("o", [])
                    unknown = [o for o in options if o not in OPTIONS]
                    if unknown:
                        return 400, f"\"{unknown[0]}\" is not a valid value for \"-o\""
                    return 200, standin._change_info(change, options)
                if len(segments) == 5 and segments[2] == "revisions" \
                        and segments[4] == "review" and self.command == "POST":
                    patchset = standin._find_revision(change, unquote(segments[3]))
                    if patchset is None:
                        return 404, f"Not found: {unquote(segments[3])}"
                    if not (self.headers.get("Content-Type") or "").startswith(
                            "application/json"):
                        return 415, "Unsupported Media Type"
                    try:
                        body = json.loads(raw or b"{}")
                    except ValueError:
                        return 400, "Invalid JSON"
                    if not isinstance(body, dict):
                        return 400, "Expected a JSON object"
                    return standin._review(change, patchset, body)
                return 405 if len(segments) == 2 else 404, \
                    "Method Not Allowed" if len(segments) == 2 else "Not found"

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
