"""The catch-up (opslab.ci.catchup): real pygerrit2 against the Gerrit stand-in's changes
query (tests/gerrit_standin.py, contract section 3.3), and the position kept across
restarts."""

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from opslab.ci import catchup
from opslab.ci.catchup import (
    CatchUp,
    CatchUpError,
    Position,
    gerrit_time,
    query_time,
)
from opslab.ci.events import CommentAdded, Event, PatchsetCreated, SeenEvents, parse_event
from opslab.ci.gerrit import GerritRest
from opslab.config import CiSettings
from tests.gerrit_standin import REVIEWER, GerritStandIn

PROJECT = "operations/puppet"


@pytest.fixture(name="gerrit")
def gerrit_fixture(tmp_path: Path) -> Iterator[GerritStandIn]:
    with GerritStandIn(tmp_path / "gerrit") as standin:
        yield standin


@pytest.fixture
def events() -> "queue.Queue[Event]":
    return queue.Queue()


@pytest.fixture
def seen() -> SeenEvents:
    return SeenEvents(3600, 10000)


def catch_up(gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents,
             limit: int = 500, timeout: float = 10.0, password: str | None = None,
             projects: tuple[str, ...] = (PROJECT,)) -> CatchUp:
    return CatchUp(GerritRest(gerrit.url, gerrit.user,
                              gerrit.password if password is None else password,
                              timeout=timeout), projects, events, seen, limit=limit)


def drain(events: "queue.Queue[Event]") -> list[Event]:
    found = []
    while not events.empty():
        found.append(events.get_nowait())
    return found


def comments(found: list[Event]) -> list[CommentAdded]:
    return [event for event in found if isinstance(event, CommentAdded)]


def queries(gerrit: GerritStandIn) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(path).query) for method, path, _ in gerrit.requests
            if method == "GET" and urlsplit(path).path == "/a/changes/"]


def test_a_comment_made_while_away_becomes_the_event_the_stream_would_have_sent(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    since = time.time() - 5
    change = gerrit.add_change()
    streamed = gerrit.add_comment(change.number, "recheck", votes="Code-Review+1")
    result = catch_up(gerrit, events, seen).run(since)
    assert (result.changes, result.truncated) == (1, False)
    [comment] = comments(drain(events))
    expected = parse_event(streamed)
    assert isinstance(expected, CommentAdded)
    assert comment.key == expected.key
    assert comment.comment == streamed["comment"] == "Patch Set 1: Code-Review+1\n\nrecheck"
    assert comment.created_on == streamed["eventCreatedOn"]
    assert (comment.change.number, comment.patchset.number, comment.branch) == \
        (change.number, 1, "production")
    assert comment.patchset.revision == change.current.revision
    assert comment.patchset.ref == change.current.ref
    assert comment.account is not None
    assert comment.account.username == REVIEWER["username"]
    assert comment.change.status == "NEW"
    # The same comment streamed afterwards, by SSH or by webhook, is not new.
    assert not seen.first_time(expected.key)
    webhook_body = {**streamed, "project": {"name": PROJECT}}
    assert not seen.first_time(parse_event(json.dumps(webhook_body)).key)  # type: ignore[union-attr]


def test_the_query_is_the_contracts(gerrit: GerritStandIn, events: "queue.Queue[Event]",
                                    seen: SeenEvents) -> None:
    gerrit.add_change()
    since = 1_700_000_000.7
    catch_up(gerrit, events, seen).run(since)
    [(method, path, authenticated)] = [r for r in gerrit.requests if "/changes/" in r[1]]
    assert (method, authenticated) == ("GET", True)
    assert path.startswith("/a/changes/?q=")
    query = parse_qs(urlsplit(path).query)
    assert query["q"] == [f'status:open project:"{PROJECT}" after:"2023-11-14 22:12:20 +0000"']
    assert query_time(since - catchup.MARGIN) == "2023-11-14 22:12:20 +0000"
    assert query["o"] == ["MESSAGES", "CURRENT_REVISION", "DETAILED_ACCOUNTS"]
    assert (query["n"], query["S"]) == (["100"], ["0"])


def test_streamed_first_then_caught_up_starts_nothing_more(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    since = time.time() - 5
    change = gerrit.add_change()
    streamed = parse_event(gerrit.add_comment(change.number, "recheck"))
    assert isinstance(streamed, CommentAdded)
    assert seen.first_time(streamed.key)  # the stream had it
    result = catch_up(gerrit, events, seen).run(since)
    assert comments(drain(events)) == []
    assert result.queued == 1  # the patch set's patchset-created only


@pytest.mark.parametrize("lag", [1, 2])
def test_a_streamed_copy_stamped_a_little_later_is_the_same_comment(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents,
        lag: int) -> None:
    # Gerrit stamps the event just after writing the message: the stream's copy may
    # carry a later second than the message's date, in either order of arrival.
    since = time.time() - 5
    change = gerrit.add_change()
    line = gerrit.add_comment(change.number, "recheck", created=time.time() - 1)
    late = parse_event({**line, "eventCreatedOn": line["eventCreatedOn"] + lag})
    assert isinstance(late, CommentAdded)
    catch_up(gerrit, events, seen).run(since)
    assert len(comments(drain(events))) == 1
    assert not seen.first_time(late.key)  # streamed after the catch-up: known

    other = SeenEvents(3600, 100)
    assert other.first_time(late.key)  # streamed before the catch-up
    catch_up(gerrit, events, other).run(since)
    assert comments(drain(events)) == []


def test_only_review_comments_since_then_on_the_current_patch_set(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    now = time.time()
    change = gerrit.add_change()
    gerrit.add_comment(change.number, "an old comment", created=now - 3600)
    gerrit.add_comment(change.number, "recheck", created=now - 60)  # on patch set 1
    gerrit.add_patchset(change.number, {"README": "second\n"})
    gerrit.add_comment(change.number, "check infra")
    closed = gerrit.add_change()
    gerrit.add_comment(closed.number, "recheck")
    gerrit.set_status(closed.number, "ABANDONED")
    elsewhere = gerrit.add_change(project="other")
    gerrit.add_comment(elsewhere.number, "recheck")
    catch_up(gerrit, events, seen).run(now - 120)
    found = drain(events)
    assert [(c.change.number, c.patchset.number, c.comment) for c in comments(found)] == \
        [(change.number, 2, "Patch Set 2:\n\ncheck infra")]
    # "Uploaded patch set 2." is Gerrit's own message (autogenerated:gerrit:newPatchSet),
    # but the current patch set is caught up, to cancel what runs on patch set 1.
    [created] = [e for e in found if isinstance(e, PatchsetCreated)]
    assert (created.change.number, created.patchset.number) == (change.number, 2)
    assert created.key == parse_event(gerrit.patchset_event(change.number)).key  # type: ignore[union-attr]


def test_events_are_queued_oldest_first(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    now = time.time()
    first, second = gerrit.add_change(), gerrit.add_change()
    gerrit.add_comment(second.number, "recheck", created=now - 30)
    gerrit.add_comment(first.number, "recheck", created=now - 20)
    gerrit.add_comment(second.number, "check infra", created=now - 10)
    catch_up(gerrit, events, seen).run(now - 60)
    assert [(c.change.number, c.created_on) for c in comments(drain(events))] == [
        (second.number, int(now - 30)), (first.number, int(now - 20)),
        (second.number, int(now - 10))]


def test_pages_are_followed_with_S(gerrit: GerritStandIn, events: "queue.Queue[Event]",
                                   seen: SeenEvents, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catchup, "PAGE_SIZE", 3)
    since = time.time() - 5
    changes = [gerrit.add_change() for _ in range(8)]
    for change in changes:
        gerrit.add_comment(change.number, "recheck")
    result = catch_up(gerrit, events, seen).run(since)
    assert (result.changes, result.truncated) == (8, False)
    assert sorted(c.change.number for c in comments(drain(events))) == \
        [c.number for c in changes]
    assert [(q["n"], q["S"]) for q in queries(gerrit)] == \
        [(["3"], ["0"]), (["3"], ["3"]), (["3"], ["6"])]


def test_at_most_the_limit_the_most_recently_updated(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(catchup, "PAGE_SIZE", 3)
    now = time.time()
    changes = [gerrit.add_change() for _ in range(8)]
    for age, change in enumerate(reversed(changes)):
        gerrit.add_comment(change.number, "recheck", created=now - age)
    result = catch_up(gerrit, events, seen, limit=5).run(now - 60)
    assert (result.changes, result.truncated) == (5, True)
    assert sorted(c.change.number for c in comments(drain(events))) == \
        [c.number for c in changes[3:]]
    assert [(q["n"], q["S"]) for q in queries(gerrit)] == [(["3"], ["0"]), (["2"], ["3"])]
    assert "more changes were updated than ci.catchup_limit (5)" in caplog.text


def test_the_limit_is_shared_by_the_projects(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    since = time.time() - 5
    for project in ("one", "one", "two", "three"):
        gerrit.add_change(project=project)
    result = catch_up(gerrit, events, seen, limit=3, projects=("one", "two", "three")).run(since)
    assert (result.changes, result.truncated) == (3, True)
    assert len(queries(gerrit)) == 2  # "three" was not asked: no room left


def test_a_hanging_gerrit_costs_one_timeout(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    gerrit.add_change()
    gerrit.hang(30, lambda method, path: path.startswith("/a/changes/?"))
    started = time.monotonic()
    with pytest.raises(CatchUpError, match=r"the query failed: Gerrit did not answer GET "
                       r".*/a/changes/ within 0\.5 s"):
        catch_up(gerrit, events, seen, timeout=0.5).run(time.time() - 60)
    assert time.monotonic() - started < 2.0  # no retry
    assert len(queries(gerrit)) == 1
    assert events.empty()


def test_refusals_and_answers_that_are_not_gerrits(
        gerrit: GerritStandIn, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    gerrit.add_change()
    with pytest.raises(CatchUpError, match="refused the account 'opslab-ci' \\(401"):
        catch_up(gerrit, events, seen, password="wrong").run(time.time())
    gerrit.fail_next.append((lambda method, path: True, 200, "<html>a proxy</html>"))
    with pytest.raises(CatchUpError, match="not Gerrit's JSON"):
        catch_up(gerrit, events, seen).run(time.time())
    gerrit.fail_next.append((lambda method, path: True, 503, "Service Unavailable"))
    with pytest.raises(CatchUpError, match="Gerrit answered 503"):
        catch_up(gerrit, events, seen).run(time.time())
    assert len(queries(gerrit)) == 3  # the 503 was not retried
    with pytest.raises(CatchUpError, match="cannot reach Gerrit"):
        CatchUp(GerritRest("http://127.0.0.1:9", "u", "p", timeout=2), (PROJECT,), events,
                seen).run(time.time())
    assert events.empty()


def test_from_settings(gerrit: GerritStandIn, tmp_path: Path, events: "queue.Queue[Event]",
                       seen: SeenEvents) -> None:
    with pytest.raises(CatchUpError, match=r"ci\.gerrit_url, .* not set"):
        CatchUp.from_settings(CiSettings(account="ci"), events, seen)
    with pytest.raises(CatchUpError, match=r"cannot read ci\.gerrit_password_file"):
        CatchUp.from_settings(CiSettings(gerrit_url=gerrit.url, account="ci",
                                         gerrit_password_file=str(tmp_path / "none")),
                              events, seen)
    password = tmp_path / "password"
    password.write_text(gerrit.password + "\n")
    settings = CiSettings(gerrit_url=gerrit.url, gerrit_user=gerrit.user,
                          gerrit_password_file=str(password), projects=(PROJECT,),
                          catchup_limit=7, request_timeout=3.0)
    made = CatchUp.from_settings(settings, events, seen)
    assert (made.limit, made.gerrit.timeout, made.projects) == (7, 3.0, (PROJECT,))
    change = gerrit.add_change()
    gerrit.add_comment(change.number, "recheck")
    assert made.run(time.time() - 10).queued == 2


def test_timestamps() -> None:
    assert gerrit_time("2012-07-17 07:18:30.854000000") == pytest.approx(1342509510.854)
    assert gerrit_time("2012-07-17 07:18:30") == 1342509510
    with pytest.raises(ValueError, match="not a Gerrit timestamp"):
        gerrit_time("yesterday")
    assert query_time(1342509510.854) == "2012-07-17 07:18:30 +0000"


class TestPosition:
    def test_kept_and_read_back(self, tmp_path: Path) -> None:
        state = tmp_path / "state"
        position = Position(str(state))
        assert (position.time, position.keys) == (None, {})
        position.start_from(1000.0)
        first = parse_event(comment_line(1_700_000_000, "one"))
        second = parse_event(comment_line(1_700_000_001, "two"))
        old = parse_event(comment_line(1_600_000_000, "older"))
        assert isinstance(first, Event)
        assert isinstance(second, Event)
        assert isinstance(old, Event)
        for event in (first, second, old):
            position.record(event)
        again = Position(str(state))
        assert again.time == 1_700_000_001
        assert set(again.keys) == {first.key, second.key}  # the last seconds' only
        assert (state / "position.json").stat().st_mode & 0o777 == 0o600
        position.start_from(5.0)  # a position kept is not replaced
        assert Position(str(state)).time == 1_700_000_001

    def test_an_unreadable_position_is_none(self, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
        (tmp_path / "position.json").write_text("{not json")
        assert Position(str(tmp_path)).time is None
        assert "unreadable" in caplog.text

    def test_a_kill_between_write_and_rename_leaves_the_old_position(
            self, tmp_path: Path) -> None:
        script = f"""
import os, signal
from opslab.ci.catchup import Position
from opslab.ci.events import parse_event
position = Position({str(tmp_path)!r})
position.record(parse_event({comment_line(1_700_000_000, "one")!r}))
def killed(source, target):
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = killed
position.record(parse_event({comment_line(1_700_000_500, "two")!r}))
"""
        done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False,
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr
        leftovers = [name for name in os.listdir(tmp_path) if name != "position.json"]
        assert len(leftovers) == 1
        assert leftovers[0].startswith(".position.json.")
        assert json.loads((tmp_path / "position.json").read_text())["time"] == 1_700_000_000
        assert Position(str(tmp_path)).time == 1_700_000_000
        assert os.listdir(tmp_path) == ["position.json"]  # the leftover cleaned

    def test_an_unwritable_state_dir_is_logged_not_raised(
            self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        position = Position(str(blocker / "state"))
        with caplog.at_level(logging.ERROR):
            position.record(parse_event(comment_line(1_700_000_000, "one")))  # type: ignore[arg-type]
        assert "cannot keep the position" in caplog.text
        assert position.time == 1_700_000_000


def comment_line(created: int, text: str) -> str:
    return json.dumps({
        "type": "comment-added", "eventCreatedOn": created,
        "change": {"project": PROJECT, "branch": "production", "number": 5},
        "patchSet": {"number": 1}, "author": {"username": "rev"}, "comment": text})
