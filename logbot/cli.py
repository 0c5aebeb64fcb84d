"""``opslab logbot``: the IRC log bot, until SIGTERM or SIGINT.

    opslab [--config FILE] logbot [--check]

``--check`` checks the settings and the secret files, and exits. Exit
status: 0 stopped by a signal (or checked); 2 it cannot start as configured
(the reason logged). Its settings are the ``logbot`` section
(docs/logbot.md).
"""

import argparse
import logging
import os
import signal
import ssl
import stat
import threading
from types import FrameType
from urllib.parse import urlsplit

from opslab import __version__
from opslab.apiclient import Client
from opslab.config import ConfigError, LogbotSettings, add_config_option, is_loopback, load
from opslab.files import read_secret
from opslab.log import setup
from opslab.names import has_control_characters

# At the top, so that without the irc library (the [logbot] extra) `opslab logbot` says
# which extra to install (opslab.cli) instead of failing later.
from .relay import Relay
from .session import LogBot

EXIT_USAGE = 2
log = logging.getLogger(__name__)


class SetupError(Exception):
    """The bot cannot start as configured; the message says which setting to fix."""


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab logbot ARGV``; ``config_path`` is ``opslab --config``."""
    parser = argparse.ArgumentParser(
        prog="opslab logbot",
        description="The IRC log bot: '!log PROJECT message' to the Server Admin Log.")
    add_config_option(parser, config_path)
    parser.add_argument("--check", action="store_true",
                        help="check the settings and secret files, and exit")
    arguments = parser.parse_args(argv)
    setup()
    try:
        settings = load(arguments.config).logbot
        check(settings)
        sasl_password = _secret(settings.sasl_password_file, "logbot.sasl_password_file") \
            if settings.sasl_user is not None else None
        _secret(settings.api_password_file, "logbot.api_password_file")
        tls = tls_context(settings)
    except (ConfigError, SetupError) as error:
        log.error("cannot start: %s", error)
        return EXIT_USAGE
    if arguments.check:
        return 0
    client = Client(settings.api_url or "", settings.api_password_file or "",
                    settings.api_timeout,
                    f"opslab-logbot/{__version__}", who="opslab logbot",
                    user=settings.api_user)
    bot = LogBot(settings, Relay(client, settings.link_url or settings.api_url or "",
                                 settings.accounts_are_uids), sasl_password, tls)
    stop = threading.Event()

    def stopping(number: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(number).name)
        stop.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stopping)
    bot.run(stop)
    return 0


def check(settings: LogbotSettings) -> None:
    """SetupError unless ``settings`` name a server, channels, the API and its account."""
    for key in ("server", "api_url", "api_user", "api_password_file"):
        if getattr(settings, key) is None:
            raise SetupError(f"logbot.{key} is not set")
    if not settings.channels:
        raise SetupError("logbot.channels is empty: the bot would listen nowhere")
    for channel in settings.channels:
        if channel[:1] not in ("#", "&") or any(char in channel for char in " ,\x07") \
                or len(channel) > 50 or has_control_characters(channel):
            raise SetupError(f"logbot.channels: {channel[:60]!r} is not a channel name")
    if not 0 < settings.port < 65536:
        raise SetupError("logbot.port must be a TCP port (1 to 65535)")
    if (settings.sasl_user is None) != (settings.sasl_password_file is None):
        raise SetupError("logbot.sasl_user and logbot.sasl_password_file go together")
    if settings.ca_file is not None and not settings.tls:
        raise SetupError("logbot.ca_file is set but logbot.tls is false")
    for key in ("api_timeout", "connect_timeout", "ping_interval", "ping_timeout",
                "reconnect_min_seconds"):
        if getattr(settings, key) <= 0:
            raise SetupError(f"logbot.{key} must be greater than 0")
    if settings.ping_timeout <= settings.ping_interval:
        raise SetupError("logbot.ping_timeout must be longer than logbot.ping_interval")
    if settings.reconnect_max_seconds < settings.reconnect_min_seconds:
        raise SetupError("logbot.reconnect_max_seconds is below logbot.reconnect_min_seconds")
    _check_url(settings.api_url or "", "logbot.api_url", private=True)
    if settings.link_url is not None:
        _check_url(settings.link_url, "logbot.link_url", private=False)


def _check_url(url: str, key: str, private: bool) -> None:
    """SetupError unless ``url`` is http:// or https:// with a host; with ``private`` (the
    bot's password goes along), cleartext only to this machine."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) \
            and (parts.port or 0) >= 0 and parts.username is None
    except ValueError:
        usable = False
    if not usable or has_control_characters(url) or " " in url:
        raise SetupError(f"{key} {url[:100]!r} is not an http:// or https:// URL with a host "
                         "(and no user in it)")
    if private and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise SetupError(f"{key} {url[:100]!r} is cleartext to another machine: the bot's "
                         "password would travel readable; use https://")


def _secret(path: str | None, key: str) -> str:
    """The secret in ``path``, a file only its owner may read (mode 0600); SetupError if it
    is not one, or empty. The message names the file, never what it holds."""
    if path is None:
        raise SetupError(f"{key} is not set")
    try:
        with open(path, "rb") as stream:
            status = os.fstat(stream.fileno())
    except OSError as error:
        raise SetupError(f"cannot read {key} {path}: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise SetupError(f"{key} {path} is not a regular file")
    if status.st_mode & 0o077:
        raise SetupError(f"{key} {path} has mode {stat.S_IMODE(status.st_mode):04o}: others "
                         f"may read it; run chmod 600 {path} (and change the password)")
    try:
        secret = read_secret(path)
    except (OSError, UnicodeDecodeError) as error:
        raise SetupError(f"cannot read {key} {path}: {error}") from None
    if not secret:
        raise SetupError(f"{key} {path} is empty")
    return secret


def tls_context(settings: LogbotSettings) -> ssl.SSLContext | None:
    """The context the IRC server's certificate and name are checked with (ca_file, else
    the system's trust store); None for cleartext (``tls: false``)."""
    if not settings.tls:
        log.warning("logbot.tls is false: the bot talks to %s in cleartext", settings.server)
        return None
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise SetupError(f"cannot read logbot.ca_file {settings.ca_file}: {error}") from None
