"""One way to log for every opslab command: the standard ``logging`` module, set up once.

Every module logs through ``logging.getLogger(__name__)`` (all below the
``opslab`` logger) and never configures logging itself; a command's entry
point calls :func:`setup` once (or, for a command that usually logs nothing,
such as a no-change ``opslab branch sync``, :mod:`opslab.lazylog` does both
at its first line, sparing it logging's import). A line reads::

    warning opslab.agent: the API is unreachable certname=web1.web.example.org trigger=drift

* **Levels journald understands.** Under systemd (``$JOURNAL_STREAM`` names
  the stream stderr is), every line starts with its syslog priority
  (``<4>`` for a warning, sd-daemon(3)), so ``journalctl -p warning`` shows
  exactly the warnings and errors; on a terminal the level is a word.
* **Context on every line.** :func:`context` gives a logger whose lines end
  with ``key=value`` pairs (certname, environment, commit, project,
  trigger, ...), values quoted when they hold spaces, so a line can be
  found and filtered by what it is about.
* **Commands with a stderr contract** (``opslab-enc``, ``opslab-ssh-keys``,
  the ``opslab branch`` commands) keep their documented lines: :func:`setup`
  with ``prefix`` writes ``PROG: error: ...`` for an error, ``PROG:
  warning: ...`` for a warning and ``PROG: ...`` otherwise (a critical line,
  such as an internal error's traceback, has no word either).
"""

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

ROOT = "opslab"
# sd-daemon(3): "<N>" at the start of a line sets its priority in the journal.
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                    logging.INFO: 6, logging.DEBUG: 7}
_WORDS = {logging.ERROR: "error: ", logging.WARNING: "warning: "}


class _Formatter(logging.Formatter):
    def __init__(self, prefix: str | None, journald: bool) -> None:
        super().__init__()
        self.prefix = prefix
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        pairs = getattr(record, "context", None)
        if pairs:
            message += "".join(f" {key}={_value(value)}" for key, value in pairs.items()
                               if value is not None)
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.prefix is not None:
            # The documented contract of such commands: "PROG: error: ...",
            # "PROG: warning: ...", and "PROG: ..." for what is neither.
            word = _WORDS.get(record.levelno, "")
            line = f"{self.prefix}: {word}{message}"
        else:
            line = f"{record.levelname.lower()} {record.name}: {message}"
        if self.journald:
            priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
            # Each line of a traceback is a journal entry of its own: all at this priority.
            line = "\n".join(f"<{priority}>{part}" for part in line.split("\n"))
        return line


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(char.isspace() or char in "\"=" for char in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Whatever ``sys.stderr`` is when a line is written (a test may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def under_journald(stream: IO[str]) -> bool:
    """Whether ``stream`` is the journal's (systemd sets ``$JOURNAL_STREAM`` to its
    device and inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def setup(level: int = logging.INFO, stream: IO[str] | None = None,
          prefix: str | None = None) -> None:
    """Send the ``opslab`` loggers' lines at ``level`` and above to ``stream`` (stderr).

    ``prefix``: every line is ``PREFIX: message``, the stderr contract of a
    command such as ``opslab-enc``. Calling it again replaces the handler.
    """
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(_Formatter(prefix, under_journald(stream or sys.stderr)))
    root = logging.getLogger(ROOT)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class Context(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line carries the same ``key=value`` pairs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["context"] = {**(self.extra or {}), **extra.get("context", {})}
        kwargs["extra"] = extra
        return msg, kwargs


def context(logger: logging.Logger | Context, **pairs: Any) -> Context:
    """``logger`` with ``pairs`` added to every line (None values are left out)."""
    if isinstance(logger, Context):
        base: Mapping[str, Any] = logger.extra or {}
        return Context(logger.logger, {**base, **pairs})
    return Context(logger, pairs)
