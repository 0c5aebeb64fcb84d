"""One agent check, and the loop that repeats it.

A check costs one HTTP request when nothing changed: the agent sends the
ETag of the target it last acted on, and the API answers 304. Only when the
target changed (a new commit on the branch, a new classification) does the
agent sync and apply; it also applies every ``agent.apply_interval`` to
correct drift, and retries a failed run after ``agent.retry_interval``.
After every run, and every ``agent.smoke_interval`` between runs, it runs
the smoke tests of the classes Puppet applied (:mod:`opslab.smoketests`):
their results go with the run's report, or alone, so a service that dies
between runs shows in the API at the next interval. They run within
SMOKE_BUDGET seconds in all, and nothing they do (a check file that cannot
be read, a bug) takes the run's report away.
Who gets sudo follows the target on every check, even while Puppet runs
are disabled: taking someone out of a project must take effect everywhere.

What the agent acted on lives in ``STATE_DIR/agent/state.json``, written
atomically; reports and state changes go through the spool
(:mod:`opslab.agent.spool`), the full run reports to ``STATE_DIR/agent/reports``
(:mod:`opslab.agent.report`).
"""

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from opslab.apiclient import ApiRefused, ApiUnavailable
from opslab.config import Config
from opslab.files import write_atomic
from opslab.lock import FileLock, LockHeld
from opslab.log import context
from opslab.names import this_certname

from . import sudoers

if TYPE_CHECKING:
    from opslab.branchrunner.report import RunResult, SmokeSummary
from .client import ApiClient, Target
from .report import bounded, clean, keep, size
from .spool import Delivery, Item, Spool

log = logging.getLogger(__name__)
# Seconds the smoke tests of one check may take in all. The agent holds its lock
# meanwhile, so who gets sudo waits at most this long for them; a check file's checks
# could otherwise take a day (200 checks of a class, each waiting up to an hour).
SMOKE_BUDGET = 600.0


class Check(NamedTuple):
    """What one check did, and the run's report when it applied.

    ``outcome`` is one of: unchanged, applied, disabled (a run was due),
    waiting (for the retry of a failed run), unreachable (the API), refused
    (by the API), busy (another check runs). ``smoke`` holds the smoke
    tests' summary when they ran (after a run, or on their interval).
    """

    outcome: str
    detail: str = ""
    report: Mapping[str, Any] | None = None
    smoke: "SmokeSummary | None" = None  # the smoke tests' results, when they ran


class Agent:
    """The agent of this instance, for one configuration."""

    def __init__(self, config: Config, version: str) -> None:
        self.config = config
        self.settings = config.agent
        self.version = version
        self.certname = this_certname(config.apply.certname)
        self.log = context(log, certname=self.certname)
        self.directory = Path(config.apply.state_dir) / "agent"
        self.spool = Spool(self.directory / "spool")
        self.client = ApiClient(config.enc)

    # -- the check -------------------------------------------------------

    def check(self, now: float | None = None) -> Check:
        """One check: deliver the spool, fetch the target, keep sudo and Puppet on it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.directory / "agent.lock"), "opslab agent check")
        try:
            lock.acquire()
        except LockHeld as error:
            return Check("busy", str(error))
        try:
            return self._check(time.time() if now is None else now)
        finally:
            lock.release()

    def _check(self, now: float) -> Check:
        state = self._load_state()
        self.deliver()
        fresh: Target | None = None
        try:
            fresh = self.client.target(self.certname, state.get("etag"))
        except ApiRefused as error:
            self.log.error("the API refused to give this host's target: %s", error)
            return Check("refused", str(error))
        except ApiUnavailable as error:
            self.log.warning("the API is unreachable (%s); Puppet runs on the drift interval, "
                             "with the ENC's cached classification", error)
            trigger = self._trigger(state, None, now)
            if trigger is None:
                return Check("unreachable", str(error), smoke=self._smoke_due(state, now))
            return self._apply(state, trigger, None, now)
        target = fresh.document if fresh is not None else state.get("target")
        if target is not None:
            self._keep_sudo(target, announce=fresh is not None)
        if fresh is not None and _puppet_part(fresh.document) == _puppet_part(state.get("target")):
            # Only who gets sudo changed, and that is done: nothing left to act on.
            state.update(target=fresh.document, etag=fresh.etag)
            self._save_state(state)
        trigger = self._trigger(state, fresh, now)
        if trigger is None:
            smoke = self._smoke_due(state, now)
            return Check("waiting" if state.get("failed") else "unchanged", smoke=smoke)
        return self._apply(state, trigger, fresh, now)

    def _trigger(self, state: dict[str, Any], fresh: Target | None, now: float) -> str | None:
        """Why to apply now, or None: first run, a changed target, a retry, drift."""
        if state.get("applied_at") is None:
            return "first"
        failed = state.get("failed")
        if fresh is not None and _puppet_part(fresh.document) != _puppet_part(state.get("target")):
            if failed is None or failed.get("etag") != fresh.etag or now >= failed["retry_at"]:
                return "change"
        elif failed is not None and now >= failed["retry_at"]:
            return "retry"
        if now - state["applied_at"] >= self.settings.apply_interval:
            return "drift"
        return None

    def _apply(self, state: dict[str, Any], trigger: str, fresh: Target | None,
               now: float) -> Check:
        # The branch runner is imported only when needed: a timer starts
        # `opslab agent run --once` every minute, and most checks change nothing.
        from opslab.branchrunner.apply import Apply, disabled_reason

        reason = disabled_reason(self.config)
        if reason is not None:
            self.log.warning("a Puppet run is due but runs are disabled: %s", reason,
                             extra={"context": {"trigger": trigger}})
            # Runs are off, not checks: a service that dies meanwhile still shows.
            return Check("disabled", reason, smoke=self._smoke_due(state, now))
        self.log.info("applying", extra={"context": {"trigger": trigger}})
        target = fresh.document if fresh is not None else state.get("target") or {}
        result = Apply(self.config, self.certname, target.get("branch")).run()
        report = self._report(result, trigger)
        if result.get("commit"):
            report["smoke"] = self._smoke()
            state["smoked_at"] = now
        key = uuid.uuid4().hex
        # The full report stays here; the API gets it within its bounds.
        kept = keep(self.directory / "reports", key, report)
        sent = bounded(report)
        if sent.get("truncated"):
            self.log.info("the report sent is cut to the API's bounds; the full one is %s", kept)
        self.spool.add("report", self.certname, sent, key)
        self.deliver()
        synced = not result.get("sync_error")
        if fresh is not None and synced:
            state.update(target=fresh.document, etag=fresh.etag)
        state["applied_at"] = now
        state["failed"] = None if report["success"] else {
            "etag": fresh.etag if fresh is not None else state.get("etag"),
            "retry_at": now + self.settings.retry_interval,
        }
        self._save_state(state)
        run = context(self.log, trigger=trigger, environment=report.get("environment"),
                      commit=report.get("commit"), status=report["status"])
        if report["success"]:
            run.info("run %s", report["status"])
        else:
            run.error("run %s: %s", report["status"], report.get("error"))
        return Check("applied", report["status"], report, report.get("smoke"))

    # -- smoke tests ---------------------------------------------------

    def _smoke(self) -> "SmokeSummary":
        """Run this host's smoke tests; their summary, logged (each failure a warning)."""
        from opslab.smoketests import host, results, suite
        from opslab.smoketests.spec import CheckFileError

        started = time.monotonic()
        try:
            applied = host.this_host(self.config, self.certname)
            outcome = suite.run_checks(applied, suite.checks_of(applied), budget=SMOKE_BUDGET)
        except (host.HostError, CheckFileError) as error:
            self.log.error("the smoke tests could not run: %s", results.shown(str(error)))
            return results.summary([], time.monotonic() - started, None, error=str(error))
        except Exception as error:
            # Whatever broke, the run that came before still has its report to send.
            self.log.exception("the smoke tests broke")
            return results.summary([], time.monotonic() - started, None,
                                   error=f"the smoke tests broke: {type(error).__name__}: "
                                         f"{error}")
        summary = results.summary(outcome.results, outcome.seconds, applied.commit)
        checked = context(self.log, commit=applied.commit)
        for failure in summary["failures"]:
            # A line each: a name or message cannot start a line of its own in the log.
            checked.warning("smoke check failed: %s", results.shown(
                f"{failure['class']}: {failure['check']}: {failure['message']}"))
        checked.info("smoke tests: %s passed, %s failed, %s skipped", summary["passed"],
                     summary["failed"], summary["skipped"])
        return summary

    def _smoke_due(self, state: dict[str, Any], now: float) -> "SmokeSummary | None":
        """Between runs, every ``agent.smoke_interval``: the smoke tests, their summary sent."""
        interval = self.settings.smoke_interval
        if interval <= 0 or state.get("applied_at") is None \
                or now - state.get("smoked_at", 0.0) < interval:
            return None
        summary = self._smoke()
        state["smoked_at"] = now
        self._save_state(state)
        self.spool.add("smoke", self.certname, clean(summary))
        self.deliver()
        return summary

    def _report(self, result: "RunResult", trigger: str) -> "RunResult":
        """The run report: the branch runner's result, with what the agent knows."""
        report: RunResult = {**result, "agent_version": self.version, "trigger": trigger}
        if result.get("sync_error"):
            # Puppet ran what was deployed; the host is not at its branch's commit.
            report.update({"status": "failed", "success": False,
                           "error": result.get("error") or f"the branch could not be "
                           f"updated, so the deployed commit {result.get('commit')} was "
                           f"applied instead: {result['sync_error']}"})
        return report

    def _keep_sudo(self, target: dict[str, Any], announce: bool) -> None:
        """Put the target's sudo list in place; ``announce`` says who is left out, and why."""
        if self.settings.sudoers_file is None:
            return
        path = Path(self.settings.sudoers_file)
        try:
            users, left_out = sudoers.grantable(*_sudo_of(target), self.config.accounts)
            wanted = sudoers.render(target.get("project") or "", users)
            changed = sudoers.installed(path) != wanted
            if changed:
                sudoers.install(path, wanted, self.settings.visudo)
                self.log.info("sudo on this host now for: %s", ", ".join(users) or "nobody")
            if changed or announce:
                for user, reason in left_out.items():
                    self.log.warning("no sudo for %s: %s", user, reason)
        except sudoers.SudoersError as error:
            self.log.error("sudo access left as it was: %s", error)

    # -- telling the API -------------------------------------------------

    def deliver(self) -> Delivery:
        """Deliver what is spooled, oldest first, as far as the API takes it now."""
        def send(item: Item) -> None:
            if item.kind == "report":
                self._send_report(item)
            elif item.kind == "smoke":
                self._send_smoke(item)
            else:
                self.client.put_state(item.certname, item.body)

        delivery = self.spool.deliver(send)
        if delivery.delivered or delivery.rejected:
            self.log.info("delivered %s spooled message(s)%s", delivery.delivered,
                          f", set aside {delivery.rejected} the API refused"
                          if delivery.rejected else "")
        if delivery.error:
            self.log.warning("%s message(s) stay spooled: %s", delivery.pending, delivery.error)
        return delivery

    def _send_report(self, item: Item) -> None:
        """Deliver one spooled report, cut to half its size on each 413 until it is taken.

        The agent's bound (MAX_BODY) is below the API's default ``api.max_body``,
        but a site may set that lower; set aside, the report would never be
        seen. The full report stays in ``reports/``. A copy that cannot be cut
        any further and is still too large stays spooled (raised as
        ApiUnavailable), never set aside: ``api.max_body`` is to be raised.
        """
        body = item.body
        while True:
            try:
                self.client.post_report(item.certname, body, item.key)
                return
            except ApiRefused as error:
                if error.status != 413:
                    raise
                smaller = bounded(item.body, max_body=size(body) // 2)
                if smaller.get("smoke"):
                    # The smoke summary is a third of what is left at most.
                    smaller["smoke"] = _smaller_smoke(smaller["smoke"], size(body) // 6)
                if size(smaller) >= size(body):
                    raise ApiUnavailable(
                        f"the API refuses report {item.key} as too large (HTTP 413) even cut "
                        f"to {size(body)} bytes: raise its api.max_body") from None
                self.log.warning("the API refused report %s as too large (HTTP 413); sending it "
                                 "cut to %s bytes (the full report is kept here)", item.key,
                                 size(smaller))
                body = smaller

    def _send_smoke(self, item: Item) -> None:
        """Deliver spooled smoke results, cut to half their size on each 413 until they
        are taken (as a report is: :meth:`_send_report`); ones that cannot be cut further
        are set aside, as newer results will come at the next interval anyway."""
        body = item.body
        while True:
            try:
                self.client.put_smoke(item.certname, body)
                return
            except ApiRefused as error:
                if error.status != 413:
                    raise
                smaller = _smaller_smoke(body, size(body) // 2)
                if size(smaller) >= size(body):
                    raise
                self.log.warning("the API refused smoke results as too large (HTTP 413); "
                                 "sending them cut to %s bytes", size(smaller))
                body = smaller

    def set_disabled(self, reason: str | None) -> Delivery:
        """Disable Puppet runs with ``reason`` (None enables them), and tell the API."""
        from opslab.branchrunner.apply import disable, enable

        if reason is None:
            enable(self.config)
        else:
            disable(self.config, reason)
        # A reason from the command line may hold lone surrogates (bytes that are
        # not UTF-8), which the API refuses.
        self.spool.add("state", self.certname, {
            "disabled": reason is not None, "reason": clean(reason), "version": self.version,
            "changed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        })
        return self.deliver()

    # -- state -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the agent knows: disabled or not, what it acted on, what is spooled."""
        from opslab.branchrunner.apply import disabled_reason

        state = self._load_state()
        return {
            "certname": self.certname,
            "disabled": disabled_reason(self.config),
            "target": state.get("target"),
            "applied_at": _iso(state.get("applied_at")),
            "retry_at": _iso((state.get("failed") or {}).get("retry_at")),
            "spooled": len(self.spool.pending()),
            "rejected": len(list(self.spool.rejected.glob("*[0-9].json")))
            if self.spool.rejected.exists() else 0,
        }

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.directory / "state.json").read_text(encoding="utf-8"))
            return state if isinstance(state, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            self.log.warning("state.json is unreadable; starting afresh (the next check applies)")
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        write_atomic(str(self.directory / "state.json"), json.dumps(state, indent=1) + "\n",
                     mode=0o644)

    # -- the long-running mode ------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Check every ``check_interval`` until ``stop`` is set, after a random splay.

        The splay spreads a fleet's checks over the interval, so a push to a
        branch reaches the remote and the API from a trickle of instances at
        a time rather than all in the same second. A stop during a check
        lets the check (and its Puppet run) finish.
        """
        # Not for security: any spread will do.
        stop.wait(random.uniform(0, self.settings.splay))  # noqa: S311
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.check()
            except Exception:
                # One check's bug must not leave the instance unmanaged until
                # systemd restarts the agent: it is logged, and the next check runs.
                self.log.exception("the check failed; the next one runs as planned")
            stop.wait(max(0.0, self.settings.check_interval - (time.monotonic() - started)))


def _smaller_smoke(summary: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``summary`` (a spooled SmokeSummary) cut to under ``max_bytes`` bytes, as far as it
    can be (opslab.smoketests.results.bounded)."""
    from opslab.smoketests import results

    cut: dict[str, Any] = clean(results.bounded(summary, max_bytes))  # type: ignore[arg-type]
    return cut


def _sudo_of(target: dict[str, Any]) -> tuple[list[str], dict[str, int | None]]:
    """The target's ``sudo`` names and their ``uid_numbers``, as the types they must be.

    A value of another type is the API's mistake: a name becomes a text the
    name rule then refuses, and a uidNumber that is not a whole number is
    unknown (None), so that its local account, if any, is not taken for the
    person's.
    """
    names = target.get("sudo")
    numbers = target.get("uid_numbers")
    users = [str(name) for name in names] if isinstance(names, list) else []
    uid_numbers: dict[str, int | None] = {}
    if isinstance(numbers, dict):
        for name, number in numbers.items():
            valid = isinstance(number, int) and not isinstance(number, bool)
            uid_numbers[str(name)] = number if valid else None
    return users, uid_numbers


def _puppet_part(target: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What a Puppet run depends on: the branch's commit and the classification."""
    if target is None:
        return None
    return (target.get("environment"), target.get("commit"), target.get("classification"))


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
