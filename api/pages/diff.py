"""A change's before and after, as a person reads it: what was added, removed and changed.

The audit log keeps each write's documents whole (``before``/``after`` JSON,
nested). They are compared field by field (a nested mapping's fields by their
dotted path): a list of values says which values came and went; a long or
multi-line text gets a line diff (difflib) whose changed lines mark the words
that changed, as a wiki's diff does; anything else shows its value before and
after. Values stay plain text here; the template escapes them.
"""

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

# A text longer than this, or with a line break, gets a line diff.
LONG_TEXT = 80
# Lines of context around each changed part of a text.
CONTEXT = 2
# How alike two lines must be (difflib's ratio of their words) to be shown as one edited.
ALIKE = 0.5
# difflib's SequenceMatcher takes time that grows with the product of its sequences' lengths
# (more when items repeat): two 64 KiB texts of repeated lines, or two lines of thousands of
# words, took minutes of a worker. Each text's diff may do at most this much work, counted
# as the pairs of equal lines (or words of lines compared) the matcher could try; what is
# beyond it is shown as lines gone and come whole, never compared.
MAX_WORK = 400_000

Kind = Literal["added", "removed", "changed", "unchanged"]
Opcode = tuple[Literal["replace", "delete", "insert", "equal"], int, int, int, int]
Mark = Literal["same", "del", "ins"]
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class Line:
    """One line of a text's diff: its numbers before and after (None where it is not), and
    its pieces, each marked same, del (only before) or ins (only after). A line with
    ``gap`` set stands for unchanged lines left out."""

    old: int | None
    new: int | None
    pieces: tuple[tuple[Mark, str], ...]
    gap: bool = False

    @property
    def sign(self) -> str:
        if self.gap:
            return "…"
        if self.old is None:
            return "+"
        if self.new is None:
            return "\u2212"  # a minus sign, as wide as the plus
        return " "


@dataclass(frozen=True)
class Field:
    """One field of the documents: ``path`` (dotted for nested fields) and how it changed.

    ``before``/``after`` are its values as text; ``added``/``removed`` the values
    a list gained and lost; ``lines`` a long text's line diff."""

    path: str
    kind: Kind
    before: str | None = None
    after: str | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)


def diff_documents(before: Any, after: Any) -> list[Field]:
    """The fields of ``before`` and ``after`` (documents, or None for a creation or a
    deletion), changed ones first in the order of their paths, unchanged ones last."""
    old, new = _flatten(before), _flatten(after)
    fields = [_field(path, old.get(path, _MISSING), new.get(path, _MISSING))
              for path in sorted(old.keys() | new.keys())]
    return [item for item in fields if item.kind != "unchanged"] + \
        [item for item in fields if item.kind == "unchanged"]


_MISSING = object()


def _flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted path: value}; anything else is one value at ``prefix``."""
    if document is None and not prefix:
        return {}
    if isinstance(document, dict) and document:
        flat: dict[str, Any] = {}
        for key, value in document.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "value": document}


def _field(path: str, before: Any, after: Any) -> Field:
    if before is _MISSING:
        return Field(path, "added", after=_text(after))
    if after is _MISSING:
        return Field(path, "removed", before=_text(before))
    if before == after:
        return Field(path, "unchanged", before=_text(before), after=_text(after))
    if isinstance(before, list) and isinstance(after, list):
        old, new = [_text(value) for value in before], [_text(value) for value in after]
        # Sets to look in: a list of thousands (a project's members) compared in linear time.
        old_set, new_set = set(old), set(new)
        return Field(path, "changed", before=_text(before), after=_text(after),
                     added=[value for value in new if value not in old_set],
                     removed=[value for value in old if value not in new_set])
    if isinstance(before, str) and isinstance(after, str) and _long(before, after):
        return Field(path, "changed", before=before, after=after,
                     lines=line_diff(before, after))
    return Field(path, "changed", before=_text(before), after=_text(after))


def _long(*texts: str) -> bool:
    return any("\n" in text or len(text) > LONG_TEXT for text in texts)


def _text(value: Any) -> str:
    """A value as a person reads it: text as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Budget:
    """The work a text's diff may still do (MAX_WORK at first)."""

    def __init__(self, work: int = MAX_WORK) -> None:
        self.left = work

    def take(self, work: int) -> bool:
        """True, and ``work`` taken, if that much is left; else False and nothing taken."""
        if work > self.left:
            return False
        self.left -= work
        return True


def _matching_work(old: list[str], new: list[str]) -> int:
    """A bound on the pairs of equal items SequenceMatcher would try: for each item of
    ``old``, how often it is in ``new``."""
    counts: dict[str, int] = {}
    for item in new:
        counts[item] = counts.get(item, 0) + 1
    return len(old) + len(new) + sum(counts.get(item, 0) for item in old)


class _Opcodes(difflib.SequenceMatcher[str]):
    """A SequenceMatcher that gives the opcodes it is handed (for its grouping)."""

    def __init__(self, opcodes: list[Opcode]) -> None:
        super().__init__(None, [], [], autojunk=False)
        self.given = opcodes

    def get_opcodes(self) -> list[Opcode]:
        return self.given


def _line_opcodes(old: list[str], new: list[str],
                  budget: _Budget) -> list[Opcode]:
    """difflib's opcodes of the lines ``old`` and ``new``: the common first and last lines
    found at once, the rest matched only within ``budget`` (else one replaced block)."""
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    old_end, new_end = len(old) - end, len(new) - end
    middle_old, middle_new = old[start:old_end], new[start:new_end]
    opcodes: list[Opcode] = []
    if start:
        opcodes.append(("equal", 0, start, 0, start))
    if budget.take(_matching_work(middle_old, middle_new)):
        opcodes += [(tag, i1 + start, i2 + start, j1 + start, j2 + start)
                    for tag, i1, i2, j1, j2 in
                    difflib.SequenceMatcher(None, middle_old, middle_new,
                                            autojunk=False).get_opcodes()]
    elif middle_old or middle_new:
        opcodes.append(("replace" if middle_old and middle_new else
                        "delete" if middle_old else "insert", start, old_end, start, new_end))
    if end:
        opcodes.append(("equal", old_end, len(old), new_end, len(new)))
    return opcodes or [("equal", 0, 0, 0, 0)]


def line_diff(before: str, after: str) -> list[Line]:
    """The lines of ``before`` and ``after`` that differ, with CONTEXT lines around each
    part and a gap line for those left out; a line replaced by one marks its words (all
    within MAX_WORK: beyond it, lines are shown gone and come whole)."""
    old, new = before.splitlines(), after.splitlines()
    budget = _Budget()
    lines: list[Line] = []
    groups = list(_Opcodes(_line_opcodes(old, new, budget)).get_grouped_opcodes(CONTEXT))
    for number, group in enumerate(groups):
        if number or group[0][1] > 0:
            lines.append(Line(None, None, (), gap=True))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [Line(i + 1, j1 + i - i1 + 1, (("same", old[i]),))
                          for i in range(i1, i2)]
                continue
            removed, added = old[i1:i2], new[j1:j2]
            # Lines replaced in order are paired while they stay alike (a line edited),
            # and their words compared; the rest went or came whole.
            paired = 0
            while paired < min(len(removed), len(added)) and _alike(removed[paired],
                                                                     added[paired], budget):
                was_pieces, now_pieces = _word_diff(removed[paired], added[paired])
                lines.append(Line(i1 + paired + 1, None, was_pieces))
                lines.append(Line(None, j1 + paired + 1, now_pieces))
                paired += 1
            lines += [Line(i1 + offset + 1, None, (("del", text),))
                      for offset, text in enumerate(removed[paired:], paired)]
            lines += [Line(None, j1 + offset + 1, (("ins", text),))
                      for offset, text in enumerate(added[paired:], paired)]
    if groups and groups[-1][-1][2] < len(old):
        lines.append(Line(None, None, (), gap=True))
    return lines


def _alike(was: str, now: str, budget: _Budget) -> bool:
    """Whether ``now`` reads as an edit of ``was`` (half their words or more the same), if
    the budget allows comparing them twice (here, and for their words); else False."""
    old, new = _WORDS.findall(was), _WORDS.findall(now)
    if not budget.take(2 * _matching_work(old, new)):
        return False
    return difflib.SequenceMatcher(None, old, new, autojunk=False).ratio() >= ALIKE


def _word_diff(was: str, now: str) -> tuple[tuple[tuple[Mark, str], ...],
                                            tuple[tuple[Mark, str], ...]]:
    """The pieces of a line before and after, the words that changed marked del and ins."""
    old, new = _WORDS.findall(was), _WORDS.findall(now)
    before: list[tuple[Mark, str]] = []
    after: list[tuple[Mark, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new,
                                                        autojunk=False).get_opcodes():
        if tag == "equal":
            before.append(("same", "".join(old[i1:i2])))
            after.append(("same", "".join(new[j1:j2])))
            continue
        if i2 > i1:
            before.append(("del", "".join(old[i1:i2])))
        if j2 > j1:
            after.append(("ins", "".join(new[j1:j2])))
    return _joined(before), _joined(after)


def _joined(pieces: list[tuple[Mark, str]]) -> tuple[tuple[Mark, str], ...]:
    """``pieces`` with neighbours of the same mark made one."""
    joined: list[tuple[Mark, str]] = []
    for mark, text in pieces:
        if joined and joined[-1][0] == mark:
            joined[-1] = (mark, joined[-1][1] + text)
        else:
            joined.append((mark, text))
    return tuple(joined)
