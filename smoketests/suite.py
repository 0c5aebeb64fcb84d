"""A host's checks, found and run: what the command and the agent call."""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .facts import gather, named
from .host import Applied
from .runner import DEFAULT_CONCURRENCY, Result, run
from .spec import Check, checks_for
from .values import Values


@dataclass(frozen=True)
class Outcome:
    results: list[Result]
    seconds: float


def checks_of(applied: Applied, only: list[str] | None = None) -> list[Check]:
    """The checks of the host's classes (of ``only`` those, when given) in its tree."""
    if applied.tree is None:
        return []
    classes = [name for name in applied.classes if only is None or name in only]
    return checks_for(applied.tree, classes)


def values_for(applied: Applied, facts: Mapping[str, Any],
               target: str | None) -> Callable[[Check], Values]:
    def of(check: Check) -> Values:
        return Values(applied.classes.get(check.cls) or {}, applied.variables, facts,
                      applied.certname, target, applied.sensitive.get(check.cls, frozenset()))
    return of


def run_checks(applied: Applied, checks: list[Check], target: str | None = None,
               concurrency: int = DEFAULT_CONCURRENCY,
               facts: Mapping[str, Any] | None = None, budget: float | None = None) -> Outcome:
    """Run ``checks`` of ``applied``; facts are gathered here unless given (from outside,
    only those of the host's name: :func:`.facts.named`). ``budget``: seconds the checks may
    take in all (opslab.smoketests.runner)."""
    started = time.monotonic()
    if facts is None and target is not None:
        facts = named(applied.certname) if applied.certname else {}
    elif facts is None:
        facts = gather(applied.certname) if checks else {}
    results = run(checks, values_for(applied, facts, target), target, concurrency, budget)
    return Outcome(results, time.monotonic() - started)
