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

State a test sets: :meth:`GerritStandIn.add_change`, :meth:`add_patchset` (a commit on
the change's branch, pushed to its ``refs/changes`` ref), :meth:`set_status`; and reads:
:attr:`reviews` (every review recorded, in order), :meth:`votes`, :attr:`requests`.
:meth:`hang` makes matching requests wait before their answer; :attr:`fail_next` answers
the next matching requests with a status of the test's choosing; :attr:`before_review`
runs just before a review is judged (to close the change in the middle of a vote).
"""

import base64
import binascii
import json
import re
import secrets
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
_HEX = re.compile(r"[0-9a-f]{4,40}")


def _timestamp(seconds: float) -> str:
    """Gerrit's timestamps: ``2012-07-17 07:18:30.854000000``, UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S.000000000", time.gmtime(seconds))


@dataclass
class PatchSet:
    number: int
    revision: str
    ref: str
    created: float


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

    @property
    def current(self) -> PatchSet:
        return self.patchsets[-1]


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
            return made

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
        triplet = f"{quote(change.project, safe='')}~{quote(change.branch, safe='')}~" \
                  f"{change.change_id}"
        info: dict[str, Any] = {
            "id": triplet, "project": change.project, "branch": change.branch,
            "change_id": change.change_id, "subject": change.subject,
            "status": change.status, "created": _timestamp(change.created),
            "updated": _timestamp(change.current.created), "insertions": 1, "deletions": 0,
            "_number": change.number,
            "owner": {"_account_id": 1000001, "name": "Dev", "email": "dev@example.org",
                      "username": "dev"},
        }
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
