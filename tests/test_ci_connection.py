"""Events in by SSH (opslab.ci.connection): the real paramiko client against a stand-in
Gerrit SSH daemon (tests/gerrit_ssh_standin.py) that speaks ``gerrit version`` and
``gerrit stream-events`` as the contract says (``gerrit-jenkins-openstack.md``, section
1.1).

Settings are short (a reconnect after 0.05 s, a watchdog of 0.5 s where it is tested)
and every wait is on a condition with a deadline.
"""

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from opslab.ci.connection import GerritEventStream, backoff_delay
from opslab.ci.events import MAX_EVENT_BYTES, CommentAdded, Event, PatchsetCreated, SeenEvents
from opslab.config import CiSettings, ConfigError, parse
from tests.gerrit_ssh_standin import USER, VERSION, GerritSshStandIn

# An exception in a thread (the stream's, the stand-in's) fails the test it happened in.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

REV = "a" * 40
DEADLINE = 5.0


def comment(number: int = 42, patchset: int = 1, text: str = "recheck",
            created: int | None = 1_700_000_000) -> dict[str, Any]:
    """A 3.x comment-added line: numbers as integers, the top-level project."""
    event: dict[str, Any] = {
        "type": "comment-added",
        "change": {"project": "demo", "branch": "master", "number": number,
                   "id": "I" + "0" * 40, "subject": "Fix", "status": "NEW"},
        "patchSet": {"number": patchset, "revision": REV,
                     "ref": f"refs/changes/{number % 100:02d}/{number}/{patchset}"},
        "author": {"name": "Rev", "username": "rev"},
        "approvals": [],
        "comment": f"Patch Set {patchset}:\n\n{text}",
        "project": "demo", "refName": "refs/heads/master",
    }
    if created is not None:
        event["eventCreatedOn"] = created
    return event


def patchset_2x(number: int = 7, patchset: int = 2) -> dict[str, Any]:
    """A 2.x patchset-created line: numbers as strings, no top-level project."""
    return {
        "type": "patchset-created",
        "change": {"project": "demo", "branch": "master", "number": str(number),
                   "id": "I" + "1" * 40, "subject": "Old"},
        "patchSet": {"number": str(patchset), "revision": "b" * 40,
                     "uploader": {"username": "dev"}},
        "eventCreatedOn": 1_600_000_000,
    }


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.01)


class FixedJitter(random.Random):
    """random() always 1.0 minus a hair: every wait the full backoff."""

    def random(self) -> float:
        return 0.999999


@pytest.fixture
def user_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def standin(user_key: paramiko.PKey) -> Iterator[GerritSshStandIn]:
    server = GerritSshStandIn(user_key)
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, user_key: paramiko.PKey, standin: GerritSshStandIn) -> CiSettings:
    key_file = tmp_path / "id_ecdsa"
    user_key.write_private_key_file(str(key_file))
    known_hosts = standin.write_known_hosts(tmp_path / "known_hosts")
    return CiSettings(gerrit_ssh_host="127.0.0.1", gerrit_ssh_port=standin.port,
                      gerrit_ssh_user=USER, ssh_key_file=str(key_file),
                      known_hosts_file=str(known_hosts), ssh_timeout=2.0, ssh_keepalive=1.0,
                      ssh_watchdog_seconds=30.0, reconnect_min_seconds=0.05,
                      reconnect_max_seconds=0.4)


class Harness:
    """A started GerritEventStream, its queue and what on_reconnect was given."""

    def __init__(self, settings: CiSettings, rng: random.Random | None = None) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.reconnects: list[float | None] = []
        self.stream = GerritEventStream(settings, self.events, SeenEvents(60, 1000),
                                        on_reconnect=self.reconnects.append, rng=rng)
        self.stream.start()

    def get(self) -> Event:
        return self.events.get(timeout=DEADLINE)


@pytest.fixture
def connect(settings: CiSettings) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def start(rng: random.Random | None = None, **overrides: Any) -> Harness:
        harness = Harness(settings._replace(**overrides), rng)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        assert harness.stream.stop(timeout=DEADLINE), "the stream's thread did not end"


def test_events_arrive_in_order_and_parsed_in_both_shapes(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    harness = connect()
    standin.wait_for_streams(1)
    standin.push(comment(42, 3))
    standin.push(patchset_2x(7, 2))
    standin.push(comment(43, 1, "check infra"))
    first, second, third = harness.get(), harness.get(), harness.get()
    assert isinstance(first, CommentAdded)
    assert (first.change.number, first.patchset.number) == (42, 3)
    assert isinstance(second, PatchsetCreated)
    assert (second.change.number, second.patchset.number) == (7, 2)
    assert isinstance(third, CommentAdded)
    assert third.change.number == 43
    assert harness.stream.server_version == VERSION
    assert standin.commands[:2] == ["gerrit version", "gerrit stream-events"]
    assert harness.reconnects == []  # the first stream is no reconnect


def test_a_malformed_line_is_logged_and_skipped_and_the_next_event_arrives(
        standin: GerritSshStandIn, connect: Callable[..., Harness],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opslab.ci.connection")
    harness = connect()
    standin.wait_for_streams(1)
    standin.push("this is not json")
    standin.push('{"type": "comment-added", "change": {"project": "demo"}}')
    standin.push(b"\xff\xfe not utf-8")
    standin.push(b"[" * (MAX_EVENT_BYTES + 10))  # far too long: dropped unread
    standin.push(comment(44))
    event = harness.get()
    assert isinstance(event, CommentAdded)
    assert event.change.number == 44
    assert harness.events.empty()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("skipped" in message for message in messages) == 4, messages
    assert standin.streams_opened == 1  # never reconnected for a bad line


def test_a_dropped_connection_reconnects_with_backoff_and_catches_up(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    harness = connect(rng=FixedJitter(), reconnect_min_seconds=0.1,
                      reconnect_max_seconds=0.4)
    standin.wait_for_streams(1)
    standin.push(comment(42, created=1_700_000_100))
    assert harness.get().created_on == 1_700_000_100
    standin.push(comment(40, created=1_700_000_050))  # an older one, arriving late
    harness.get()
    assert harness.stream.last_seen == 1_700_000_100

    standin.refusing = True
    before = len(standin.connections)
    standin.drop()
    wait_until(lambda: len(standin.connections) >= before + 5, "five refused attempts")
    standin.refusing = False
    standin.wait_for_streams(2)
    attempts = standin.connections[before:before + 5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # Waits of 0.2, 0.4, 0.4, 0.4 s (0.1 doubling, capped at 0.4) between refused attempts.
    for gap, wait in zip(gaps, (0.2, 0.4, 0.4, 0.4), strict=True):
        assert wait - 0.02 <= gap < wait + 2.0, gaps
    wait_until(lambda: harness.reconnects, "on_reconnect")
    assert harness.reconnects == [1_700_000_100.0]  # on_reconnect(last_seen)

    standin.push(comment(45))
    assert harness.get().change.number == 45  # type: ignore[attr-defined]


def test_a_silent_connection_is_taken_for_dead_by_the_watchdog(
        standin: GerritSshStandIn, connect: Callable[..., Harness],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opslab.ci.connection")
    harness = connect(ssh_watchdog_seconds=0.5)
    standin.wait_for_streams(1)
    standin.push(comment(42))
    harness.get()
    standin.go_silent()  # open, but nothing more comes: a stalled TCP connection
    standin.wait_for_streams(2)
    assert any("ssh_watchdog_seconds" in record.getMessage() for record in caplog.records)
    standin.push(comment(46))
    assert harness.get().change.number == 46  # type: ignore[attr-defined]
    wait_until(lambda: harness.reconnects, "on_reconnect")


def test_an_event_replayed_after_a_reconnect_is_queued_once(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    harness = connect()
    standin.wait_for_streams(1)
    standin.push(comment(42, text="check infra"))
    assert harness.get().change.number == 42  # type: ignore[attr-defined]
    standin.drop()
    standin.wait_for_streams(2)
    standin.push(comment(42, text="check infra"))  # the same comment again
    standin.push(comment(47))
    assert harness.get().change.number == 47  # type: ignore[attr-defined]
    assert harness.events.empty()


def test_a_wrong_host_key_is_refused_and_said_so(
        standin: GerritSshStandIn, connect: Callable[..., Harness], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="opslab.ci.connection")
    known_hosts = standin.write_known_hosts(tmp_path / "wrong_known_hosts",
                                            paramiko.ECDSAKey.generate())
    harness = connect(known_hosts_file=str(known_hosts))
    wait_until(lambda: harness.stream.last_error is not None, "the refusal")
    error = harness.stream.last_error or ""
    assert "host key" in error
    assert "refused" in error
    assert str(known_hosts) in error
    assert any(record.levelno == logging.ERROR and "host key" in record.getMessage()
               for record in caplog.records)
    assert standin.streams_opened == 0
    assert standin.commands == []
    assert harness.events.empty()


def test_an_unknown_host_is_refused_never_added(
        standin: GerritSshStandIn, connect: Callable[..., Harness], tmp_path: Path) -> None:
    known_hosts = tmp_path / "empty_known_hosts"
    known_hosts.write_text("")
    harness = connect(known_hosts_file=str(known_hosts))
    wait_until(lambda: harness.stream.last_error is not None, "the refusal")
    assert "is not in" in (harness.stream.last_error or "")
    assert standin.streams_opened == 0
    assert known_hosts.read_text() == ""


@pytest.mark.parametrize("setting", ["known_hosts_file", "ssh_key_file"])
def test_a_missing_file_is_named(
        standin: GerritSshStandIn, connect: Callable[..., Harness], tmp_path: Path,
        setting: str) -> None:
    harness = connect(**{setting: str(tmp_path / "missing")})
    wait_until(lambda: harness.stream.last_error is not None, "the failure")
    assert f"{tmp_path / 'missing'}" in (harness.stream.last_error or "")
    assert standin.streams_opened == 0


def test_a_refused_key_is_reported_clearly(
        standin: GerritSshStandIn, connect: Callable[..., Harness], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="opslab.ci.connection")
    other = tmp_path / "other_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(other))
    harness = connect(ssh_key_file=str(other))
    wait_until(lambda: harness.stream.last_error is not None, "the refusal")
    error = harness.stream.last_error or ""
    assert f"Gerrit refused the key {other} for user {USER}" in error
    assert any(record.levelno == logging.ERROR and "refused the key" in record.getMessage()
               for record in caplog.records)
    assert standin.refused_auths >= 1
    assert standin.streams_opened == 0


def test_last_seen_is_the_newest_event_and_the_arrival_time_without_one(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    harness = connect()
    assert harness.stream.last_seen is None
    standin.wait_for_streams(1)
    before = time.time()
    standin.push(comment(42, created=None))  # early 2.x: no eventCreatedOn
    harness.get()
    seen = harness.stream.last_seen
    assert seen is not None
    assert before <= seen <= time.time()
    standin.push(comment(43, created=int(seen) + 1000))
    harness.get()
    assert harness.stream.last_seen == int(seen) + 1000


def test_dropped_output_asks_for_a_catch_up(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    harness = connect()
    standin.wait_for_streams(1)
    standin.push(comment(42, created=1_700_000_200))
    harness.get()
    standin.push({"type": "dropped-output", "eventCreatedOn": 1_700_000_300})
    wait_until(lambda: harness.reconnects, "on_reconnect")
    assert harness.reconnects == [1_700_000_300.0]
    assert harness.events.empty()


def test_stop_is_prompt_and_closes_the_stream(
        standin: GerritSshStandIn, settings: CiSettings) -> None:
    harness = Harness(settings)
    standin.wait_for_streams(1)
    started = time.monotonic()
    assert harness.stream.stop(timeout=DEADLINE)
    assert time.monotonic() - started < 2.0
    # The stand-in saw Ctrl-C or the channel close: its stream is gone.
    wait_until(lambda: not standin._streams, "the server's stream to close")


def test_stop_is_prompt_while_waiting_to_reconnect(
        standin: GerritSshStandIn, settings: CiSettings) -> None:
    standin.refusing = True
    harness = Harness(settings._replace(reconnect_min_seconds=30.0,
                                        reconnect_max_seconds=60.0))
    wait_until(lambda: standin.connections, "an attempt")
    wait_until(lambda: harness.stream.last_error is not None, "the failure")
    started = time.monotonic()
    assert harness.stream.stop(timeout=DEADLINE)
    assert time.monotonic() - started < 2.0
    assert len(standin.connections) == 1


def test_stop_before_start_and_twice() -> None:
    settings = CiSettings(gerrit_ssh_host="127.0.0.1", gerrit_ssh_user=USER,
                          ssh_key_file="/nonexistent")
    stream = GerritEventStream(settings, queue.Queue(), SeenEvents(60, 10))
    assert stream.stop(timeout=1)
    assert stream.stop(timeout=1)


def test_missing_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"ci\.gerrit_ssh_host, ci\.gerrit_ssh_user, "
                                         r"ci\.ssh_key_file are set"):
        GerritEventStream(CiSettings(), queue.Queue(), SeenEvents(60, 10))


@pytest.mark.parametrize(("failures", "low", "high"),
                         [(0, 0.5, 1.0), (1, 1.0, 2.0), (3, 4.0, 8.0), (10, 30.0, 60.0),
                          (10_000, 30.0, 60.0)])
def test_backoff_doubles_is_capped_and_jittered_down_by_at_most_half(
        failures: int, low: float, high: float) -> None:
    rng = random.Random(failures)  # noqa: S311 - jitter, not a secret
    delays = [backoff_delay(failures, 1.0, 60.0, rng) for _ in range(200)]
    assert all(low <= delay <= high for delay in delays)
    assert max(delays) - min(delays) > (high - low) / 4  # jittered, not constant


@pytest.mark.parametrize(("text", "message"), [
    ("ci: {gerrit_ssh_port: 0}", "ci.gerrit_ssh_port must be a TCP port"),
    ("ci: {gerrit_ssh_port: 70000}", "ci.gerrit_ssh_port must be a TCP port"),
    ("ci: {gerrit_ssh_host: 'a b'}", "ci.gerrit_ssh_host"),
    ("ci: {gerrit_ssh_user: ''}", "ci.gerrit_ssh_user"),
    ("ci: {ssh_watchdog_seconds: 0}", "ci.ssh_watchdog_seconds must be greater than 0"),
    ("ci: {ssh_timeout: 0}", "ci.ssh_timeout must be greater than 0"),
    ("ci: {reconnect_min_seconds: 10, reconnect_max_seconds: 5}",
     "ci.reconnect_max_seconds is below ci.reconnect_min_seconds"),
])
def test_bad_ssh_settings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, "opslab.yaml")


def test_the_ssh_thread_is_named_for_its_job(
        standin: GerritSshStandIn, connect: Callable[..., Harness]) -> None:
    connect()
    standin.wait_for_streams(1)
    assert any(thread.name == "gerrit stream-events" for thread in threading.enumerate())
