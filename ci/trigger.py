"""What starts a CI run, and what cancels one.

A run starts from a ``comment-added`` event (:func:`Trigger.decide`) when
all of these hold, checked in this order so that the answer names the first
that failed:

- the change is in one of ``ci.projects`` and its target branch matches one
  of ``ci.branches`` (shell patterns on the short name);
- the change is open: a vote on a merged or abandoned one would be refused
  (409 ``change is closed``, contract section 0, item 13);
- the comment is not the CI account's own (``ci.account``; the Gerrit
  Trigger plugin's default, contract sections 4.2 and 8, complaint 10);
- one line of the comment is a trigger phrase (:func:`matching_phrase`);
- the commenter may start runs: a callable decides from their Gerrit
  username, which is their directory uid. The default,
  :class:`ProjectMembers`, asks the directory whether they are a member of
  ``ci.trigger_project`` (``operations``) with an account that is not
  locked.

A run is identified by :class:`RunKey`: Gerrit project, change, patch set
and the phrase that triggered it; while a run of one key is queued or
running, another comment asking for the same does not start a second
(contract section 8, complaint 9). :func:`cancellation` says which runs an
event makes pointless: a newer patch set of the change, or the change
abandoned or merged (section 4.3; section 8, complaints 6 and 7).
"""

import fnmatch
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opslab.names import InvalidName, validate_user_name

from .events import (
    ChangeAbandoned,
    ChangeEvent,
    ChangeMerged,
    CommentAdded,
    Event,
    PatchsetCreated,
)

if TYPE_CHECKING:
    from opslab.config import CiSettings, Config
    from opslab.directory import Directory

# Who may start runs: the commenter's Gerrit username in, yes or no out. A policy
# that cannot answer now (the directory is down) raises PolicyUnavailable.
Policy = Callable[[str], bool]

# The first line Gerrit writes into a review message: "Patch Set 3:" and, on the
# same line, the votes given with it ("Patch Set 3: Code-Review+1 Verified-1",
# "-Code-Review" for a vote removed). 2.x and 3.x alike.
_PREFIX = re.compile(r"\A[^\S\n]*Patch Set [0-9]+:[^\n]*(?:\n|\Z)")
# Lines that are Gerrit's summary rather than the reviewer's words: votes on a line
# of their own, and "(2 comments)" for the inline comments published with it.
_VOTE = r"(?:[A-Za-z][A-Za-z0-9_-]*[+-][0-9]+|-[A-Za-z][A-Za-z0-9_-]*)"
_SUMMARY_LINE = re.compile(
    rf"^[^\S\n]*(?:{_VOTE}(?:[^\S\n]+{_VOTE})*|\([0-9]+ (?:inline )?comments?\))[^\S\n]*$",
    re.MULTILINE)


class PolicyUnavailable(Exception):
    """The commenter policy cannot answer now; the comment should be decided again later."""


@dataclass(frozen=True)
class RunKey:
    """What identifies a run: change, patch set and trigger, in a Gerrit project."""

    project: str
    change: int
    patchset: int
    trigger: str  # the trigger phrase, as configured

    def __str__(self) -> str:
        return f"{self.project} {self.change},{self.patchset} ({self.trigger})"


@dataclass(frozen=True)
class Decision:
    """Whether an event starts a run, and why (or why not).

    ``undecided``: the commenter policy could not answer (the directory is
    down); the event may be decided again later, nothing was refused.
    """

    event_key: str
    reason: str
    run: RunKey | None = None
    requested_by: str | None = None
    undecided: bool = False

    @property
    def start(self) -> bool:
        return self.run is not None


@dataclass(frozen=True)
class Cancellation:
    """The runs an event makes pointless: those of the change in ``project``, of every
    patch set (``before_patchset`` None) or of those below ``before_patchset``."""

    project: str
    change: int
    before_patchset: int | None
    reason: str

    def applies_to(self, run: RunKey) -> bool:
        return (run.project == self.project and run.change == self.change
                and (self.before_patchset is None or run.patchset < self.before_patchset))


def review_text(comment: str) -> str:
    """A review message without what Gerrit adds: the ``Patch Set N:`` line (with the
    votes on it), lines of votes and the ``(N comments)`` line."""
    text = comment.replace("\r\n", "\n").replace("\r", "\n")
    text = _PREFIX.sub("", text, count=1)
    return _SUMMARY_LINE.sub("", text)


def phrase_pattern(phrase: str) -> "re.Pattern[str]":
    """A line that is ``phrase``: any case, any blanks around and between its words."""
    words = phrase.split()
    if not words:
        raise ValueError("an empty trigger phrase")
    body = r"[^\S\n]+".join(re.escape(word) for word in words)
    return re.compile(rf"^[^\S\n]*{body}[^\S\n]*$", re.IGNORECASE | re.MULTILINE)


def matching_phrase(comment: str, phrases: tuple[str, ...]) -> str | None:
    """The first of ``phrases`` that a line of the review message is, or None.

    The contract (section 4.2 and section 8, complaint 15) matches like the
    Gerrit Trigger plugin's ``(?i)^\\s*recheck\\s*$`` with MULTILINE: a whole
    line, case ignored, blanks around it allowed; Gerrit's own ``Patch Set N:``
    line and vote summaries are removed first (:func:`review_text`). So
    ``recheck`` inside a word (``prerecheck``, ``rechecked``), in a sentence
    (``please recheck``) or quoted (``> recheck``, a reply) starts nothing.
    """
    text = review_text(comment)
    for phrase in phrases:
        if phrase_pattern(phrase).search(text):
            return phrase
    return None


class Trigger:
    """Decides which events start a run (see the module's doc)."""

    def __init__(self, settings: "CiSettings", may_trigger: Policy) -> None:
        if not settings.account:
            raise ValueError("ci.account is not set: name the CI's own Gerrit account, "
                             "whose comments never start a run")
        if not settings.trigger_phrases:
            raise ValueError("ci.trigger_phrases is empty: no comment could start a run")
        self.settings = settings
        self.may_trigger = may_trigger
        self._patterns = [(phrase, phrase_pattern(phrase)) for phrase in settings.trigger_phrases]

    @classmethod
    def from_config(cls, config: "Config") -> "Trigger":
        """The trigger of ``config``, with the directory's :class:`ProjectMembers` policy."""
        return cls(config.ci, ProjectMembers(config, config.ci.trigger_project))

    def decide(self, event: Event) -> Decision:
        """Whether ``event`` starts a run; never for anything but a comment."""
        key = event.key
        if not isinstance(event, CommentAdded):
            return Decision(key, f"a {event.type} event is not a comment")
        change = event.change
        where = f"change {change.number} of {change.project}"
        if change.project not in self.settings.projects:
            return Decision(key, f"{change.project} is not one of ci.projects")
        branch = event.branch
        if branch is None:
            return Decision(key, f"{where} names no target branch")
        if not any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.settings.branches):
            return Decision(key, f"branch {branch} of {where} matches no ci.branches pattern")
        if change.closed:
            return Decision(key, f"{where} is {change.status!s}: a closed change gets no vote")
        author = event.account
        username = author.username if author else None
        if not username:
            who = author.describe() if author else "no account"
            return Decision(key, f"the comment's author ({who}) has no Gerrit username")
        if username.casefold() == str(self.settings.account).casefold():
            return Decision(key, f"the comment is the CI account's own ({username})")
        text = review_text(event.comment)
        phrase = next((phrase for phrase, pattern in self._patterns if pattern.search(text)),
                      None)
        if phrase is None:
            return Decision(key, "no line of the comment is a trigger phrase")
        try:
            allowed = self.may_trigger(username)
        except PolicyUnavailable as error:
            return Decision(key, f"cannot tell whether {username} may start runs: {error}",
                            requested_by=username, undecided=True)
        if not allowed:
            policy = getattr(self.may_trigger, "description", "the commenter policy")
            return Decision(key, f"{username} may not start runs ({policy})",
                            requested_by=username)
        run = RunKey(change.project, change.number, event.patchset.number, phrase)
        return Decision(key, f"{username} asked for {phrase!r}", run, username)


def cancellation(event: Event) -> Cancellation | None:
    """The runs ``event`` cancels, or None.

    A new patch set cancels the runs of the change's older patch sets only (a
    replayed or late event of an older patch set cancels nothing newer, the
    Gerrit Trigger plugin's default, contract section 4.3); an abandoned or
    merged change cancels every run of the change: nothing will be voted on.
    """
    if not isinstance(event, ChangeEvent):
        return None
    change = event.change
    if isinstance(event, PatchsetCreated):
        return Cancellation(change.project, change.number, event.patchset.number,
                            f"patch set {event.patchset.number} of change {change.number} "
                            "was uploaded")
    if isinstance(event, ChangeAbandoned):
        return Cancellation(change.project, change.number, None,
                            f"change {change.number} was abandoned")
    if isinstance(event, ChangeMerged):
        return Cancellation(change.project, change.number, None,
                            f"change {change.number} was merged")
    return None


class ProjectMembers:
    """The default policy: a person may start runs if they are a member of ``project``
    in the directory, and their account is a person's and not locked
    (``opslab.accounts``, as for logins, sudo and the API).

    One directory connection, kept and used by one caller at a time. The
    directory down raises :class:`PolicyUnavailable`; a directory that answers
    unusably (bad credentials, no such base) raises its own error.
    """

    def __init__(self, config: "Config", project: str) -> None:
        self.config = config
        self.project = project
        self.description = f"not a member of {project}, or an account that may not be used"
        self._directory: Directory | None = None
        self._lock = threading.Lock()

    def __call__(self, username: str) -> bool:
        from ldap.dn import escape_dn_chars

        from opslab import accounts
        from opslab.directory import Directory, DirectoryUnavailable, Search, fill_filter

        try:
            validate_user_name(username)
        except InvalidName:
            return False
        config = self.config
        person_dn = f"uid={escape_dn_chars(username)},{config.people_base_dn}"
        searches = [
            Search(person_dn, "(objectClass=*)", list(accounts.ATTRIBUTES), scope="base"),
            Search(config.projects_base_dn,
                   f"(&(objectClass=groupOfNames){fill_filter('(cn=%s)', self.project)}"
                   f"{fill_filter('(member=%s)', person_dn)})", ["cn"], optional_base=True),
        ]
        with self._lock:
            if self._directory is None:
                self._directory = Directory(config.ldap)
            self._directory.begin_task()
            try:
                person, membership = self._directory.search(searches)
            except DirectoryUnavailable as error:
                raise PolicyUnavailable(f"the directory did not answer: {error}") from None
        if not person or accounts.refusal(username, person[0], config.accounts):
            return False
        return bool(membership)

    def close(self) -> None:
        with self._lock:
            if self._directory is not None:
                self._directory.close()
                self._directory = None
