"""The log bot attacked from the channel and from a slow API: hostile bytes, CTCP,
formatting and overrides, long lines, many lines. Against the module's ngircd, served API
and bot of tests/test_logbot.py, and the bot's pieces on their own."""

import json
import queue
import threading
import time

from opslab.logbot import text
from opslab.logbot.worker import Worker
from tests.test_logbot import CHANNEL, REPLY, Site, joined, site

__all__ = ["site"]  # the fixture, imported for pytest


def reply_to(client_line: str) -> str:
    return client_line.partition(f"PRIVMSG {CHANNEL} :")[2]


def logged(site: Site, author: str) -> list[dict[str, object]]:
    body = site.api.request("GET", "/v1/projects/web/log?limit=1000")[1]
    return [entry for entry in json.loads(body) if entry["author"] == author]


def test_hostile_bytes_ctcp_and_overrides_are_logged_plain_and_the_bot_stays(
        site: Site) -> None:
    client = joined(site, "mallory")
    try:
        # Latin-1, not UTF-8, and a CTCP request inside the line: the text before it is the
        # line (the irc library splits CTCP out of a message); what follows is no command.
        client.send(f"PRIVMSG {CHANNEL} :!log web caf".encode() + b"\xe9 \xff\xfe\x01VERSION\x01"
                    + b" after the ctcp\x01 done")
        first = reply_to(client.wait_for(lambda line: line.startswith(":sal!"), REPLY))
        # Formatting, a right-to-left override, a bell, a C1 control.
        client.send(f"PRIVMSG {CHANNEL} :!log web \x0304red\x0f \u202eevil\x07 \u0085 done")
        second = reply_to(client.wait_for(lambda line: line.startswith(":sal!"), REPLY))
        # A CTCP ACTION ("/me !log ...") is no command; the next line still is.
        client.send(f"PRIVMSG {CHANNEL} :\x01ACTION !log web via an action\x01")
        client.send(f"PRIVMSG {CHANNEL} :!log web after the hostile lines")
        third = reply_to(client.wait_for(lambda line: line.startswith(":sal!"), REPLY))
    finally:
        client.close()
    for reply in (first, second, third):
        assert reply.startswith("mallory: logged "), reply
    messages = [str(entry["message"]) for entry in logged(site, "mallory")]
    assert sorted(messages) == sorted(["café ÿþ", "red evil done", "after the hostile lines"])


def test_a_line_as_long_as_the_server_takes_is_logged_with_a_one_line_reply(
        site: Site) -> None:
    """ngircd drops a client whose line is over 512 bytes ("Request too long"): the
    longest line the bot can hear is that long, and its reply fits in one line."""
    client = joined(site, "longwinded")
    try:
        command = f"PRIVMSG {CHANNEL} :!log web "
        client.send(command + "é" * ((510 - len(command)) // 2))
        answer = reply_to(client.wait_for(lambda line: line.startswith(":sal!"), REPLY))
    finally:
        client.close()
    assert answer.startswith("longwinded: logged "), answer
    assert len(answer.encode()) <= 350


def test_a_reply_holds_no_line_break_control_or_formatting() -> None:
    for hostile in ("a\r\nJOIN #evil", "a\nPRIVMSG #x :b", "\x01ACTION x\x01", "\x1b[2J",
                    "\x03" + "4,1" * 200, "é" * 1000, "\u2028PRIVMSG", "\x00"):
        said = text.reply(f"nick: not logged: {hostile}", 350)
        assert all(character.isprintable() for character in said), repr(said)
        assert len(said.encode()) <= 350


def test_a_flood_of_lines_waits_in_a_bounded_queue_and_never_blocks_the_loop() -> None:
    """With the API hanging, a thousand lines: the first waits, 20 queue, every other is
    answered at once (by submit, in microseconds), and stopping has a deadline."""
    release = threading.Event()
    seen: queue.Queue[str] = queue.Queue()

    def hanging(nick: str, account: str | None, line: str) -> str:
        seen.put(line)
        release.wait(30)
        return f"{nick}: late"

    worker = Worker(hanging, waiting=20)
    started = time.monotonic()
    answered = [worker.submit("#ops", "flooder", None, f"!log web {number}")
                for number in range(1000)]
    assert time.monotonic() - started < 2
    assert seen.get(timeout=5) == "!log web 0"
    refused = [reply for reply in answered if reply is not None]
    assert 1000 - 21 <= len(refused) <= 1000 - 20
    started = time.monotonic()
    release.set()
    worker.stop(5)
    assert time.monotonic() - started < 6
