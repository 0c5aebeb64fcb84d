"""Events in by webhook (opslab.ci.webhook): real HTTP requests to the listener, with the
bodies and headers Gerrit's webhooks plugin sends (contract section 2), and the requests
it must refuse."""

import http.client
import json
import logging
import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opslab.ci import webhook
from opslab.ci.events import (
    MAX_EVENT_BYTES,
    CommentAdded,
    Event,
    PatchsetCreated,
    SeenEvents,
    parse_event,
)
from opslab.ci.webhook import WebhookError, WebhookListener, read_secret
from opslab.config import CiSettings

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

SECRET = "s3cret-Of-The-webhook_0123456789"
PLUGIN_HEADERS = {"Content-Type": "application/json; charset=utf-8",
                  "X-Origin-Url": "https://review.example.org/"}
REV = "c" * 40


def comment_3x(number: int = 42, text: str = "recheck", created: int = 1_700_000_100,
               project: Any = "demo") -> dict[str, Any]:
    """A comment-added event as Gerrit 3.x makes it; ``project`` the top-level one."""
    return {
        "type": "comment-added", "eventCreatedOn": created, "project": project,
        "refName": "refs/heads/master", "changeKey": {"id": "I" + "0" * 40},
        "change": {"project": "demo", "branch": "master", "id": "I" + "0" * 40,
                   "number": number, "subject": "Fix", "status": "NEW",
                   "owner": {"name": "Dev", "email": "dev@example.org", "username": "dev"}},
        "patchSet": {"number": 1, "revision": REV, "ref": f"refs/changes/42/{number}/1"},
        "author": {"name": "Rev", "email": "rev@example.org", "username": "rev"},
        "approvals": [{"type": "Code-Review", "description": "Code-Review", "value": "0"}],
        "comment": f"Patch Set 1:\n\n{text}",
    }


def patchset_2x() -> dict[str, Any]:
    """A patchset-created event as Gerrit 2.x makes it: numbers as strings, no top level."""
    return {
        "type": "patchset-created", "eventCreatedOn": "1600000000",
        "change": {"project": "demo", "branch": "master", "number": "7",
                   "id": "I" + "1" * 40, "subject": "Old"},
        "patchSet": {"number": "2", "revision": "b" * 40, "uploader": {"username": "dev"}},
    }


class Client:
    """Requests to a listener, as the plugin makes them unless told otherwise."""

    def __init__(self, listener: WebhookListener) -> None:
        self.listener = listener

    def request(self, body: bytes | None, path: str | None = None, method: str = "POST",
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.listener.port, timeout=5)
        try:
            connection.request(method, path if path is not None else
                               f"/gerrit-events/{SECRET}", body=body,
                               headers=PLUGIN_HEADERS if headers is None else headers)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def post(self, event: Any, **kwargs: Any) -> tuple[int, str]:
        return self.request(json.dumps(event).encode(), **kwargs)


@pytest.fixture
def events() -> "queue.Queue[Event]":
    return queue.Queue()


@pytest.fixture
def seen() -> SeenEvents:
    return SeenEvents(3600, 1000)


@pytest.fixture
def listen(events: "queue.Queue[Event]",
           seen: SeenEvents) -> Iterator[Callable[[], WebhookListener]]:
    started: list[WebhookListener] = []

    def start() -> WebhookListener:
        listener = WebhookListener("127.0.0.1", 0, SECRET, events, seen)
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        assert listener.stop(timeout=5), "the listener's threads did not end"


@pytest.fixture
def client(listen: Callable[[], WebhookListener]) -> Client:
    return Client(listen())


def test_an_event_is_queued_once_and_answered_200(
        client: Client, events: "queue.Queue[Event]") -> None:
    assert client.post(comment_3x()) == (200, "queued\n")
    assert client.post(comment_3x()) == (200, "already seen\n")  # the plugin's retry
    event = events.get_nowait()
    assert isinstance(event, CommentAdded)
    assert (event.change.number, event.patchset.number, event.account and
            event.account.username) == (42, 1, "rev")
    assert events.empty()
    assert (client.listener.queued, client.listener.duplicates) == (1, 1)


def test_both_generations_and_the_plugins_project_object(
        client: Client, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    assert client.post(patchset_2x())[0] == 200
    assert client.post(comment_3x(43, project={"name": "demo"}))[0] == 200
    first, second = events.get_nowait(), events.get_nowait()
    assert isinstance(first, PatchsetCreated)
    assert (first.change.number, first.patchset.number, first.project) == (7, 2, "demo")
    assert isinstance(second, CommentAdded)
    assert second.project == "demo"
    # The same comment as stream-events sends it (project a string) is the same event:
    # the key is shared with the SSH path through `seen`.
    streamed = parse_event(json.dumps(comment_3x(43)))
    assert isinstance(streamed, CommentAdded)
    assert not seen.first_time(streamed.key)


def test_the_same_event_by_ssh_first_is_not_queued_again(
        client: Client, events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    streamed = parse_event(json.dumps(comment_3x(44)))
    assert isinstance(streamed, CommentAdded)
    assert seen.first_time(streamed.key)  # the SSH reader had it
    assert client.post(comment_3x(44, project={"name": "demo"})) == (200, "already seen\n")
    assert events.empty()


@pytest.mark.parametrize("path", [
    "/gerrit-events/wrong-secret-0123456789abc", "/gerrit-events/", "/gerrit-events",
    f"/gerrit-events/{SECRET[:-1]}", f"/gerrit-events/{SECRET}x", f"/gerrit-events/{SECRET}/",
    f"/other/{SECRET}", "/", f"/gerrit-events/{SECRET.upper()}",
])
def test_a_wrong_or_missing_secret_is_a_bare_404_never_logged(
        client: Client, events: "queue.Queue[Event]", path: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="opslab")
    assert client.post(comment_3x(), path=path) == (404, "")
    assert events.empty()
    assert client.listener.refused == 1
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused a request from 127.0.0.1" in logged
    assert "/" not in logged  # no part of the path asked for, secret or not


def test_the_secret_is_never_logged_on_success_either(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert client.post(comment_3x())[0] == 200
    assert client.post(comment_3x())[0] == 200
    assert client.request(b"{", headers=PLUGIN_HEADERS)[0] == 400
    assert client.request(None, method="GET")[0] == 405
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_a_query_string_after_the_secret_is_ignored(client: Client) -> None:
    assert client.post(comment_3x(), path=f"/gerrit-events/{SECRET}?from=gerrit") == \
        (200, "queued\n")


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object but a list"),
    (b"\xff\xfe", "not UTF-8"),
    (b"", "empty"),
    (b"{}", "no type"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_a_body_that_is_no_gerrit_event_is_400(
        client: Client, events: "queue.Queue[Event]", body: bytes, reason: str) -> None:
    status, text = client.request(body)
    assert status == 400
    assert reason in text
    assert events.empty()


def test_a_gerrit_event_opslab_cannot_read_is_200_so_the_plugin_does_not_retry(
        client: Client, events: "queue.Queue[Event]",
        caplog: pytest.LogCaptureFixture) -> None:
    # A comment-added without its patch set: retrying the same bytes changes nothing.
    event = comment_3x()
    del event["patchSet"]
    status, text = client.post(event)
    assert status == 200
    assert text.startswith("ignored: comment-added without patchSet")
    assert events.empty()
    assert client.listener.unreadable == 1
    assert "skipped: malformed Gerrit comment-added event" in caplog.text


def test_an_event_of_another_type_is_queued_as_is(
        client: Client, events: "queue.Queue[Event]") -> None:
    assert client.post({"type": "project-created", "projectName": "new",
                        "projectHead": "refs/heads/main"}) == (200, "queued\n")
    assert events.get_nowait().type == "project-created"


def test_content_types_as_the_plugin_sends_them(client: Client) -> None:
    body = json.dumps(comment_3x()).encode()
    for kind in ("application/json; charset=utf-8", "application/json",
                 "Application/JSON;charset=UTF-8", 'application/json; charset="utf-8"'):
        assert client.request(body, headers={"Content-Type": kind})[0] == 200
    for kind in ("text/plain", "application/x-www-form-urlencoded",
                 "application/json; charset=latin-1", ""):
        assert client.request(body, headers={"Content-Type": kind})[0] == 415


def test_a_body_without_a_length_is_411(client: Client) -> None:
    # The request whole in one write: the endpoint answers from the headers, and a client
    # still writing its body after that would race the close (a broken pipe, not a 411).
    body = json.dumps(comment_3x()).encode()
    head = (f"POST /gerrit-events/{SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer, _ = raw_request(client.listener.port, head, chunked)
    assert answer.startswith(b"HTTP/1.0 411") or answer.startswith(b"HTTP/1.1 411"), answer


def raw_request(port: int, head: bytes, body: bytes = b"",
                timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``head`` (and ``body``), read the whole answer: it and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_a_body_over_the_bound_is_refused_before_it_is_read(client: Client) -> None:
    # Only the headers are sent: the answer comes without waiting for the 5 MiB.
    length = MAX_EVENT_BYTES + 1
    head = (f"POST /gerrit-events/{SECRET} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()
    answer, took = raw_request(client.listener.port, head)
    assert answer.startswith(b"HTTP/1.0 413 ")
    assert took < 2.0
    assert client.listener.refused == 1


def test_a_huge_body_sent_anyway_gets_the_refusal_and_nothing_is_queued(
        client: Client, events: "queue.Queue[Event]") -> None:
    body = b'{"type": "comment-added", "comment": "' + b"x" * (MAX_EVENT_BYTES + 10) + b'"}'
    try:
        status, _ = client.request(body)
        assert status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed under a client still sending: refused all the same
    assert events.empty()


def test_a_slow_sender_is_cut_off_at_the_deadline(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "REQUEST_DEADLINE", 0.5)
    head = (f"POST /gerrit-events/{SECRET} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n").encode()
    answer, took = raw_request(client.listener.port, head, b'{"type": ')
    assert answer == b""  # no answer: the request never came whole
    assert 0.4 < took < 3.0


def test_other_methods_on_the_endpoint_are_405(client: Client) -> None:
    assert client.request(None, method="GET")[0] == 405
    assert client.request(None, method="PUT", headers={})[0] == 405
    assert client.request(None, method="GET", path="/gerrit-events/nope")[0] == 404


def test_connections_past_the_maximum_are_closed_and_the_rest_served(
        events: "queue.Queue[Event]", seen: SeenEvents) -> None:
    client = Client(WebhookListener("127.0.0.1", 0, SECRET, events, seen, max_connections=2))
    client.listener.start()
    stalled = [socket.create_connection(("127.0.0.1", client.listener.port), timeout=5)
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while len(client.listener._server._active) < 2:  # both accepted, holding a slot
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer, _ = raw_request(client.listener.port, b"GET / HTTP/1.0\r\n\r\n")
        assert answer == b""  # the third: closed unanswered
    finally:
        for sock in stalled:
            sock.close()
    try:
        deadline = time.monotonic() + 5
        while not client.listener._server.idle():  # the slots back once both end
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.request(None, method="GET")[0] == 405
    finally:
        assert client.listener.stop(5)


def test_stop_cuts_a_request_under_way_and_joins_within_its_deadline(
        listen: Callable[[], WebhookListener]) -> None:
    listener = listen()
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    try:
        sock.sendall(f"POST /gerrit-events/{SECRET} HTTP/1.1\r\n".encode())
        time.sleep(0.1)
        started = time.monotonic()
        assert listener.stop(timeout=0.5)
        assert time.monotonic() - started < 2.0
        assert sock.recv(100) == b""
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", listener.port), timeout=1).close()


def test_the_secret_file(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text(SECRET + "\n")
    assert read_secret(str(good)) == SECRET
    for bad in ("short", "has a space in it 0123456789", "slash/in/it/0123456789abc",
                "percent%2Fencoded0123456789"):
        path = tmp_path / "bad"
        path.write_text(bad)
        with pytest.raises(WebhookError) as raised:
            read_secret(str(path))
        assert bad not in str(raised.value)
        assert "openssl rand -hex 32" in str(raised.value)
    with pytest.raises(WebhookError, match=r"cannot read ci\.webhook_secret_file"):
        read_secret(str(tmp_path / "missing"))


def test_from_settings(tmp_path: Path, events: "queue.Queue[Event]",
                       seen: SeenEvents) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    listener = WebhookListener.from_settings(
        CiSettings(webhook_listen="127.0.0.1:0", webhook_secret_file=str(secret_file)),
        events, seen)
    listener.start()
    try:
        assert Client(listener).post(comment_3x()) == (200, "queued\n")
    finally:
        assert listener.stop(5)
    with pytest.raises(WebhookError, match=r"until ci\.webhook_listen"):
        WebhookListener.from_settings(CiSettings(), events, seen)
    with pytest.raises(WebhookError, match="is not HOST:PORT"):
        WebhookListener.from_settings(CiSettings(webhook_listen="nowhere",
                                                 webhook_secret_file=str(secret_file)),
                                      events, seen)
