"""The kinds of check, one module each, and what they share.

A kind module has a docstring that is its documentation, ``FIELDS`` (the
keys a check of that kind takes, with their types: :class:`Field`) and
``check(values, context) -> str``, which returns what it found when the
check holds and raises :class:`Failed` when it does not. A kind never
waits longer than ``context.left()``; the runner retries and keeps the
deadlines (:mod:`opslab.smoketests.runner`).
"""

import importlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

NAMES = ("port", "http", "service", "process", "file", "command", "package", "user", "group")


class Failed(Exception):
    """The check does not hold: ``message`` says what was found, ``output`` what explains it."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.output = output


@dataclass(frozen=True)
class Field:
    """One key of a kind: its types, whether it must be given, its bounds."""

    types: tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # A list of these types is accepted too (for "all of these").
    many: bool = False
    # Said after "must be ..." when the type is wrong: how to write it.
    note: str = ""
    # A text here is a shell line: references are filled in quoted for the shell
    # (opslab.smoketests.values), so a value cannot add words or commands to it.
    shell_line: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this field, or None."""
        if self.many and isinstance(value, list):
            if not value:
                return "must not be an empty list"
            for item in value:
                found = self.problem(item)
                if found is not None:
                    return found
            return None
        # YAML's true is an int to Python: a bool is only taken where a bool is asked.
        if isinstance(value, bool) and bool not in self.types:
            return f"must be {self.describe()}, not a boolean"
        if not isinstance(value, self.types):
            note = f": {self.note}" if self.note else ""
            return f"must be {self.describe()}, not {type(value).__name__}{note}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, not {value!r}"
        if self.minimum is not None and isinstance(value, int | float) \
                and not self.minimum <= value <= (self.maximum or float("inf")):
            return (f"must be between {_bound(self.minimum)} and "
                    f"{_bound(self.maximum or float('inf'))}, not {value!r}")
        if isinstance(value, str) and ("\x00" in value or len(value) > 10000):
            return "must be a text without NUL of at most 10000 characters"
        return None

    def describe(self) -> str:
        names = {str: "a text", int: "a whole number", float: "a number", bool: "true or false",
                 dict: "a mapping", list: "a list"}
        text = " or ".join(names.get(kind, kind.__name__) for kind in self.types)
        return f"{text} (or a list of them)" if self.many else text


def _bound(value: float) -> str:
    """A bound as people write it: 4294967294, not :g's 4.29497e+09."""
    if value in (float("inf"), float("-inf")) or value != int(value):
        return f"{value:g}"
    return str(int(value))


@dataclass(frozen=True)
class Context:
    """What a kind needs to know besides its values."""

    timeout: float  # seconds, for this attempt
    target: str | None  # the address looked at from outside; None: this host, from inside
    deadline: float  # time.monotonic() at which this attempt's timeout is up

    def left(self) -> float:
        """Seconds left of this attempt: what each of a kind's calls may take, so that two
        or three calls in a row (systemctl, dpkg) share one timeout."""
        return max(0.05, self.deadline - time.monotonic())


def kind(name: str) -> ModuleType:
    """The module of kind ``name`` (one of NAMES)."""
    return importlib.import_module(f"{__name__}.{name}")


def text_list(value: str | list[str] | None) -> list[str]:
    """A field that takes one text or a list of them, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def quoted(value: Any, limit: int = 200) -> str:
    """``value`` as it appears in a message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def tail(text: str | bytes | None, limit: int = 2000) -> str:
    """The end of a command's output, for a message."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-limit:]


def unknown_keys(values: Mapping[str, Any], fields: Mapping[str, Field]) -> list[str]:
    return [key for key in values if key not in fields]
