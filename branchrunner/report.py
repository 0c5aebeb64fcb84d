"""Reading what Puppet says about a run: last_run_summary.yaml and last_run_report.yaml.

The summary is plain YAML; the report is tagged for Ruby
(``--- !ruby/object:Puppet::Transaction::Report``), so it is read with a
safe loader that takes any ``!ruby/...`` tag for the plain node beneath it.
"""

from pathlib import Path
from typing import Any, NotRequired, TypedDict

import yaml


class FailedResource(TypedDict):
    """A resource that failed, where it is declared, and Puppet's messages about it."""

    resource: str
    file: str | None
    line: int | None
    messages: list[str]


# A check of a class that did not hold ("class" is a keyword: the functional form).
SmokeFailure = TypedDict("SmokeFailure", {
    "class": str, "check": str, "kind": NotRequired[str], "message": str})


class SmokeSummary(TypedDict):
    """What the smoke tests (checks per Puppet class) found, as the agent sends it: in a run
    report, after the run, and alone on an interval.

    The OpenAPI document's ``SmokeSummary`` is the one declaration; this type
    follows it, field by field (a test compares the two). ``error``: the
    checks could not be run at all, which counts as failing.
    """

    checked_at: str
    commit: NotRequired[str | None]
    passed: int
    failed: int
    skipped: int
    duration: NotRequired[float]
    error: NotRequired[str | None]
    failures: NotRequired[list[SmokeFailure]]
    truncated: NotRequired[bool]


class RunResult(TypedDict, total=False):
    """What ``opslab branch apply`` prints and writes to ``last_apply.json``, and the agent
    sends to the API as a run report.

    The OpenAPI document's ``RunReport`` (``api/openapi.yaml``) is the one
    declaration the API validates against; this type follows it, field by
    field (a test compares the two). The last four fields are the agent's.
    """

    puppet_status: str | None
    puppet_version: str | None
    configuration_version: str | int | None
    resources: dict[str, int]
    failed_resources: list[FailedResource]
    changed_resources: list[str]
    errors: list[str]
    puppet_time: float | None

    certname: str
    started_at: str
    environment: str | None
    branch: str | None
    commit: str | None
    status: str
    exit_code: int
    meaning: str
    success: bool
    error: str | None
    duration: float
    output_tail: str
    warnings: list[str]
    sync_error: str
    agent_version: str
    trigger: str
    truncated: bool
    smoke: SmokeSummary | None


_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ERROR_LEVELS = frozenset({"err", "alert", "emerg", "crit"})


class _RubyTolerantLoader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader that reads Ruby-tagged nodes as plain mappings, lists, strings."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_RubyTolerantLoader.add_multi_constructor("!ruby/", _untagged)


def _load(path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_RubyTolerantLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


def read_run(report_dir: Path, output: str) -> RunResult:
    """The facts of one run: resource counts, failed resources and their messages, errors.

    A run that fails before it has a catalog (a compilation error) writes no
    report; its errors are then the ``Error:`` lines of its ``output``.
    Missing or unreadable files give empty values rather than an error: the
    exit code still tells the story.
    """
    summary = _load(report_dir / "last_run_summary.yaml")
    report = _load(report_dir / "last_run_report.yaml")
    resources = summary.get("resources") or {}
    failed_resources: list[FailedResource] = []
    # Which resources changed, by name: a second apply that changes any is not
    # idempotent, and the CI harness names them (counts would not say which).
    changed_resources: list[str] = []
    for name, status in (report.get("resource_statuses") or {}).items():
        if not isinstance(status, dict):
            continue
        if status.get("changed") and not status.get("failed"):
            changed_resources.append(str(name))
        if not status.get("failed"):
            continue
        messages = [str(event.get("message")) for event in status.get("events") or []
                    if isinstance(event, dict) and event.get("status") == "failure"]
        failed_resources.append({
            "resource": str(name),
            "file": status.get("file"),
            "line": status.get("line"),
            "messages": messages,
        })
    if report:
        errors = [str(log.get("message")) for log in report.get("logs") or []
                  if isinstance(log, dict) and log.get("level") in ERROR_LEVELS]
    else:
        errors = [line.removeprefix("Error: ") for line in output.splitlines()
                  if line.startswith("Error: ")]
    return {
        "puppet_status": report.get("status"),
        "puppet_version": (summary.get("version") or {}).get("puppet"),
        "configuration_version": (summary.get("version") or {}).get("config"),
        "resources": {key: resources.get(key, 0)
                      for key in ("total", "changed", "failed", "out_of_sync", "skipped")},
        "failed_resources": failed_resources,
        "changed_resources": changed_resources,
        "errors": errors,
        "puppet_time": (summary.get("time") or {}).get("total"),
    }
