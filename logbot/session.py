"""The bot on IRC: one connection, kept up, and what it does with what it hears.

On the jaraco ``irc`` library's reactor, driven by :meth:`LogBot.run`'s own
loop, which between reads connects when a reconnect is due and watches the
connection: no registration within ``connect_timeout``, or nothing heard for
``ping_timeout`` (the bot pings after ``ping_interval`` of quiet), and the
connection is dropped and made again. Every socket has a timeout, so no
write or TLS handshake waits for ever on a server that hangs.

Capabilities (IRCv3): ``CAP LS 302`` goes out before NICK and USER, so the
server holds registration until ``CAP END``; the bot asks for ``sasl`` (when
configured: then the server must offer it and accept the account, or the
bot does not go on) and ``account-tag`` (each message names its sender's
services account).
"""

import base64
import logging
import socket
import ssl
import threading
import time

import irc.client
from jaraco.stream import buffer

from opslab.config import LogbotSettings

from . import text
from .pacing import Backoff, ReplyLimit
from .worker import Relay, Worker

log = logging.getLogger(__name__)

# Room left in the 512 bytes of an IRC line for a reply's text, once the server puts the
# bot's prefix (nick!user@host, up to about 100 bytes) and PRIVMSG #channel in front.
REPLY_BYTES = 350
# SASL's AUTHENTICATE carries at most this many bytes of base64 per line.
SASL_CHUNK = 400
# A connection registered at least this long was a good one: the backoff starts over.
STABLE_SECONDS = 60.0
# How long each turn of the loop waits for the server before it looks at the clock.
TICK = 0.5


class LogBot:
    """The bot for ``settings``: ``relay(nick, account, line)`` logs a line and says what to
    answer (in a thread of its own: :mod:`.worker`); ``sasl_password`` is the SASL
    account's (None: no SASL); ``tls`` the context the server's certificate is checked
    with (None: cleartext)."""

    def __init__(self, settings: LogbotSettings, relay: Relay, sasl_password: str | None,
                 tls: ssl.SSLContext | None) -> None:
        if settings.server is None:
            raise ValueError("logbot.server is not set")
        self.settings = settings
        self.server: str = settings.server
        self.worker = Worker(relay)
        self.sasl_password = sasl_password
        self.tls = tls
        self.channels = {channel.lower() for channel in settings.channels}
        self.reactor = irc.client.Reactor()
        self.connection = self.reactor.server()
        # Text that is not UTF-8 is read as Latin-1, not dropped with the connection.
        self.connection.buffer_class = buffer.LenientDecodingLineBuffer
        self.backoff = Backoff(settings.reconnect_min_seconds, settings.reconnect_max_seconds)
        self.replies = ReplyLimit(settings.reply_burst, settings.reply_interval)
        self.next_attempt = 0.0
        self.connected_at = 0.0
        self.last_heard = 0.0
        self.registered_at: float | None = None
        self.pinged = False
        self.stopping = False
        self.offered: list[str] = []
        for event, handler in (("all_raw_messages", self._heard), ("cap", self._on_cap),
                               ("authenticate", self._on_authenticate),
                               ("saslsuccess", self._on_sasl_success),
                               ("saslfail", self._on_sasl_failure),
                               ("sasltoolong", self._on_sasl_failure),
                               ("saslaborted", self._on_sasl_failure),
                               ("nicklocked", self._on_sasl_failure),
                               ("welcome", self._on_welcome),
                               ("nicknameinuse", self._on_nick_in_use),
                               ("pubmsg", self._on_channel_message),
                               ("disconnect", self._on_disconnect)):
            self.reactor.add_global_handler(event, handler)

    def run(self, stop: threading.Event) -> None:
        """Stay connected until ``stop`` is set; then quit."""
        while not stop.is_set():
            if not self.connection.is_connected():
                if time.monotonic() >= self.next_attempt:
                    self._connect()
            else:
                self._watch()
            self.reactor.process_once(timeout=TICK)
            self._replies()
        self.stopping = True
        self.worker.stop(self.settings.api_timeout)
        if self.connection.is_connected():
            self.connection.disconnect("stopping")

    # The connection.

    def _connect(self) -> None:
        address = f"{self.server}:{self.settings.port}"
        log.info("connecting to %s (%s)", address, "TLS" if self.tls else "cleartext")
        self.offered = []
        self.registered_at = None
        self.pinged = False
        try:
            self.connection.connect(self.server, self.settings.port, self.settings.nick,
                                    ircname=self.settings.realname,
                                    connect_factory=self._open)
        except irc.client.ServerConnectionError as error:
            self._retry_later(f"cannot connect to {address}: {error}")
            return
        self.connected_at = self.last_heard = time.monotonic()

    def _open(self, address: tuple[str, int]) -> socket.socket:
        """A connected socket (TLS, with the server's certificate and name checked, unless
        configured otherwise) that has sent ``CAP LS 302``: the library sends NICK and USER
        next, and the server must see CAP first to hold registration for SASL."""
        timeout = self.settings.connect_timeout
        sock = socket.create_connection(address, timeout=timeout)
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.server)
            sock.settimeout(timeout)  # later writes too: a server that stops reading
            sock.sendall(b"CAP LS 302\r\n")
        except BaseException:
            sock.close()
            raise
        return sock

    def _watch(self) -> None:
        now = time.monotonic()
        if self.registered_at is None and now - self.connected_at > \
                self.settings.connect_timeout:
            self._drop(f"not registered within {self.settings.connect_timeout:g} s")
        elif now - self.last_heard > self.settings.ping_timeout:
            self._drop(f"nothing heard for {self.settings.ping_timeout:g} s (ping timeout)")
        elif now - self.last_heard > self.settings.ping_interval and not self.pinged:
            self.pinged = True
            self.connection.ping(self.server)

    def _drop(self, reason: str) -> None:
        log.warning("dropping the connection: %s", reason)
        self.connection.disconnect(reason)

    def _retry_later(self, reason: str) -> None:
        wait = self.backoff.next()
        self.next_attempt = time.monotonic() + wait
        log.warning("%s; connecting again in %.1f s", reason, wait)

    def _heard(self, connection: irc.client.ServerConnection, event: irc.client.Event) -> None:
        self.last_heard = time.monotonic()
        self.pinged = False

    def _on_disconnect(self, connection: irc.client.ServerConnection,
                       event: irc.client.Event) -> None:
        if self.registered_at is not None and \
                time.monotonic() - self.registered_at >= STABLE_SECONDS:
            self.backoff.reset()
        self.registered_at = None
        reason = f"disconnected: {text.plain(' '.join(event.arguments))[:200]}"
        if self.stopping:
            log.info("%s", reason)
        else:
            self._retry_later(reason)

    # Capabilities and SASL.

    def _on_cap(self, connection: irc.client.ServerConnection, event: irc.client.Event) -> None:
        arguments = list(event.arguments)
        command = arguments[0].upper() if arguments else ""
        listed = arguments[-1].split() if len(arguments) > 1 else []
        if command == "LS":
            self.offered += [name.partition("=")[0] for name in listed]
            if len(arguments) > 2 and arguments[1] == "*":
                return  # more lines of the list to come (302)
            sasl = self.settings.sasl_user is not None
            if sasl and "sasl" not in self.offered:
                self._drop("the server offers no SASL, and logbot.sasl_user is set")
                return
            wanted = [name for name in ("sasl", "account-tag")
                      if name in self.offered and (name != "sasl" or sasl)]
            if wanted:
                connection.cap("REQ", *wanted)
            else:
                connection.cap("END")
        elif command == "ACK":
            if "sasl" in listed:
                connection.send_items("AUTHENTICATE", "PLAIN")
            else:
                connection.cap("END")
        elif command == "NAK":
            if self.settings.sasl_user is not None:
                self._drop("the server refused the capabilities asked for, SASL among them")
            else:
                connection.cap("END")

    def _on_authenticate(self, connection: irc.client.ServerConnection,
                         event: irc.client.Event) -> None:
        if event.target != "+" or self.settings.sasl_user is None:
            return
        user = self.settings.sasl_user
        payload = base64.b64encode(f"\0{user}\0{self.sasl_password or ''}".encode())
        chunks = [payload[start:start + SASL_CHUNK]
                  for start in range(0, len(payload), SASL_CHUNK)]
        if len(chunks[-1]) == SASL_CHUNK:
            chunks.append(b"+")  # a last line of exactly 400 bytes says more is to come
        for chunk in chunks:
            connection.send_items("AUTHENTICATE", chunk.decode("ascii"))

    def _on_sasl_success(self, connection: irc.client.ServerConnection,
                         event: irc.client.Event) -> None:
        log.info("SASL: logged in as %s", self.settings.sasl_user)
        connection.cap("END")

    def _on_sasl_failure(self, connection: irc.client.ServerConnection,
                         event: irc.client.Event) -> None:
        self._drop(f"SASL as {self.settings.sasl_user} refused: "
                   f"{text.plain(' '.join(event.arguments))[:200]}")

    # Registered: channels and lines.

    def _on_welcome(self, connection: irc.client.ServerConnection,
                    event: irc.client.Event) -> None:
        self.registered_at = time.monotonic()
        log.info("registered as %s; joining %s", connection.get_nickname(),
                 ", ".join(self.settings.channels))
        for channel in self.settings.channels:
            connection.join(channel)

    def _on_nick_in_use(self, connection: irc.client.ServerConnection,
                        event: irc.client.Event) -> None:
        if self.registered_at is None:
            connection.nick(f"{connection.get_nickname()[:29]}_")

    def _on_channel_message(self, connection: irc.client.ServerConnection,
                            event: irc.client.Event) -> None:
        if str(event.target).lower() not in self.channels or not event.arguments:
            return
        line = text.log_line(event.arguments[0])
        if line is None:
            return
        nick = event.source.nick
        account = next((tag["value"] for tag in event.tags or []
                        if tag.get("key") == "account" and tag.get("value")), None)
        refusal = self.worker.submit(event.target, nick, account, line)
        if refusal is not None:
            self._say(connection, event.target, refusal)

    def _replies(self) -> None:
        for channel, reply in self.worker.done():
            if self.connection.is_connected():
                self._say(self.connection, channel, reply)
            else:
                log.warning("a reply in %s dropped: not connected", channel)

    def _say(self, connection: irc.client.ServerConnection, channel: str, reply: str) -> None:
        if not self.replies.allow():
            log.warning("a reply in %s dropped: the bot's own reply limit", channel)
            return
        connection.privmsg(channel, text.reply(reply, REPLY_BYTES))
