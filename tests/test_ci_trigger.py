"""What starts a run and what cancels one (opslab.ci.trigger), with the directory's real
membership for the default policy."""

from typing import Any

import pytest

from opslab.ci.events import Event, Malformed, parse_event
from opslab.ci.trigger import (
    PolicyUnavailable,
    ProjectMembers,
    RunKey,
    Trigger,
    cancellation,
    matching_phrase,
    review_text,
)
from opslab.config import CiSettings, parse
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE
from tests.test_ci_events import REV_ACCOUNT, change, comment_event, envelope, patchset

PHRASES = ("check infra", "recheck")
SETTINGS = CiSettings(projects=("demo",), branches=("master", "stable/*"), account="jenkins")


def allow_all(username: str) -> bool:
    return True


def event_of(raw: dict[str, Any]) -> Event:
    event = parse_event(raw)
    assert not isinstance(event, Malformed), event
    return event


def decide(text: str = "Patch Set 1:\n\nrecheck", settings: CiSettings = SETTINGS,
           policy: Any = allow_all, version: int = 3, **extra: Any) -> Any:
    return Trigger(settings, policy).decide(event_of(comment_event(version, text, **extra)))


# -- the phrase ----------------------------------------------------------------------------


@pytest.mark.parametrize(("comment", "expected"), [
    ("Patch Set 1:\n\nrecheck", "recheck"),
    ("recheck", "recheck"),  # no prefix at all
    ("Patch Set 2: Code-Review+1\n\nrecheck", "recheck"),
    ("Patch Set 2: Code-Review+2 Verified-1 -Workflow\n\n  RECHECK  \n", "recheck"),
    ("Patch Set 3:\n\nCheck   Infra", "check infra"),
    ("Patch Set 3:\n\nlooks fine\ncheck infra\nthanks", "check infra"),
    ("Patch Set 3:\r\n\r\nrecheck\r\n", "recheck"),  # CRLF from a browser
    ("Patch Set 3:\n\n(1 comment)\n\nrecheck", "recheck"),
    ("Patch Set 3:\n\nCode-Review+1\nrecheck", "recheck"),
    ("Patch Set 1:\n\n\trecheck\t", "recheck"),
    ("Patch Set 1:\n\nrecheck\u00a0", "recheck"),  # a non-breaking space is a blank
    # Not a trigger:
    ("Patch Set 1:\n\nprerecheck", None),
    ("Patch Set 1:\n\nrechecking", None),
    ("Patch Set 1:\n\nrecheck please", None),
    ("Patch Set 1:\n\nplease recheck", None),
    ("Patch Set 1:\n\n> recheck\n\nNo, this is broken.", None),  # a quoted reply
    ("Patch Set 1:\n\nre check", None),
    ("Patch Set 1:\n\ncheckinfra", None),
    ("Patch Set 1:\n\ncheck\ninfra", None),  # one phrase, one line
    ("Patch Set 1: recheck", None),  # Gerrit's own line is not the reviewer's words
    ("Patch Set 1: Code-Review-1\n\nThis needs a recheck of the design.", None),
    ("", None),
])
def test_phrase_matching(comment: str, expected: str | None) -> None:
    assert matching_phrase(comment, PHRASES) == expected


def test_review_text_removes_what_gerrit_adds() -> None:
    assert review_text("Patch Set 4: Code-Review+1 Verified+1\n\n(2 comments)\n\nok") \
        .strip() == "ok"
    # Only the first line is Gerrit's: a later "Patch Set" line is the reviewer's.
    assert "Patch Set 9:" in review_text("Patch Set 1:\n\nPatch Set 9: hmm")


def test_regex_characters_in_a_phrase_are_literal() -> None:
    assert matching_phrase("Patch Set 1:\n\nrun (ci)", ("run (ci)",)) == "run (ci)"
    assert matching_phrase("Patch Set 1:\n\nrun ci", ("run (ci)",)) is None
    assert matching_phrase("Patch Set 1:\n\nrecheck", ("rec.eck",)) is None


# -- the decision --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_a_recheck_starts_a_run(version: int) -> None:
    decision = decide(version=version)
    assert decision.start, decision.reason
    assert decision.run == RunKey("demo", 42, 1, "recheck")
    assert decision.requested_by == "rev"
    assert "comment-added demo 42 1" in decision.event_key


def test_the_ci_accounts_own_comment_starts_nothing() -> None:
    for name in ("jenkins", "Jenkins"):
        decision = decide("Patch Set 1: Verified-1\n\nrecheck",
                          author={"name": "CI", "username": name})
        assert not decision.start
        assert "CI account's own" in decision.reason


def test_a_disallowed_commenter_starts_nothing() -> None:
    asked: list[str] = []

    def only_olga(username: str) -> bool:
        asked.append(username)
        return username == "olga"

    decision = decide(policy=only_olga)
    assert not decision.start
    assert decision.requested_by == "rev"
    assert "rev may not start runs" in decision.reason
    assert decide(policy=only_olga, author={"username": "olga"}).start
    assert asked == ["rev", "olga"]
    # The policy is not asked about comments that ask for nothing.
    decide("Patch Set 1:\n\nlooks good", policy=only_olga)
    assert asked == ["rev", "olga"]


def test_a_commenter_without_username_starts_nothing() -> None:
    decision = decide(author={"name": "No Login", "email": "x@example.org"})
    assert not decision.start
    assert "has no Gerrit username" in decision.reason
    raw = comment_event()
    del raw["author"]
    decision = Trigger(SETTINGS, allow_all).decide(event_of(raw))
    assert not decision.start
    assert "no account" in decision.reason


def test_another_project_or_branch_starts_nothing() -> None:
    raw = comment_event()
    raw["change"]["project"] = "other"
    decision = Trigger(SETTINGS, allow_all).decide(event_of(raw))
    assert not decision.start
    assert "other is not one of ci.projects" in decision.reason
    for branch, starts in (("stable/2024", True), ("feature", False), ("masterpiece", False)):
        raw = comment_event()
        raw["change"]["branch"] = branch
        decision = Trigger(SETTINGS, allow_all).decide(event_of(raw))
        assert decision.start is starts, (branch, decision.reason)
    assert not Trigger(CiSettings(account="jenkins"), allow_all).decide(
        event_of(comment_event())).start  # no ci.projects: nothing starts


def test_a_closed_change_starts_nothing() -> None:
    for status in ("MERGED", "ABANDONED"):
        raw = comment_event()
        raw["change"]["status"] = status
        decision = Trigger(SETTINGS, allow_all).decide(event_of(raw))
        assert not decision.start
        assert status in decision.reason


def test_only_comments_start_runs() -> None:
    created = event_of(envelope("patchset-created", change=change(), patchSet=patchset(),
                                uploader=REV_ACCOUNT))
    decision = Trigger(SETTINGS, allow_all).decide(created)
    assert not decision.start
    assert "not a comment" in decision.reason


def test_a_policy_that_cannot_answer_leaves_the_comment_undecided() -> None:
    def down(username: str) -> bool:
        raise PolicyUnavailable("the directory did not answer")

    decision = decide(policy=down)
    assert not decision.start
    assert decision.undecided
    assert "cannot tell whether rev may start runs" in decision.reason


def test_a_trigger_needs_the_ci_account() -> None:
    with pytest.raises(ValueError, match=r"ci\.account is not set"):
        Trigger(CiSettings(projects=("demo",)), allow_all)


def test_configured_phrases() -> None:
    settings = SETTINGS._replace(trigger_phrases=("test this please",))
    assert not decide(settings=settings).start
    assert decide("Patch Set 1:\n\nTest  this   please", settings=settings).run == \
        RunKey("demo", 42, 1, "test this please")


# -- cancelling ----------------------------------------------------------------------------


def test_new_patch_set_cancels_older_runs_of_that_change_only() -> None:
    event = event_of(envelope("patchset-created", change=change(), patchSet=patchset(number=3),
                              uploader=REV_ACCOUNT))
    cancel = cancellation(event)
    assert cancel is not None
    assert "patch set 3" in cancel.reason
    assert cancel.applies_to(RunKey("demo", 42, 2, "recheck"))
    assert cancel.applies_to(RunKey("demo", 42, 1, "check infra"))
    assert not cancel.applies_to(RunKey("demo", 42, 3, "recheck"))
    assert not cancel.applies_to(RunKey("demo", 42, 4, "recheck"))  # a late, older event
    assert not cancel.applies_to(RunKey("demo", 43, 1, "recheck"))  # another change
    assert not cancel.applies_to(RunKey("other", 42, 1, "recheck"))  # another project


@pytest.mark.parametrize(("kind", "account"), [("change-abandoned", "abandoner"),
                                               ("change-merged", "submitter")])
def test_abandoned_or_merged_cancels_every_run_of_the_change(kind: str, account: str) -> None:
    event = event_of(envelope(kind, 2, change=change(2), patchSet=patchset(2),
                              **{account: REV_ACCOUNT}))
    cancel = cancellation(event)
    assert cancel is not None
    assert cancel.applies_to(RunKey("demo", 42, 1, "recheck"))
    assert cancel.applies_to(RunKey("demo", 42, 99, "recheck"))
    assert not cancel.applies_to(RunKey("demo", 41, 1, "recheck"))


def test_comments_and_other_events_cancel_nothing() -> None:
    assert cancellation(event_of(comment_event())) is None
    assert cancellation(event_of({"type": "dropped-output"})) is None
    assert cancellation(event_of(envelope("ref-updated", refUpdate={
        "project": "demo", "refName": "refs/heads/master", "oldRev": "a" * 40,
        "newRev": "b" * 40}))) is None


# -- the default policy: membership of operations in the real directory ------------------


def test_members_of_operations_may_trigger(slapd: ThrowawaySlapd, people: None) -> None:
    config = parse(f"ldap: {{uri: '{slapd.ldapi_uri}', base: '{BASE}', timeout: 2, "
                   "deadline: 5}\nci: {projects: [demo], account: jenkins}\n", "test")
    policy = ProjectMembers(config, config.ci.trigger_project)
    try:
        assert policy("olga")  # member of operations
        assert not policy("carol")  # member of web only
        assert not policy("dave")  # member of nothing
        assert not policy("nobody")  # no entry
        assert not policy("root")  # a system account, whatever the directory says
        assert not policy("olga)(uid=*")  # not a login name: never reaches a filter
        trigger = Trigger(config.ci, policy)
        assert trigger.decide(event_of(comment_event(author={"username": "olga"}))).start
        refused = trigger.decide(event_of(comment_event(author={"username": "carol"})))
        assert not refused.start
        assert "not a member of operations" in refused.reason
    finally:
        policy.close()


def test_the_directory_down_is_undecided_not_refused(private_slapd: ThrowawaySlapd) -> None:
    config = parse(f"ldap: {{uri: '{private_slapd.ldapi_uri}', base: '{BASE}', "
                   "timeout: 1, deadline: 2}\nci: {projects: [demo], account: jenkins}\n", "t")
    policy = ProjectMembers(config, "operations")
    private_slapd.stop()
    try:
        with pytest.raises(PolicyUnavailable, match="did not answer"):
            policy("olga")
        decision = Trigger(config.ci, policy).decide(
            event_of(comment_event(author={"username": "olga"})))
        assert decision.undecided
        assert not decision.start
    finally:
        policy.close()
