"""Running checks: side by side with a bound, each retried until it holds or its wait
ends, each attempt within its timeout, every check within its deadline.

A kind keeps its own timeout (sockets, child processes). What cannot be
given one (a lookup through NSS that hangs on a dead directory) is caught
by the deadline: past ``wait + timeout`` plus a grace the check is reported
as not answering and its worker is left behind (a daemon thread, so it
never holds the command's exit) while a new worker takes its place.

A run as a whole may have a ``budget`` (the agent's, which holds its lock
meanwhile): 200 checks of a class, each waiting up to an hour, would
otherwise take a day. Past it, the checks still running are abandoned and
those not started are not run, each reported as failed saying so.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import kinds
from .spec import Check
from .values import Missing, Values, fill

DEFAULT_CONCURRENCY = 8
GRACE = 2.0


@dataclass(frozen=True)
class Result:
    """What one check found."""

    check: Check
    status: str  # passed, failed, skipped
    message: str
    output: str = ""
    duration: float = 0.0
    attempts: int = 0


def run(checks: Sequence[Check], values_of: Callable[[Check], Values], target: str | None,
        concurrency: int = DEFAULT_CONCURRENCY, budget: float | None = None) -> list[Result]:
    """Run ``checks``, answering in their order. ``target`` None: from this host, the checks
    that are not ``outside`` (those are skipped); else from outside, at ``target``, only
    those that are. ``budget``: seconds the run may take in all (None: no bound but the
    checks' own)."""
    # From outside, the host's own checks are the host's business, not even skipped.
    checks = [check for check in checks if target is None or check.outside]
    results: list[Result | None] = [None] * len(checks)
    pending: deque[int] = deque()
    for index, check in enumerate(checks):
        if check.outside and target is None:
            results[index] = Result(check, "skipped", "seen from outside: opslab smoke run "
                                    "--target ADDRESS")
        else:
            pending.append(index)
    started: dict[int, float] = {}
    changed = threading.Condition()

    def work() -> None:
        while True:
            with changed:
                if not pending:
                    return
                index = pending.popleft()
                started[index] = time.monotonic()
            result = attempt(checks[index], values_of, target)
            with changed:
                if results[index] is not None:  # given up on: this worker was replaced
                    return
                results[index] = result
                changed.notify_all()

    workers = max(1, min(concurrency, len(pending)))
    begun = time.monotonic()
    for _ in range(workers):
        threading.Thread(target=work, daemon=True, name="smoke-check").start()
    with changed:
        while any(result is None for result in results):
            now = time.monotonic()
            if budget is not None and now >= begun + budget:
                _out_of_time(checks, results, started, pending, budget, now)
                break
            wake = now + 1.0 if budget is None else min(now + 1.0, begun + budget)
            for index, since in started.items():
                if results[index] is not None:
                    continue
                check = checks[index]
                deadline = since + check.wait + check.timeout + GRACE
                if now >= deadline:
                    results[index] = Result(check, "failed", f"no answer within "
                                            f"{deadline - since:g} s: the check was abandoned",
                                            duration=now - since)
                    threading.Thread(target=work, daemon=True, name="smoke-check").start()
                else:
                    wake = min(wake, deadline)
            changed.wait(max(0.01, wake - now))
    return [result for result in results if result is not None]


def _out_of_time(checks: Sequence[Check], results: list[Result | None],
                 started: dict[int, float], pending: deque[int], budget: float,
                 now: float) -> None:
    """Every check without a result failed, the budget spent: abandoned if it runs, not
    run at all if it did not start (``pending`` emptied, so no worker starts another)."""
    pending.clear()
    for index, check in enumerate(checks):
        if results[index] is not None:
            continue
        if index in started:
            results[index] = Result(check, "failed", f"abandoned: the smoke tests ran past "
                                    f"their {budget:g} s", duration=now - started[index])
        else:
            results[index] = Result(check, "failed", f"not run: the smoke tests ran past "
                                    f"their {budget:g} s")


def attempt(check: Check, values_of: Callable[[Check], Values], target: str | None) -> Result:
    """Run ``check`` until it holds or its wait is over."""
    started = time.monotonic()
    module = kinds.kind(check.kind)
    try:
        filled = _filled(check, values_of(check), module.FIELDS)
    except Missing as error:
        return Result(check, "failed", str(error), duration=time.monotonic() - started,
                      attempts=0)
    except Exception as error:  # an escaped error would end the worker, not fail the check
        return Result(check, "failed", f"the check broke: {type(error).__name__}: {error}",
                      duration=time.monotonic() - started, attempts=0)
    tries = 0
    while True:
        tries += 1
        context = kinds.Context(check.timeout, target, time.monotonic() + check.timeout)
        try:
            found = module.check(filled, context)
            return Result(check, "passed", found, duration=time.monotonic() - started,
                          attempts=tries)
        except kinds.Failed as failure:
            last = failure
        except Exception as error:  # one check's bug must not stop the others
            last = kinds.Failed(f"the check broke: {type(error).__name__}: {error}")
        if time.monotonic() + check.interval > started + check.wait:
            message = last.message if tries == 1 else \
                f"{last.message} (still so after {tries} attempts in {check.wait:g} s)"
            return Result(check, "failed", message, last.output,
                          time.monotonic() - started, tries)
        time.sleep(check.interval)


def _filled(check: Check, values: Values, fields: dict[str, kinds.Field]) -> dict[str, object]:
    """The check's fields with their references filled and their types checked."""
    filled: dict[str, object] = {}
    for key, written in check.fields.items():
        field = fields[key]
        value = _number(fill(written, values, shell=field.shell_line), field)
        filled[key] = value
        problem = field.problem(value)
        if problem is not None:
            raise Missing(f"{key}: {problem} (after filling in its references)")
    return filled


def _number(value: object, field: kinds.Field) -> object:
    """A reference filled into a number's place, as a text that spells one, as the number
    (each of a list's, for a field that takes a list)."""
    if isinstance(value, list) and field.many:
        return [_number(item, field) for item in value]
    if isinstance(value, str) and int in field.types and str not in field.types:
        try:
            return int(value)
        except ValueError:
            return value
    return value
