"""The run report the agent sends: cut to the API's bounds, whatever Puppet produced.

A run in which hundreds of resources fail makes a report of hundreds of
kilobytes (each failure is a resource, a file, messages, and an error line
of its own), and the API refuses any body over ``api.max_body`` (64 KiB by
default). Refused, such a report would be set aside, and the host view would
go on showing the run before it: the worst runs would be the ones nobody
sees. So the agent keeps the full report on the instance
(``STATE_DIR/agent/reports/KEY.json``, KEY being its idempotency key, the
newest KEEP of them) and sends a copy within the API's bounds, marked
``"truncated": true`` when anything was cut, and under MAX_BODY bytes of JSON
in any case; an API whose ``api.max_body`` is lower still refuses it (413),
and the agent then sends it cut to half its size, and so on (see
Agent.deliver). Every text of the copy, keys included, has its NUL characters
and lone surrogates replaced by U+FFFD: the API refuses any string holding
one, and a command's output that Puppet passes on may hold anything.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from opslab.files import write_atomic

# Below the API's default max body (64 KiB), whatever the characters: JSON
# escapes non-ASCII text, up to twelve bytes a character.
MAX_BODY = 48 * 1024
KEEP = 20
# What no text the API stores may hold: NUL (PostgreSQL's text cannot) and
# lone surrogates (no UTF-8 for them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Fields the API bounds, cut to its bound (Puppet writes them; they are
# short unless something is badly wrong).
_SHORT_FIELDS = {"meaning": 200, "puppet_status": 32, "puppet_version": 64,
                 "configuration_version": 200}


class Limits(NamedTuple):
    """How much of each list and text a sent report keeps."""

    items: int = 50  # failed_resources, changed_resources, errors, warnings
    messages: int = 10  # per failed resource
    message: int = 2000  # every message, error and sync_error
    resource: int = 500
    file: int = 1000
    tail: int = 4000  # output_tail, its last characters


API_LIMITS = Limits()


def bounded(report: Mapping[str, Any], limits: Limits = API_LIMITS,
            max_body: int = MAX_BODY) -> dict[str, Any]:
    """A copy of ``report`` within ``limits`` and under ``max_body`` bytes as JSON.

    When the API's limits alone leave it too large, every limit is halved
    until it fits; at worst nothing of the lists and texts is left, and the
    rest (names, counts, status) is small. ``"truncated": true`` is added
    when anything was cut. Texts are cleaned (see the module doc).
    """
    while True:
        copy: dict[str, Any] = clean(_cut(report, limits))
        if size(copy) < max_body or not any(limits):
            return copy
        limits = Limits(*(limit // 2 for limit in limits))


def size(report: dict[str, Any]) -> int:
    """The bytes of ``report`` as the body of a request."""
    return len(json.dumps(report).encode())


def clean(value: Any) -> Any:
    """``value`` with NUL and lone surrogates replaced by U+FFFD in every text, keys too."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


def _cut(report: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    cut = _Cut()
    copy = dict(report)
    if isinstance(report.get("failed_resources"), list):
        copy["failed_resources"] = [
            _resource(item, limits, cut) if isinstance(item, dict) else item
            for item in cut.list(report["failed_resources"], limits.items)]
    if isinstance(report.get("changed_resources"), list):
        copy["changed_resources"] = [cut.text(item, limits.resource)
                                     for item in cut.list(report["changed_resources"],
                                                          limits.items)]
    for name in ("errors", "warnings"):
        if isinstance(report.get(name), list):
            copy[name] = [cut.text(item, limits.message)
                          for item in cut.list(report[name], limits.items)]
    for name in ("error", "sync_error"):
        copy[name] = cut.text(report.get(name), limits.message)
    for name, limit in _SHORT_FIELDS.items():
        copy[name] = cut.text(report.get(name), limit)
    tail = report.get("output_tail")
    if isinstance(tail, str) and len(tail) > limits.tail:
        copy["output_tail"] = tail[len(tail) - limits.tail:]
        cut.happened = True
    copy = {name: value for name, value in copy.items() if name in report}
    if cut.happened:
        copy["truncated"] = True
    return copy


def _resource(item: dict[str, Any], limits: Limits, cut: "_Cut") -> dict[str, Any]:
    copy = dict(item)
    copy["resource"] = cut.text(item.get("resource"), limits.resource)
    copy["file"] = cut.text(item.get("file"), limits.file)
    if isinstance(item.get("messages"), list):
        copy["messages"] = [cut.text(message, limits.message)
                            for message in cut.list(item["messages"], limits.messages)]
    return {name: value for name, value in copy.items() if name in item}


class _Cut:
    """Cuts texts and lists, remembering whether it had to."""

    def __init__(self) -> None:
        self.happened = False

    def text(self, value: Any, limit: int) -> Any:
        """``value`` cut to ``limit`` characters if it is a longer text."""
        if isinstance(value, str) and len(value) > limit:
            self.happened = True
            return value[:limit]
        return value

    def list(self, values: list[Any], limit: int) -> list[Any]:
        """The first ``limit`` of ``values``."""
        if len(values) > limit:
            self.happened = True
        return values[:limit]


def keep(directory: Path, key: str, report: Mapping[str, Any]) -> Path:
    """Write the full ``report`` to ``directory/KEY.json``; keep only the newest KEEP."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.json"
    # 0600: Puppet's output shows the diffs of the files it changed.
    write_atomic(str(path), json.dumps(report, indent=1, default=str) + "\n", mode=0o600)
    kept = sorted(directory.glob("*.json"), key=lambda file: file.stat().st_mtime_ns)
    for old in kept[:-KEEP]:
        old.unlink(missing_ok=True)
    return path
