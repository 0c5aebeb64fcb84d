"""``opslab logbot`` (issue 14) for real: Debian's ngircd started by the tests, the API
served by gunicorn on the real slapd, the bot as its own process, and test clients in the
channel. One server, one API and one bot for the module; the flood and TLS bots apart."""

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opslab.logbot import text
from opslab.logbot.pacing import Backoff, ReplyLimit
from opslab.slapd import ThrowawaySlapd, free_port
from tests.certificates import ThrowawayCa
from tests.conftest import BASE
from tests.ircd import ADDRESS, BotProcess, IrcClient, Ngircd, Services
from tests.served_api import ServedApi
from tests.test_logbot_api import add_bot_account

BOT_ACCOUNT = "ircbot"
BOT_PASSWORD = "ircbot-password-never-shown"
CHANNEL = "#ops"
NICK_LIMIT = 3
REPLY = 60.0  # seconds to wait for an answer: generous for a busy machine


def bot_settings(ircd: Ngircd, api: ServedApi, password_file: Path, nick: str, channel: str,
                 **more: Any) -> dict[str, Any]:
    """A bot's settings: cleartext to ``ircd`` (``more`` overrides), the API as BOT_ACCOUNT,
    quick to reconnect."""
    return {"server": "127.0.0.1", "port": ircd.port, "tls": False, "nick": nick,
            "channels": [channel], "api_url": api.url, "api_user": BOT_ACCOUNT,
            "api_password_file": str(password_file), "api_timeout": 10,
            "connect_timeout": 10, "reconnect_min_seconds": 0.2, "reconnect_max_seconds": 2,
            "reply_burst": 50, "reply_interval": 0.1, **more}


class Site:
    """The module's ngircd, served API and bot, and a place for more bots' files."""

    def __init__(self, work: Path, ircd: Ngircd, api: ServedApi, bot: BotProcess,
                 password_file: Path, ca: ThrowawayCa) -> None:
        self.work = work
        self.ircd = ircd
        self.api = api
        self.bot = bot
        self.password_file = password_file
        self.ca = ca

    def settings(self, nick: str, channel: str, **more: Any) -> dict[str, Any]:
        return bot_settings(self.ircd, self.api, self.password_file, nick, channel, **more)

    def entry(self, reply: str) -> dict[str, Any]:
        """The API's entry a bot's reply links to."""
        link = reply.rpartition(" ")[2]
        page, _, anchor = link.partition("#log-")
        assert page.startswith(f"{self.api.url}/log/"), reply
        status, body = self.api.request("GET", page.removeprefix(self.api.url))
        assert status == 200
        assert f'id="log-{anchor}"'.encode() in body  # the page shows the entry
        status, body = self.api.request("GET", f"/v1/log/{anchor}")
        assert status == 200
        document: dict[str, Any] = json.loads(body)
        assert page.endswith(f"/log/{document['project']}")
        return document


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, slapd: ThrowawaySlapd,
         people: None) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("logbot")
    add_bot_account(slapd, BOT_ACCOUNT, BOT_PASSWORD)
    password_file = work / "bot.password"
    password_file.write_text(BOT_PASSWORD + "\n")
    password_file.chmod(0o600)
    ca = ThrowawayCa(work / "ca", ADDRESS, "opslab logbot test")
    ircd = Ngircd(work / "ircd", ca)
    (work / "api").mkdir()
    api = ServedApi(work / "api", slapd, BASE, {"api": {
        "bot_accounts": [BOT_ACCOUNT], "bot_nick_limit": NICK_LIMIT, "bot_nick_window": 3600}})
    # The module's bot pings after 2 s of quiet and gives up after 8: a server that hangs
    # is found quickly.
    bot = BotProcess(work / "bot", bot_settings(ircd, api, password_file, "sal", CHANNEL,
                                                ping_interval=2, ping_timeout=8))
    ircd.start()
    try:
        api.start()
        try:
            bot.start()
            try:
                bot.wait_for_log(f"joining {CHANNEL}")
                yield Site(work, ircd, api, bot, password_file, ca)
            finally:
                bot.stop()
        finally:
            api.stop()
    finally:
        ircd.stop()
    assert BOT_PASSWORD not in bot.text()


def joined(site: Site, nick: str, channel: str = CHANNEL) -> IrcClient:
    return IrcClient(site.ircd.port, nick, channel)


def test_a_line_is_logged_as_the_nick_via_the_bot_with_a_link(site: Site) -> None:
    client = joined(site, "carol_irc")
    try:
        client.send(f"PRIVMSG {CHANNEL} :!log web restarted \x02apache\x02 on \x0304web1")
        reply = client.wait_for(lambda line: line.startswith(":sal!") and "PRIVMSG" in line,
                                REPLY).partition(f"PRIVMSG {CHANNEL} :")[2]
    finally:
        client.close()
    assert reply.startswith("carol_irc: logged "), reply
    entry = site.entry(reply)
    # The formatting is gone; the nick is the author, the bot the relay; no one vouched.
    assert (entry["project"], entry["author"], entry["message"], entry["via"],
            entry["person"]) == ("web", "carol_irc", "restarted apache on web1", BOT_ACCOUNT,
                                 None)


def test_an_unknown_project_is_refused_with_a_reply(site: Site) -> None:
    client = joined(site, "dave_irc")
    before = site.api.request("GET", "/v1/log?limit=1000")[1]
    try:
        client.send(f"PRIVMSG {CHANNEL} :!log nosuchproject did a thing")
        client.send(f"PRIVMSG {CHANNEL} :!logging is not a command")
        client.send(f"PRIVMSG {CHANNEL} :!log")
        replies = [client.wait_for(lambda line: line.startswith(":sal!"), REPLY)
                   for _ in range(2)]
    finally:
        client.close()
    texts = [line.partition(f"PRIVMSG {CHANNEL} :")[2] for line in replies]
    assert texts[0] == "dave_irc: not logged: no project 'nosuchproject'"
    assert texts[1].startswith("dave_irc: not logged: a chat line must read '!log PROJECT")
    assert site.api.request("GET", "/v1/log?limit=1000")[1] == before


def test_the_bot_account_may_do_nothing_else_over_http(site: Site) -> None:
    token = base64.b64encode(f"{BOT_ACCOUNT}:{BOT_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    for method, path, body in (("GET", "/v1/projects", None),
                               ("POST", "/v1/projects/web/log", {"message": "as the bot"}),
                               ("POST", "/v1/log/chat", {"line": "!log web no nick"}),
                               ("POST", "/v1/projects/web/hosts", {"name": "bot1"})):
        status, answer = site.api.request(method, path, body, headers)
        assert status == 403, (method, path, answer)
        assert b"bot account" in answer


def test_a_flood_is_limited_per_nick_at_the_api_and_in_the_bots_replies(site: Site) -> None:
    # A bot of its own with a small reply budget that never refills within the test.
    bot = BotProcess(site.work / "flood-bot", site.settings(
        "floodsal", "#flood", reply_burst=4, reply_interval=3600))
    bot.start()
    try:
        bot.wait_for_log("joining #flood")
        client = joined(site, "flooder", "#flood")
        try:
            for number in range(8):
                client.send(f"PRIVMSG #flood :!log web flood line {number}")
            bot.wait_for_log("a reply in #flood dropped", count=4)
            client.lines(1.0)
            replies = client.replies("floodsal", "#flood")
        finally:
            client.close()
    finally:
        assert bot.stop() == 0
    # The API took NICK_LIMIT lines of the nick and refused the next, saying when to try
    # again; the bot answered 4 times (its burst), no more.
    assert len(replies) == 4, replies
    assert all(reply.startswith("flooder: logged ") for reply in replies[:NICK_LIMIT])
    assert replies[3].startswith(f"flooder: not logged: flooder has logged {NICK_LIMIT} "
                                 f"entries through {BOT_ACCOUNT} in the last 3600 s")
    assert "retry in" in replies[3]
    body = site.api.request("GET", "/v1/projects/web/log?limit=1000")[1]
    logged = [entry["message"] for entry in json.loads(body) if entry["author"] == "flooder"]
    assert sorted(logged) == [f"flood line {number}" for number in range(NICK_LIMIT)]


def test_an_api_that_is_down_is_answered(site: Site) -> None:
    bot = BotProcess(site.work / "down-bot", site.settings(
        "downsal", "#down", api_url=f"http://127.0.0.1:{free_port()}"))
    bot.start()
    try:
        bot.wait_for_log("joining #down")
        client = joined(site, "patient", "#down")
        try:
            client.send("PRIVMSG #down :!log web while the API is away")
            reply = client.wait_for(lambda line: line.startswith(":downsal!"), REPLY)
        finally:
            client.close()
    finally:
        bot.stop()
    assert reply.endswith(":patient: not logged: the Server Admin Log is unavailable, try "
                          "again later")


def test_an_api_that_hangs_never_holds_the_irc_side(site: Site, hanging_server: int) -> None:
    # Each request hangs for its whole timeout (2 s), one after the other. Lines beyond the
    # queue's 20 are answered at once, which a bot waiting on the API could not do before
    # 40 s: the IRC side never waits for the API.
    bot = BotProcess(site.work / "hung-bot", site.settings(
        "hungsal", "#hung", api_url=f"http://127.0.0.1:{hanging_server}", api_timeout=2))
    bot.start()
    try:
        bot.wait_for_log("joining #hung")
        client = joined(site, "hurried", "#hung")
        try:
            for number in range(23):
                client.send(f"PRIVMSG #hung :!log web line {number}")
            client.wait_for(lambda line: line.startswith(":hungsal!")
                            and "too many lines are waiting" in line, 15)
            client.wait_for(lambda line: line.startswith(":hungsal!")
                            and "the Server Admin Log is unavailable" in line, REPLY)
        finally:
            client.close()
    finally:
        assert bot.stop() == 0


def test_the_bot_comes_back_after_the_server_restarts(site: Site) -> None:
    joins = site.bot.text().count(f"joining {CHANNEL}")
    drops = site.bot.text().count("disconnected")
    site.ircd.stop()
    site.bot.wait_for_log("disconnected", count=drops + 1)
    site.ircd.start()
    site.bot.wait_for_log(f"joining {CHANNEL}", count=joins + 1)
    client = joined(site, "after_restart")
    try:
        client.send(f"PRIVMSG {CHANNEL} :!log web back after the restart")
        reply = client.wait_for(lambda line: line.startswith(":sal!"), REPLY)
    finally:
        client.close()
    assert "after_restart: logged " in reply


def test_a_server_that_hangs_is_left_and_found_again(site: Site) -> None:
    joins = site.bot.text().count(f"joining {CHANNEL}")
    site.ircd.freeze()
    try:
        site.bot.wait_for_log("ping timeout")
    finally:
        site.ircd.thaw()
    site.bot.wait_for_log(f"joining {CHANNEL}", count=joins + 1)


def test_tls_against_the_test_ca_and_not_without_it(site: Site) -> None:
    trusting = BotProcess(site.work / "tls-bot", site.settings(
        "tlssal", "#tls", port=site.ircd.tls_port, tls=True, ca_file=str(site.ca.ca)))
    doubting = BotProcess(site.work / "doubting-bot", site.settings(
        "doubtsal", "#tls", port=site.ircd.tls_port, tls=True))
    trusting.start()
    doubting.start()
    try:
        trusting.wait_for_log("joining #tls")
        client = joined(site, "tls_user", "#tls")
        try:
            client.send("PRIVMSG #tls :!log web over TLS")
            reply = client.wait_for(lambda line: line.startswith(":tlssal!"), REPLY)
        finally:
            client.close()
        assert "tls_user: logged " in reply
        # The system's trust store does not know the test CA: no connection, and it says so.
        doubting.wait_for_log("certificate verify failed")
        assert "joining" not in doubting.text()
    finally:
        trusting.stop()
        doubting.stop()


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """InspIRCd with Atheme: accounts for the bot (SASL) and for carol, a directory
    person, and for someone who is no one in the directory."""
    network = Services()
    network.start()
    try:
        for account in ("salsasl", "carol", "stranger"):
            network.register(account, f"{account}-irc-password")
        yield network
    finally:
        network.stop()


def test_sasl_and_the_networks_account_name_the_person(site: Site, services: Services) -> None:
    sasl_file = site.work / "sasl.password"
    sasl_file.write_text("salsasl-irc-password\n")
    sasl_file.chmod(0o600)
    bot = BotProcess(site.work / "sasl-bot", site.settings(
        "salsasl", "#sasl", port=services.port, sasl_user="salsasl",
        sasl_password_file=str(sasl_file), accounts_are_uids=True))
    bot.start()
    clients = []
    try:
        bot.wait_for_log("SASL: logged in as salsasl")
        bot.wait_for_log("joining #sasl")
        # carol, logged in to her account under another nick; someone else who took the
        # nick "carol" without an account; a stranger whose account is no one's here.
        for nick, sasl in (("carol_laptop", ("carol", "carol-irc-password")),
                           ("carol", None),
                           ("stranger", ("stranger", "stranger-irc-password"))):
            clients.append(IrcClient(services.port, nick, "#sasl", sasl))
        entries = {}
        for client in clients:
            client.send(f"PRIVMSG #sasl :!log web said by {client.nick}")
            mine = f" :{client.nick}: logged "
            reply = client.wait_for(lambda line, mine=mine: line.startswith(":salsasl!")
                                    and mine in line, REPLY)
            entries[client.nick] = site.entry(reply.partition(" :")[2])
    finally:
        for client in clients:
            client.close()
        bot.stop()
    assert {nick: (entry["author"], entry["person"], entry["via"])
            for nick, entry in entries.items()} == {
        "carol_laptop": ("carol_laptop", "carol", BOT_ACCOUNT),
        "carol": ("carol", None, BOT_ACCOUNT),
        "stranger": ("stranger", None, BOT_ACCOUNT)}
    assert "salsasl-irc-password" not in bot.text()


def test_a_refused_sasl_login_is_not_gone_on_without(site: Site, services: Services) -> None:
    wrong = site.work / "wrong-sasl.password"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    bot = BotProcess(site.work / "wrong-sasl-bot", site.settings(
        "salwrong", "#sasl", port=services.port, sasl_user="salsasl",
        sasl_password_file=str(wrong)))
    bot.start()
    try:
        bot.wait_for_log("SASL as salsasl refused")
        bot.wait_for_log("connecting again in")
    finally:
        bot.stop()
    assert "joining" not in bot.text()
    # ngircd offers no SASL: a bot that must log in does not register there either.
    bot = BotProcess(site.work / "no-sasl-bot", site.settings(
        "salnosasl", CHANNEL, sasl_user="salsasl", sasl_password_file=str(wrong)))
    bot.start()
    try:
        bot.wait_for_log("the server offers no SASL")
    finally:
        bot.stop()
    assert "joining" not in bot.text()


def test_a_password_file_others_may_read_is_refused(site: Site, tmp_path: Path) -> None:
    loose = tmp_path / "loose.password"
    loose.write_text(BOT_PASSWORD)
    loose.chmod(0o644)
    config = tmp_path / "opslab.yaml"
    config.write_text(json.dumps({"logbot": site.settings(
        "loose", CHANNEL, api_password_file=str(loose))}))
    result = subprocess.run(
        [sys.executable, "-m", "opslab.cli", f"--config={config}", "logbot", "--check"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env={**os.environ})
    assert result.returncode == 2
    assert "has mode 0644" in result.stderr
    assert BOT_PASSWORD not in result.stdout + result.stderr


# The pieces that need no server.

def test_chat_text_is_made_plain_and_replies_cannot_break_the_line() -> None:
    assert text.plain("\x02bold\x02 \x0304,01red\x03 \x1ditalic\x0f \u202eevil\x01") == \
        "bold red italic evil"
    assert text.log_line("\x02!log\x02 web x") == "!log web x"
    assert text.log_line("!logs web x") is None
    assert text.log_line("say !log web x") is None
    hostile = "nick: not logged: no project 'x\r\nQUIT :bye'\x00"
    assert text.reply(hostile, 350) == "nick: not logged: no project 'x QUIT :bye'"
    long = text.reply("é" * 400, 350)
    assert len(long.encode()) <= 350
    assert long.endswith(text.ELLIPSIS)


def test_backoff_doubles_to_its_bound_with_jitter_and_replies_are_paced() -> None:
    backoff = Backoff(1, 8, jitter=lambda: 0.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next() == 1
    assert Backoff(1, 8, jitter=lambda: 1.0).next() == 0.5
    now = [0.0]
    limit = ReplyLimit(2, 10, clock=lambda: now[0])
    assert [limit.allow() for _ in range(3)] == [True, True, False]
    now[0] = 10.0
    assert [limit.allow(), limit.allow()] == [True, False]
