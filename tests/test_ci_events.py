"""Gerrit events (opslab.ci.events): both shapes, both paths, hostile lines, deduplication.

The lines are built as the contract shows them (``gerrit-jenkins-openstack.md``,
sections 1.2 to 1.5 and 2): 3.x with integers and the top-level ``project``,
``refName`` and ``changeKey``; 2.x with numbers as strings and none of those;
webhook bodies with ``project`` as an object.
"""

import base64
import json
import threading
from typing import Any

import pytest

from opslab.ci.events import (
    MAX_EVENT_BYTES,
    ChangeAbandoned,
    ChangeMerged,
    CommentAdded,
    Malformed,
    OtherEvent,
    PatchsetCreated,
    RefUpdated,
    SeenEvents,
    parse_event,
)
from opslab.ci.parameters import build_parameters
from opslab.config import CiSettings

CHANGE_ID = "I0123456789abcdef0123456789abcdef01234567"
REV = "a" * 40
PARENT = "b" * 40
DEV = {"name": "Dev", "email": "dev@example.com", "username": "dev"}
REV_ACCOUNT = {"name": "Rev", "username": "rev"}


def change(version: int = 3, number: int = 42, **extra: Any) -> dict[str, Any]:
    body = {"project": "demo", "branch": "master", "id": CHANGE_ID,
            "number": number if version == 3 else str(number), "subject": "Fix",
            "owner": DEV, "url": f"http://gerrit/c/demo/+/{number}",
            "commitMessage": f"Fix\n\nChange-Id: {CHANGE_ID}\n", "createdOn": 1700000000,
            "status": "NEW"}
    if version == 2:
        body["sortKey"] = "002e4d1e00000001"
    body.update(extra)
    return body


def patchset(version: int = 3, number: int = 1, **extra: Any) -> dict[str, Any]:
    body = {"number": number if version == 3 else str(number), "revision": REV,
            "parents": [PARENT], "ref": f"refs/changes/42/42/{number}", "uploader": DEV,
            "author": DEV, "createdOn": 1700000000, "sizeInsertions": 3, "sizeDeletions": 1}
    if version == 3:
        body["kind"] = "REWORK"
    else:
        body["isDraft"] = False
    body.update(extra)
    return body


def envelope(kind: str, version: int = 3, created: int | None = 1700000100,
             **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind}
    if created is not None:
        event["eventCreatedOn"] = created
    if version == 3 and "change" in fields:
        event.update({"project": "demo", "refName": "refs/heads/master",
                      "changeKey": {"id": CHANGE_ID}})
    event.update(fields)
    return event


def comment_event(version: int = 3, text: str = "Patch Set 1:\n\nrecheck",
                  author: dict[str, str] | None = None, ps: int = 1,
                  **extra: Any) -> dict[str, Any]:
    event = envelope("comment-added", version, change=change(version),
                     patchSet=patchset(version, ps), author=author or REV_ACCOUNT,
                     approvals=[{"type": "Code-Review", "description": "Code-Review",
                                 "value": "0"}],
                     comment=text)
    event.update(extra)
    return event


def line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


# -- the shapes of 2.x and 3.x ---------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_comment_added_of_either_version(version: int) -> None:
    event = parse_event(line(comment_event(version)))
    assert isinstance(event, CommentAdded)
    assert (event.change.project, event.change.number, event.patchset.number) == ("demo", 42, 1)
    assert event.branch == "master"
    assert event.comment == "Patch Set 1:\n\nrecheck"
    assert event.account is not None
    assert event.account.username == "rev"
    assert event.approvals[0].type == "Code-Review"
    assert event.approvals[0].value == "0"
    assert event.created_on == 1700000100
    assert event.patchset.revision == REV


def test_the_contracts_patchset_created_line() -> None:
    # Section 1.5's example, field for field (the <40hex> placeholders filled in).
    text = ('{"type":"patchset-created","eventCreatedOn":1700000000,"project":"demo",'
            '"refName":"refs/heads/master","changeKey":{"id":"I0123456789abcdef0123456789abcdef'
            '01234567"},"uploader":{"name":"Dev","email":"dev@example.com","username":"dev"},'
            '"change":{"project":"demo","branch":"master","id":"I0123456789abcdef0123456789abc'
            'def01234567","number":42,"subject":"Fix","owner":{"name":"Dev","email":"dev@examp'
            'le.com","username":"dev"},"url":"http://gerrit/c/demo/+/42","commitMessage":"Fix\\'
            'n\\nChange-Id: I0123...\\n","createdOn":1700000000,"status":"NEW"},"patchSet":{"nu'
            f'mber":1,"revision":"{REV}","parents":["{PARENT}"],"ref":"refs/changes/42/42/1",'
            '"uploader":{},"author":{},"createdOn":1700000000,"kind":"REWORK","sizeInsertions"'
            ':3,"sizeDeletions":1}}')
    event = parse_event(text)
    assert isinstance(event, PatchsetCreated)
    assert event.account is not None
    assert event.account.email == "dev@example.com"
    assert event.patchset.ref == "refs/changes/42/42/1"
    assert event.patchset.kind == "REWORK"
    assert event.patchset.uploader is None  # an empty account is no account
    assert event.change.commit_message == "Fix\n\nChange-Id: I0123...\n"


def test_branch_from_ref_name_when_change_has_none() -> None:
    raw = comment_event()
    del raw["change"]["branch"]
    event = parse_event(raw)
    assert isinstance(event, CommentAdded)
    assert event.branch == "master"
    del raw["refName"]
    event = parse_event(raw)
    assert isinstance(event, CommentAdded)
    assert event.branch is None


def test_2x_without_event_created_on_or_kind() -> None:
    # Early 2.x sends no eventCreatedOn (contract section 8, complaint 3): still an event.
    raw = comment_event(2)
    del raw["eventCreatedOn"]
    event = parse_event(line(raw))
    assert isinstance(event, CommentAdded)
    assert event.created_on is None
    assert event.patchset.kind is None


def test_old_2x_lower_case_patchset_key() -> None:
    raw = comment_event(2)
    raw["patchset"] = raw.pop("patchSet")
    event = parse_event(raw)
    assert isinstance(event, CommentAdded)
    assert event.patchset.number == 1


def test_abandoned_merged_and_ref_updated() -> None:
    abandoned = parse_event(envelope("change-abandoned", change=change(), patchSet=patchset(),
                                     abandoner=REV_ACCOUNT, reason="no longer needed"))
    assert isinstance(abandoned, ChangeAbandoned)
    assert abandoned.reason == "no longer needed"
    assert abandoned.account is not None
    assert abandoned.account.username == "rev"
    merged = parse_event(envelope("change-merged", 2, change=change(2), patchSet=patchset(2),
                                  submitter=REV_ACCOUNT, newRev="c" * 40))
    assert isinstance(merged, ChangeMerged)
    assert merged.new_rev == "c" * 40
    assert merged.change.number == 42
    updated = parse_event(envelope("ref-updated", submitter=DEV, refUpdate={
        "oldRev": "0" * 40, "newRev": REV, "refName": "refs/heads/stable", "project": "demo"}))
    assert isinstance(updated, RefUpdated)
    assert updated.project == "demo"
    assert updated.created
    assert not updated.deleted
    assert updated.ref_update.ref_name == "refs/heads/stable"


def test_other_types_are_kept() -> None:
    for raw in (envelope("reviewer-added", change=change(), patchSet=patchset(),
                         reviewer=DEV),
                {"type": "dropped-output"},
                envelope("project-created", projectName="new", projectHead="refs/heads/main")):
        event = parse_event(line(raw))
        assert isinstance(event, OtherEvent), raw
        assert event.type == raw["type"]
    reviewer = parse_event(envelope("reviewer-added", 2, change=change(2), reviewer=DEV))
    assert isinstance(reviewer, OtherEvent)
    assert reviewer.project == "demo"
    assert reviewer.account is not None


def test_webhook_body_with_project_as_an_object() -> None:
    # Section 2: the plugin's own Gson may write the top-level project as {"name": ...}.
    raw = comment_event()
    raw["project"] = {"name": "demo"}
    event = parse_event(json.dumps(raw).encode("utf-8"))
    assert isinstance(event, CommentAdded)
    assert event.project == "demo"
    other = parse_event({"type": "project-created", "project": {"name": "x"}})
    assert isinstance(other, OtherEvent)
    assert other.project == "x"


# -- hostile and malformed lines ---------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    ("", "empty"),
    ("   \n", "empty"),
    ("garbage ]]] {{", "not JSON"),
    ("[1, 2]", "not a JSON object but a list"),
    ('"text"', "not a JSON object but text"),
    ("null", "not a JSON object but null"),
    ('{"eventCreatedOn": 1}', "no type"),
    ('{"type": 7}', "no type"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[" * 100000 + "]" * 100000, "not JSON"),
    ('{"type":"comment-added"}', "no change"),
    ('{"type":"comment-added","change":"demo"}', "change is text, not an object"),
    ('{"type":"ref-updated","refUpdate":{"project":"demo"}}', "refUpdate has no refName"),
    ('{"type":"ref-updated"}', "no refUpdate"),
])
def test_garbage_is_a_value_not_an_exception(data: str | bytes, reason: str) -> None:
    result = parse_event(data)
    assert isinstance(result, Malformed), result
    assert reason in result.reason
    assert "malformed Gerrit" in str(result)


def test_a_huge_line_is_refused_before_parsing() -> None:
    huge = line(comment_event(text="x" * (MAX_EVENT_BYTES + 1)))
    result = parse_event(huge)
    assert isinstance(result, Malformed)
    assert "longer than" in result.reason
    assert len(result.excerpt) <= 200
    # Just below the limit, the same event is read.
    fits = line(comment_event(text="x" * (MAX_EVENT_BYTES - 2000)))
    assert isinstance(parse_event(fits), CommentAdded)


def test_missing_patchset_on_a_comment_names_it() -> None:
    raw = comment_event()
    del raw["patchSet"]
    result = parse_event(line(raw))
    assert isinstance(result, Malformed)
    assert result.type == "comment-added"
    assert "without patchSet" in result.reason


@pytest.mark.parametrize(("path", "value", "reason"), [
    (("change", "number"), [42], "change.number is a list, not a number"),
    (("change", "number"), "forty-two", "change.number is 'forty-two', not a number"),
    (("change", "number"), True, "change.number is a boolean"),
    (("change", "number"), 0, "change.number 0 is out of range"),
    (("change", "number"), -3, "change.number -3 is out of range"),
    (("change", "number"), 2**40, "out of range"),
    (("change", "number"), "\uff14\uff12", "not a number"),  # fullwidth digits are not Gerrit's
    (("change", "number"), None, "no change.number"),
    (("change", "project"), 5, "change has no project"),
    (("patchSet", "number"), {"n": 1}, "patchSet.number is an object"),
    (("patchSet", "revision"), "not-a-sha", "is not a 40-hex commit"),
    (("patchSet", "ref"), "../../etc", "is not a ref"),
    (("comment",), 12, "comment is a number, not text"),
    (("approvals",), "Code-Review+1", "approvals is text, not a list"),
    (("eventCreatedOn",), "yesterday", "eventCreatedOn is text"),
    (("patchSet",), [1], "patchSet is a list"),
])
def test_wrong_types_in_what_opslab_needs(path: tuple[str, ...], value: Any,
                                          reason: str) -> None:
    raw = comment_event()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    result = parse_event(line(raw))
    assert isinstance(result, Malformed), result
    assert reason in result.reason


def test_wrong_types_in_what_opslab_does_not_need_are_tolerated() -> None:
    raw = comment_event()
    raw["change"]["subject"] = ["not", "text"]
    raw["change"]["owner"] = "dev"
    raw["change"]["hashtags"] = ["ok", 3]
    raw["approvals"] = [{"type": "Verified", "value": 1, "oldValue": 0}, "junk",
                        {"value": "1"}, {"type": "Code-Review", "value": None}]
    event = parse_event(raw)
    assert isinstance(event, CommentAdded)
    assert event.change.subject is None
    assert event.change.owner is None
    assert event.change.hashtags == ("ok",)
    assert [(a.type, a.value, a.old_value) for a in event.approvals] == [("Verified", "1", "0")]


def test_unicode_survives() -> None:
    text = "Patch Set 1:\n\nrecheck 🚀 — ñ \u202e"
    raw = comment_event(text=text, author={"name": "Zoë Ĳssel", "username": "zoe"})
    for data in (line(raw), json.dumps(raw, ensure_ascii=True),
                 json.dumps(raw, ensure_ascii=False).encode("utf-8")):
        event = parse_event(data)
        assert isinstance(event, CommentAdded)
        assert event.comment == text
        assert event.account is not None
        assert event.account.name == "Zoë Ĳssel"
    # A lone surrogate is valid JSON: read, keyed, and encoded (as "?", like Java) in the
    # build parameters rather than stopping anything.
    lone = line(comment_event(text="PLACEHOLDER")).replace("PLACEHOLDER", "recheck \\ud800")
    event = parse_event(lone)
    assert isinstance(event, CommentAdded)
    assert event.comment == "recheck \ud800"
    assert event.key != key_of(comment_event(text="recheck ?"))
    text = build_parameters(event)["GERRIT_EVENT_COMMENT_TEXT"]
    assert base64.b64decode(text) == b"recheck ?"


def test_a_stream_goes_on_after_bad_lines() -> None:
    lines = ["garbage", line(comment_event()), "{", line({"type": "dropped-output"}),
             line(comment_event(ps=2, text="Patch Set 2:\n\ncheck infra"))]
    results = [parse_event(text) for text in lines]
    assert [type(result).__name__ for result in results] == [
        "Malformed", "CommentAdded", "Malformed", "OtherEvent", "CommentAdded"]


# -- the event key and the seen set -------------------------------------------------------


def key_of(data: Any) -> str:
    event = parse_event(data)
    assert not isinstance(event, Malformed), event
    return event.key


def test_the_same_comment_by_ssh_and_by_webhook_has_one_key() -> None:
    ssh_line = line(comment_event(3))
    webhook = comment_event(3)
    webhook["project"] = {"name": "demo"}  # the plugin's own serialisation
    webhook_body = json.dumps(webhook, indent=2, sort_keys=True, ensure_ascii=True).encode()
    assert key_of(ssh_line) == key_of(webhook_body) == key_of(json.loads(ssh_line))
    # 2.x strings and 3.x integers for the same event are the same event.
    assert key_of(line(comment_event(2))) == key_of(ssh_line)


def test_different_comments_have_different_keys() -> None:
    base = key_of(comment_event())
    others = [
        comment_event(text="Patch Set 1:\n\ncheck infra"),
        comment_event(eventCreatedOn=1700000101),
        comment_event(author={"name": "Other", "username": "other"}),
        comment_event(ps=2),
    ]
    other_change = comment_event()
    other_change["change"]["number"] = 43
    others.append(other_change)
    keys = {key_of(raw) for raw in others}
    assert base not in keys
    assert len(keys) == len(others)
    assert "comment-added demo 42 1" in base


def test_keys_of_other_kinds() -> None:
    created = envelope("patchset-created", change=change(), patchSet=patchset(),
                       uploader=DEV)
    replay = json.loads(json.dumps(created))
    replay["eventCreatedOn"] = 1700009999  # a replay from the events-log: later, same patch set
    assert key_of(created) == key_of(replay)
    newer = envelope("patchset-created", change=change(), patchSet=patchset(number=2),
                     uploader=DEV)
    assert key_of(created) != key_of(newer)
    first = envelope("change-abandoned", change=change(), abandoner=DEV, created=1)
    second = envelope("change-abandoned", change=change(), abandoner=DEV, created=2)
    assert key_of(first) != key_of(second)  # abandoned, restored, abandoned again
    dropped = key_of({"type": "dropped-output"})
    assert dropped == key_of('{"type": "dropped-output"}')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seen_events_expire() -> None:
    clock = Clock()
    seen = SeenEvents(max_age=60, max_size=100, clock=clock)
    assert seen.first_time("a")
    assert not seen.first_time("a")
    clock.now += 59.9
    assert not seen.first_time("a")
    assert "a" in seen
    clock.now += 0.1
    assert "a" not in seen
    assert len(seen) == 0
    assert seen.first_time("a")


def test_seen_events_are_bounded_oldest_first() -> None:
    clock = Clock()
    seen = SeenEvents(max_age=3600, max_size=3, clock=clock)
    for key in "abcd":
        clock.now += 1
        assert seen.first_time(key)
    assert len(seen) == 3
    assert "a" not in seen
    assert "d" in seen
    assert seen.first_time("a")  # forgotten, so new again
    assert "b" not in seen


def test_seen_events_from_the_configuration() -> None:
    seen = SeenEvents.for_settings(CiSettings(dedup_seconds=5.0, dedup_size=7))
    assert (seen.max_age, seen.max_size) == (5.0, 7)
    assert (SeenEvents.for_settings(CiSettings()).max_age,
            SeenEvents.for_settings(CiSettings()).max_size) == (3600.0, 100000)


def test_seen_events_refuse_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        SeenEvents(max_age=0, max_size=1)
    with pytest.raises(ValueError, match="positive"):
        SeenEvents(max_age=1, max_size=0)


def test_two_paths_at_once_start_one_run() -> None:
    """Many threads deliver the same keys at the same moment: each key is new exactly once."""
    seen = SeenEvents(max_age=3600, max_size=100000)
    keys = [key_of(comment_event(ps=ps)) for ps in range(1, 51)]
    winners: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        for key in keys:
            if seen.first_time(key):
                with lock:
                    winners.append(key)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(winners) == sorted(keys)
