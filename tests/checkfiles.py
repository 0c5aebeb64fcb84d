"""Smoke checks for the engine's tests: written as ``modules/MODULE/checks.yaml`` of a
throwaway control repository, read by the engine's own reader (so every check a test
runs was validated as a real one is) and run by its runner, against what is really on
this machine."""

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from opslab.names import module_of
from opslab.smoketests import runner, spec
from opslab.smoketests.runner import Result
from opslab.smoketests.spec import Check
from opslab.smoketests.values import Values

CLASS = "smoke"
CERTNAME = "smoke1.example.org"


def write(tree: Path, document: Any, module: str | None = None) -> Path:
    """``document`` (a mapping, or a text as it is) as ``module``'s check file (CLASS's)."""
    folder = tree / "modules" / (module or module_of(CLASS))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.FILE_NAME
    text = document if isinstance(document, str) else yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tree: Path, checks: list[dict[str, Any]], cls: str = CLASS) -> list[Check]:
    """``checks`` of ``cls``, written and read back."""
    write(tree, {cls: checks}, module_of(cls))
    return spec.checks_for(str(tree), [cls])


def one(tree: Path, kind: str, fields: Any, **common: Any) -> Check:
    """One check of ``kind`` with ``fields`` (and name, timeout, wait, outside in ``common``)."""
    (check,) = load(tree, [{"name": common.pop("name", f"a {kind} check"), kind: fields,
                            **common}])
    return check


def values(params: dict[str, Any] | None = None, variables: dict[str, Any] | None = None,
           facts: dict[str, Any] | None = None, target: str | None = None,
           sensitive: frozenset[str] = frozenset(),
           certname: str | None = CERTNAME) -> Values:
    return Values(params or {}, variables or {}, facts or {}, certname, target, sensitive)


def run(checks: Sequence[Check], target: str | None = None, filled: Values | None = None,
        concurrency: int = runner.DEFAULT_CONCURRENCY) -> list[Result]:
    given = filled if filled is not None else values(target=target)
    return runner.run(checks, lambda check: given, target, concurrency)


def run_one(tree: Path, kind: str, fields: Any, *, target: str | None = None,
            params: dict[str, Any] | None = None, **common: Any) -> Result:
    """Read one check and run it; its result."""
    (result,) = run([one(tree, kind, fields, **common)], target,
                    values(params=params, target=target))
    return result


def marker() -> str:
    """A number of seconds to sleep that no other process's command line holds."""
    return f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
