"""Jenkins build parameters, exactly as the Gerrit Trigger plugin passes them.

opslab starts Jenkins jobs with the plugin's ``GERRIT_*`` parameters, names
and encodings (contract ``gerrit-jenkins-openstack.md``, section 4.1), so a
job written for the plugin runs unchanged, and a site that already uses the
plugin can point it at opslab's job instead. :func:`build_parameters` makes
them from an event; :func:`read_parameters` reads them back inside the job
(``opslab ci run``), with an error naming each missing or bad one.

The encodings are the plugin's defaults for a job set up through its
constructor (:class:`Modes`): the comment text and the commit message are
base64 of their UTF-8 bytes (standard alphabet, padded); the subject and the
``"Name" <email>`` parameters are plain; and every value has each ``"``
written ``\\"`` (``escapeQuotes``). A parameter whose source is missing is
passed empty, as the plugin does, except the commit message, which is left
out, and the ``NONE`` mode, which leaves a parameter out.
"""

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .events import (
    Account,
    ChangeAbandoned,
    ChangeEvent,
    ChangeMerged,
    CommentAdded,
    Event,
    RefUpdated,
    change_ref,
)

Mode = Literal["PLAIN", "BASE64", "NONE"]
_MODES = ("PLAIN", "BASE64", "NONE")
_REVISION = re.compile(r"[0-9a-f]{40}")
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class Modes:
    """How each encoded parameter is passed (the plugin's per-job "parameter modes")."""

    name_and_email: Mode = "PLAIN"
    commit_message: Mode = "BASE64"
    change_subject: Mode = "PLAIN"
    comment_text: Mode = "BASE64"
    escape_quotes: bool = True

    def __post_init__(self) -> None:
        for name in ("name_and_email", "commit_message", "change_subject", "comment_text"):
            if getattr(self, name) not in _MODES:
                raise ValueError(f"{name} mode must be one of {', '.join(_MODES)}")


@dataclass(frozen=True)
class GerritServer:
    """The Gerrit server an event came from: ``GERRIT_NAME``, ``GERRIT_HOST``,
    ``GERRIT_PORT``, ``GERRIT_SCHEME``, ``GERRIT_VERSION``, and the front-end URL
    ``GERRIT_CHANGE_URL`` falls back to when an event carries no ``change.url``."""

    name: str
    host: str
    port: int = 29418
    scheme: str = "ssh"
    version: str = ""
    front_end_url: str = ""


class ParameterError(ValueError):
    """A GERRIT_* parameter the job needs is missing or unusable."""


def encode(text: str, mode: Mode) -> str | None:
    """``text`` in ``mode``: as is, base64 of its UTF-8 (padded), or None (left out)."""
    if mode == "NONE":
        return None
    if mode == "BASE64":
        # A lone surrogate (JSON can carry one) becomes "?", as Java's getBytes("UTF-8").
        return base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")
    return text


def decode(name: str, value: str, mode: Mode) -> str:
    """The text a ``mode`` parameter ``name`` carries; ParameterError if it is not."""
    if mode != "BASE64":
        return value
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ParameterError(f"{name} is not base64 (the plugin's default encoding for it): "
                             f"{value[:60]!r}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParameterError(f"{name} is base64, but not of UTF-8 text") from None


def name_and_email(account: Account | None) -> str:
    """``"Name" <email>``, or empty when either part is missing (the plugin's rule)."""
    if account is None or not account.name or not account.email:
        return ""
    return f'"{account.name}" <{account.email}>'


def event_hash(event: Event) -> str:
    """A signed 32-bit number, as Java's hashCode prints, from the event's key: it
    makes each event's parameters differ, so Jenkins never merges two queued builds."""
    number = int.from_bytes(hashlib.sha256(event.key.encode("utf-8")).digest()[:4], "big")
    return str(number - 2**32 if number >= 2**31 else number)


def build_parameters(event: Event, server: GerritServer | None = None,
                     modes: Modes = Modes()) -> dict[str, str]:
    """The GERRIT_* parameters of ``event``, as the plugin would pass them."""
    values: dict[str, str | None] = {
        "GERRIT_EVENT_TYPE": event.type,
        "GERRIT_EVENT_HASH": event_hash(event),
    }

    def account(prefix: str, who: Account | None) -> None:
        values[prefix] = encode(name_and_email(who), modes.name_and_email)
        values[f"{prefix}_NAME"] = (who.name if who else None) or ""
        values[f"{prefix}_EMAIL"] = (who.email if who else None) or ""
        values[f"{prefix}_USERNAME"] = (who.username if who else None) or ""

    if isinstance(event, ChangeEvent):
        change = event.change
        values.update({
            "GERRIT_BRANCH": event.branch or "",
            "GERRIT_TOPIC": change.topic or "",
            "GERRIT_CHANGE_NUMBER": str(change.number),
            "GERRIT_CHANGE_ID": change.id or "",
            "GERRIT_PROJECT": change.project,
            "GERRIT_HASHTAGS": ",".join(change.hashtags),
            "GERRIT_CHANGE_WIP_STATE": "true" if change.wip else "false",
            "GERRIT_CHANGE_PRIVATE_STATE": "true" if change.private else "false",
            "GERRIT_CHANGE_SUBJECT": encode(change.subject or "", modes.change_subject),
            "GERRIT_CHANGE_URL": change.url or (
                f"{server.front_end_url}{change.number}"
                if server is not None and server.front_end_url else ""),
        })
        if change.commit_message is not None:
            values["GERRIT_CHANGE_COMMIT_MESSAGE"] = encode(change.commit_message,
                                                            modes.commit_message)
        if event.patchset is not None:
            values["GERRIT_PATCHSET_NUMBER"] = str(event.patchset.number)
            values["GERRIT_PATCHSET_REVISION"] = event.patchset.revision or ""
            values["GERRIT_REFSPEC"] = event.patchset.refspec(change.number)
        account("GERRIT_CHANGE_OWNER", change.owner)
        uploader = event.patchset.uploader if event.patchset is not None else None
        account("GERRIT_PATCHSET_UPLOADER", uploader or event.account)
        if isinstance(event, ChangeAbandoned):
            account("GERRIT_CHANGE_ABANDONER", event.account)
        if isinstance(event, ChangeMerged) and event.new_rev:
            values["GERRIT_NEWREV"] = event.new_rev
        if isinstance(event, CommentAdded):
            values["GERRIT_EVENT_COMMENT_TEXT"] = encode(event.comment, modes.comment_text)
            updated = {approval.type: {"value": approval.value, "oldValue": approval.old_value}
                       for approval in event.approvals if approval.old_value is not None}
            values["GERRIT_EVENT_UPDATED_APPROVALS"] = json.dumps(
                updated, separators=(",", ":"), ensure_ascii=False)
    elif isinstance(event, RefUpdated):
        update = event.ref_update
        values.update({
            "GERRIT_REFNAME": update.ref_name, "GERRIT_PROJECT": update.project,
            "GERRIT_OLDREV": update.old_rev or "", "GERRIT_NEWREV": update.new_rev or "",
        })
    if event.account is not None:
        account("GERRIT_EVENT_ACCOUNT", event.account)
    if server is not None:
        values.update({
            "GERRIT_NAME": server.name, "GERRIT_HOST": server.host,
            "GERRIT_PORT": str(server.port), "GERRIT_SCHEME": server.scheme,
            "GERRIT_VERSION": server.version,
        })
    return {name: _escaped(value, modes) for name, value in values.items() if value is not None}


def _escaped(value: str, modes: Modes) -> str:
    return value.replace('"', '\\"') if modes.escape_quotes else value


def _unescaped(value: str, modes: Modes) -> str:
    # The plugin put a backslash before every quote, and only there: taking each
    # backslash-quote back to a quote undoes it exactly.
    return value.replace('\\"', '"') if modes.escape_quotes else value


@dataclass(frozen=True)
class JobParameters:
    """What a job started for a patch set reads from its GERRIT_* parameters."""

    event_type: str
    project: str
    branch: str
    change: int
    patchset: int
    revision: str
    refspec: str
    change_id: str
    change_url: str
    subject: str
    commit_message: str | None  # None: not passed (mode NONE, or no message)
    comment_text: str | None  # a comment-added event's text, None for other events
    event_account: str  # the username of whoever caused the event ("" if unknown)
    event_hash: str
    gerrit_name: str
    gerrit_host: str
    # The votes changed by the comment: label -> (value, old value).
    updated_approvals: Mapping[str, tuple[str, str]]


def read_parameters(environ: Mapping[str, str], modes: Modes = Modes()) -> JobParameters:
    """The parameters of a build started for a patch set, checked; ParameterError naming
    every missing or unusable one. Jenkins passes an unset parameter as empty, so an
    empty value counts as missing."""
    problems: list[str] = []

    def text(name: str, required: bool = False) -> str:
        value = _unescaped(environ.get(name, ""), modes)
        if required and not value:
            problems.append(f"{name} is missing")
        return value

    def number(name: str) -> int:
        value = text(name, required=True)
        if value and not _NUMBER.fullmatch(value):
            problems.append(f"{name} {value[:40]!r} is not a positive number")
            return 0
        return int(value) if value else 0

    def encoded(name: str, mode: Mode) -> str | None:
        if mode == "NONE" or name not in environ:
            return None
        try:
            return decode(name, text(name), mode)
        except ParameterError as error:
            problems.append(str(error))
            return None

    event_type = text("GERRIT_EVENT_TYPE", required=True)
    project = text("GERRIT_PROJECT", required=True)
    branch = text("GERRIT_BRANCH", required=True)
    change = number("GERRIT_CHANGE_NUMBER")
    patchset = number("GERRIT_PATCHSET_NUMBER")
    revision = text("GERRIT_PATCHSET_REVISION", required=True)
    if revision and not _REVISION.fullmatch(revision):
        problems.append(f"GERRIT_PATCHSET_REVISION {revision[:60]!r} is not a 40-hex commit")
    refspec = text("GERRIT_REFSPEC") or (change_ref(change, patchset)
                                          if change and patchset else "")
    if refspec.startswith("refs/changes/") and change and patchset \
            and refspec != change_ref(change, patchset):
        problems.append(f"GERRIT_REFSPEC {refspec[:80]!r} is not change {change}, "
                        f"patch set {patchset} ({change_ref(change, patchset)})")
    elif refspec and (not refspec.startswith("refs/") or ".." in refspec or any(
            char.isspace() or char in ":^~?*[\\" for char in refspec)):
        problems.append(f"GERRIT_REFSPEC {refspec[:80]!r} is not a ref")
    comment = encoded("GERRIT_EVENT_COMMENT_TEXT", modes.comment_text)
    if event_type == "comment-added" and comment is None and modes.comment_text != "NONE" \
            and "GERRIT_EVENT_COMMENT_TEXT" not in environ:
        problems.append("GERRIT_EVENT_COMMENT_TEXT is missing (a comment-added event)")
    subject = encoded("GERRIT_CHANGE_SUBJECT", modes.change_subject) or ""
    commit_message = encoded("GERRIT_CHANGE_COMMIT_MESSAGE", modes.commit_message)
    approvals = _approvals(text("GERRIT_EVENT_UPDATED_APPROVALS"), problems)
    if problems:
        raise ParameterError("; ".join(problems))
    return JobParameters(
        event_type=event_type, project=project, branch=branch, change=change,
        patchset=patchset, revision=revision, refspec=refspec,
        change_id=text("GERRIT_CHANGE_ID"), change_url=text("GERRIT_CHANGE_URL"),
        subject=subject, commit_message=commit_message,
        comment_text=comment if event_type == "comment-added" else None,
        event_account=text("GERRIT_EVENT_ACCOUNT_USERNAME"),
        event_hash=text("GERRIT_EVENT_HASH"), gerrit_name=text("GERRIT_NAME"),
        gerrit_host=text("GERRIT_HOST"), updated_approvals=approvals)


def _approvals(value: str, problems: list[str]) -> dict[str, tuple[str, str]]:
    """``GERRIT_EVENT_UPDATED_APPROVALS``: ``{"Label":{"value":"1","oldValue":"0"}}``."""
    if not value:
        return {}
    try:
        document = json.loads(value)
        if not isinstance(document, dict):
            raise ValueError
        votes = {str(label): (vote["value"], vote["oldValue"])
                 for label, vote in document.items()}
        if not all(isinstance(part, str) for vote in votes.values() for part in vote):
            raise ValueError
        return votes
    except (ValueError, TypeError, KeyError):
        problems.append(f"GERRIT_EVENT_UPDATED_APPROVALS is not "
                        f'{{"Label":{{"value":"1","oldValue":"0"}}}}: {value[:80]!r}')
        return {}
