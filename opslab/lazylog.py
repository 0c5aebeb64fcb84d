"""Logging for a command that usually logs nothing: ``logging`` imported at the first line.

``import logging`` (with the traceback, linecache, tokenize, textwrap, string
and weakref modules it pulls in) is about a tenth of what a no-change
``opslab branch sync`` costs, the command a timer runs every minute on every
host, and that sync logs nothing. So the modules on its path take their
logger from :func:`logger` rather than ``logging.getLogger``, and the command
calls :func:`setup` here rather than :func:`opslab.log.setup`: both take
effect when the first line is logged, through :mod:`opslab.log` as for every
other command (same lines, same handler).

The one rule that comes with it: a module that such a command may import
after its :func:`setup` logs through :func:`logger`, never through
``logging.getLogger``, or its lines would miss the setup (logging's
last resort would write them bare, and only from warnings up);
``test_a_no_change_sync_imports_neither_logging_nor_argparse`` keeps the
sync's path honest. Where ``logging`` is imported already (a test, or a
command that imported a module logging the usual way), :func:`setup` sets up
at once.
"""

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opslab.log import Context

# opslab.log.setup's keyword arguments, until the first line is logged.
_pending: dict[str, Any] | None = None


def setup(**settings: Any) -> None:
    """:func:`opslab.log.setup` with ``settings``, done before the first line is logged
    through :func:`logger` (at once if ``logging`` is imported already)."""
    global _pending
    _pending = settings
    if "logging" in sys.modules:
        _set_up()


def _set_up() -> None:
    global _pending
    if _pending is not None:
        from opslab.log import setup as log_setup

        settings, _pending = _pending, None
        log_setup(**settings)


class Logger:
    """``opslab.log.context(logging.getLogger(name), **pairs)``, made when it first logs."""

    __slots__ = ("_logger", "name", "pairs")

    def __init__(self, name: str, pairs: dict[str, Any]) -> None:
        self.name = name
        self.pairs = pairs
        self._logger: Context | None = None

    def _get(self) -> "Context":
        if self._logger is None:
            import logging

            from opslab.log import context

            _set_up()
            self._logger = context(logging.getLogger(self.name), **self.pairs)
        return self._logger

    # stacklevel=2: the line is the caller's, not this module's.
    def debug(self, message: str, *args: Any) -> None:
        self._get().debug(message, *args, stacklevel=2)

    def info(self, message: str, *args: Any) -> None:
        self._get().info(message, *args, stacklevel=2)

    def warning(self, message: str, *args: Any) -> None:
        self._get().warning(message, *args, stacklevel=2)

    def error(self, message: str, *args: Any) -> None:
        self._get().error(message, *args, stacklevel=2)

    def exception(self, message: str, *args: Any) -> None:
        self._get().exception(message, *args, stacklevel=2)


def logger(name: str, **pairs: Any) -> Logger:
    """The logger ``name`` (a module's ``__name__``), with ``pairs`` on every line as
    :func:`opslab.log.context` gives them; ``logging`` is imported at its first line."""
    return Logger(name, pairs)
