"""What a run's hosts came to: the job's record of each clone (:class:`HostRun`), read
into the verdict (:func:`host_result`, ci/result.py's types for the vote), the API's
record (:func:`host_state`, :func:`summary`) and the JUnit XML (:func:`suites`).

A host fails when the change's run (or the second one) failed a resource or did not
finish, when the second run changed something again, or when a smoke check failed,
inside or outside. The target branch's own run is in the JUnit, never held against the
change.
"""

from dataclasses import dataclass, field
from typing import Any

from . import junit, records
from .clones import Clone, Original
from .result import FailedCheck, FailedResource, HostResult, RunResult, SecretFound

PHASES = (("target", "Puppet run of the target branch"),
          ("change", "Puppet run of the change"),
          ("again", "second run of the change changes nothing"))


@dataclass
class HostRun:
    """What happened on one clone."""

    original: Original
    clone: Clone | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> RunResult
    inside: dict[str, Any] | None = None  # `opslab smoke run --json` on the clone
    outside: dict[str, Any] | None = None  # the same from here, --target the clone
    error: str | None = None  # the clone could not be made or used


def failed_checks(host: HostRun) -> list[FailedCheck]:
    failed = []
    for where, found in (("", host.inside), (" (from outside)", host.outside)):
        for item in (found or {}).get("results", []):
            if item.get("status") in ("failed", "error"):
                output = "\n".join(part for part in (item.get("message"), item.get("output"))
                                   if part)
                failed.append(FailedCheck(f"{item.get('class')}: {item.get('check')}{where}",
                                          output))
    return failed


def host_result(host: HostRun) -> HostResult:
    name = host.clone.name if host.clone else host.original.name
    failed: list[FailedResource] = []
    for phase in ("change", "again"):
        run = host.runs.get(phase) or {}
        for item in run.get("failed_resources") or []:
            messages = item.get("messages") or [""]
            failed.append(FailedResource(str(item.get("resource")), str(messages[0])))
        if not run.get("success", False) and not run.get("failed_resources"):
            reasons = run.get("errors") or [run.get("error") or run.get("meaning") or ""]
            failed.append(FailedResource("Puppet run", str(reasons[0])))
        if failed:
            break  # the second run repeats the first one's failures
    again = host.runs.get("again") or {}
    changed_again = () if failed else tuple(again.get("changed_resources") or ())
    return HostResult(f"{name} (clone of {host.original.name})", tuple(failed), changed_again,
                      tuple(failed_checks(host)))


def host_state(host: HostRun) -> str | None:
    if host.error:
        return "error"
    if not host.runs:
        return None
    return "passed" if host_result(host).passed else "failed"


def summary(result: RunResult | None, secrets: list[SecretFound]) -> dict[str, Any]:
    return {"passed": result.passed if result else None,
            "secrets": [{"file": item.file, "line": item.line, "kind": item.kind}
                        for item in secrets],
            "hosts": [{"host": host.host, "failed_resources": len(host.failed_resources),
                       "changed_again": list(host.changed_again),
                       "failed_checks": [check.name for check in host.failed_checks]}
                      for host in (result.hosts if result else ())]}


def _run_case(host: HostRun, phase: str, title: str) -> junit.Case:
    name = host.clone.name if host.clone else host.original.name
    case = junit.Case(name, title)
    run = host.runs.get(phase)
    if run is None:
        case.skipped = host.error or "not reached"
        return case
    case.seconds = float(run.get("duration") or 0.0)
    if phase == "again" and run.get("success") and run.get("changed_resources"):
        case.failure = "the second run changed resources again (not idempotent)"
        case.detail = "\n".join(run["changed_resources"])
    elif not run.get("success", False):
        case.failure = f"Puppet: {run.get('meaning') or run.get('status')}"
        case.detail = "\n".join(
            [f"{item.get('resource')}: {'; '.join(item.get('messages') or [])}"
             for item in run.get("failed_resources") or []]
            + [str(error) for error in run.get("errors") or []]
            + [str(run.get("error") or "")])
    return case


def _check_case(host: HostRun, item: dict[str, Any]) -> junit.Case:
    name = host.clone.name if host.clone else host.original.name
    case = junit.Case(f"{name}.{item.get('class')}", str(item.get("check")),
                      float(item.get("duration") or 0.0))
    if item.get("status") in ("failed", "error"):
        case.failure = records.line(str(item.get("message") or "failed"), 500)
        case.detail = str(item.get("output") or "")
        case.error = item.get("status") == "error"
    elif item.get("status") == "skipped":
        case.skipped = str(item.get("message") or "skipped")
    return case


def suites(hosts: list[HostRun], secrets: list[SecretFound], scan_error: str | None
           ) -> list[junit.Suite]:
    """The run as JUnit suites: the secret scan, then a suite per clone with its three
    Puppet runs and each smoke check once (an outside check as run from outside)."""
    found = [junit.secrets_suite(secrets, scan_error)]
    for host in hosts:
        name = host.clone.name if host.clone else host.original.name
        suite = junit.Suite(name)
        for phase, title in PHASES:
            suite.cases.append(_run_case(host, phase, title))
        # Each check once: outside checks are skipped inside and run from here.
        outside = [item for item in (host.outside or {}).get("results", [])
                   if item.get("status") != "skipped"]
        ran_outside = {(item.get("class"), item.get("check")) for item in outside}
        for item in (host.inside or {}).get("results", []):
            if (item.get("class"), item.get("check")) not in ran_outside:
                suite.cases.append(_check_case(host, item))
        suite.cases.extend(_check_case(host, item) for item in outside)
        if host.inside is None:
            suite.cases.append(junit.Case(
                suite.name, "smoke tests", skipped=host.error
                or "not run: Puppet could not apply the change"))
        found.append(suite)
    return found
