"""What the client prints: tables and ``key: value`` lines for people, JSON for scripts.

Everything shown comes from the API, and much of it from other people (a
project's description, a log message, a run's subject), so no character of
it may steer the terminal: control characters (C0, DEL and C1, whose CSI
starts escape sequences too), invisible formatting (right-to-left overrides,
zero-width characters), line and paragraph separators, surrogates and
unassigned code points are shown as Python writes them (``\\x1b``,
``\\u202e``). ``--json`` prints the API's document with every character
outside ASCII escaped by JSON itself, so it is inert on a terminal too, and
parses back to exactly what the API said. Headers are bold on a terminal
only (not with ``NO_COLOR`` or ``TERM=dumb``).
"""

import datetime
import json
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import IO, Any

# Unicode categories shown escaped: controls, format, separators of lines and
# paragraphs, surrogates, private use, unassigned (noncharacters included).
_ESCAPED = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(value: Any) -> str:
    """``value`` as text no terminal obeys: every character of :data:`_ESCAPED` escaped."""
    text = value if isinstance(value, str) else _plain(value)
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED:
        return char
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _plain(value: Any) -> str:
    """A cell's text: null as '-', lists joined by ', ', mappings and numbers as JSON."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(shown(item) for item in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def when(value: Any) -> Any:
    """An RFC 3339 time of the API's as people read it, to the second, in UTC
    (``2026-11-30 10:05:41Z``); anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if moment.tzinfo else "")


def typed(value: Any) -> str:
    """A value whose type matters (a class parameter) as compact JSON: ``8080`` is a
    number, ``"8080"`` a text."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else
               0 if unicodedata.combining(char) else 1 for char in text)


def _styled(stream: IO[str]) -> bool:
    return (stream.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM", "") != "dumb")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          stream: IO[str] | None = None) -> None:
    """``rows`` under ``headers``, in columns aligned with two spaces between them; the last
    column unpadded. Nothing but the headers when there are no rows."""
    out = stream or sys.stdout
    cells = [[shown(value) for value in row] for row in rows]
    widths = [max([width(header)] + [width(row[index]) for row in cells])
              for index, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [value + " " * (widths[index] - width(value))
                  for index, value in enumerate(values[:-1])]
        return "  ".join([*padded, values[-1]]).rstrip()

    heading = line(list(headers))
    out.write((f"\x1b[1m{heading}\x1b[0m" if _styled(out) else heading) + "\n")
    for row in cells:
        out.write(line(row) + "\n")


def fields(pairs: Iterable[tuple[str, Any]], stream: IO[str] | None = None) -> None:
    """``name: value`` lines, the values aligned."""
    out = stream or sys.stdout
    pairs = list(pairs)
    column = max((len(name) for name, _ in pairs), default=0) + 2
    for name, value in pairs:
        out.write(f"{name + ':':<{column}}{shown(value)}".rstrip() + "\n")


def section(title: str, stream: IO[str] | None = None) -> None:
    """A blank line and a title, before a table of its own."""
    out = stream or sys.stdout
    out.write(f"\n\x1b[1m{title}\x1b[0m\n" if _styled(out) else f"\n{title}\n")


def print_json(document: Any, stream: IO[str] | None = None) -> None:
    """``document`` as indented JSON, non-ASCII escaped (inert on a terminal, lossless)."""
    out = stream or sys.stdout
    out.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n")


def message(text: str, stream: IO[str] | None = None) -> None:
    """A line for people (on stdout), its API-given parts escaped by the caller."""
    (stream or sys.stdout).write(text + "\n")
