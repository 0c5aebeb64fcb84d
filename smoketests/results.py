"""Results, as people, scripts, Jenkins and the API read them.

* :func:`text`: a line per check and a closing count, for a terminal.
* :func:`as_json`: every result, for scripts.
* :func:`junit`: JUnit XML as Jenkins' junit plugin reads it (a testsuite
  per class, a testcase per check with the class as its classname, a
  ``failure`` with the message and the output that explains it, a
  ``skipped`` for a check left to someone else).
* :func:`summary`: the compact document the agent reports (the API's
  ``SmokeSummary``): counts, and the failed checks with their messages,
  bounded like the rest of a run report, and under MAX_SUMMARY bytes of
  JSON in all (:func:`bounded`), so that it fits beside the run report's
  own fields whatever the checks' names and messages hold.
"""

import json
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opslab.clock import iso_utc

from .runner import Result

if TYPE_CHECKING:
    from opslab.branchrunner.report import SmokeSummary

MAX_FAILURES = 50
MAX_MESSAGE = 2000
MAX_NAME = 200
# Bytes of a summary as JSON (escaped as the agent sends it: up to twelve bytes a
# character); a run report carries one beside its own fields, under the agent's 48 KiB.
MAX_SUMMARY = 16 * 1024
# What XML 1.0 cannot hold (a command's output may have anything).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What a terminal would obey rather than show: an HTTP body from a server looked at from
# outside could otherwise move the cursor, retitle the window or hide lines; a
# bidirectional override or a line separator would reorder or split what is shown (and
# a newline would forge a line of the agent's log).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                      "\u2066-\u2069]")


def counts(results: Sequence[Result]) -> dict[str, int]:
    found = {"passed": 0, "failed": 0, "skipped": 0}
    for result in results:
        found[result.status] += 1
    return found


def text(results: Sequence[Result], seconds: float, verbose: bool = False) -> str:
    """A line per check (passed ones only with ``verbose``) and the counts."""
    lines = []
    for result in results:
        if result.status == "passed" and not verbose:
            continue
        mark = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}[result.status]
        lines.append(shown(f"{mark:7} {result.check.cls}: {result.check.name}: "
                            f"{result.message}"))
        if result.status == "failed" and result.output.strip():
            lines += ["        | " + shown(line)
                      for line in result.output.strip().splitlines()[-10:]]
    found = counts(results)
    lines.append(f"{found['passed']} passed, {found['failed']} failed, "
                 f"{found['skipped']} skipped in {seconds:.2f} s")
    return "\n".join(lines) + "\n"


def as_json(results: Sequence[Result], seconds: float) -> dict[str, Any]:
    return {**counts(results), "duration": round(seconds, 3), "results": [
        {"class": result.check.cls, "check": result.check.name, "kind": result.check.kind,
         "status": result.status, "message": result.message, "output": result.output,
         "duration": round(result.duration, 3), "attempts": result.attempts,
         "outside": result.check.outside, "source": result.check.source}
        for result in results]}


def junit(results: Sequence[Result], seconds: float, suite: str = "smoke") -> bytes:
    """JUnit XML: a testsuite per class, in the order the classes came."""
    import xml.etree.ElementTree as ElementTree  # only --junit needs it

    root = ElementTree.Element("testsuites", name=_xml(suite), time=f"{seconds:.3f}",
                               timestamp=iso_utc(time.time(), fraction=False))
    suites: dict[str, ElementTree.Element] = {}
    for result in results:
        cls = result.check.cls
        if cls not in suites:
            suites[cls] = ElementTree.SubElement(root, "testsuite", name=_xml(cls))
        case = ElementTree.SubElement(suites[cls], "testcase", classname=_xml(cls),
                                      name=_xml(result.check.name),
                                      time=f"{result.duration:.3f}")
        if result.status == "failed":
            failure = ElementTree.SubElement(case, "failure", message=_xml(result.message),
                                             type=result.check.kind)
            failure.text = _xml(result.output or result.message)
        elif result.status == "skipped":
            ElementTree.SubElement(case, "skipped", message=_xml(result.message))
        else:
            ElementTree.SubElement(case, "system-out").text = _xml(result.message)
    for suite_element in suites.values():
        cases = list(suite_element)
        suite_element.set("tests", str(len(cases)))
        suite_element.set("failures", str(sum(case.find("failure") is not None
                                               for case in cases)))
        suite_element.set("skipped", str(sum(case.find("skipped") is not None
                                              for case in cases)))
    found = counts(results)
    root.set("tests", str(len(results)))
    root.set("failures", str(found["failed"]))
    root.set("skipped", str(found["skipped"]))
    xml: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def summary(results: Sequence[Result], seconds: float, commit: str | None,
            error: str | None = None) -> "SmokeSummary":
    """The compact document the agent reports (``SmokeSummary``), under MAX_SUMMARY bytes."""
    found = counts(results)
    document: SmokeSummary = {
        "checked_at": iso_utc(time.time(), fraction=False), "commit": commit,
        "passed": found["passed"], "failed": found["failed"], "skipped": found["skipped"],
        "duration": round(seconds, 3), "error": error,
        "failures": [{"class": result.check.cls, "check": result.check.name,
                      "kind": result.check.kind, "message": result.message}
                     for result in results if result.status == "failed"],
    }
    return bounded(document, MAX_SUMMARY)


def bounded(document: "SmokeSummary", max_bytes: int) -> "SmokeSummary":
    """A copy of ``document`` within the API's bounds (MAX_FAILURES failures, MAX_MESSAGE
    characters of a message, MAX_NAME of a name) and under ``max_bytes`` bytes as JSON:
    each bound halved until it fits (at worst no failure is left; the counts stay).
    ``truncated`` is set when anything was cut."""
    limits = (MAX_FAILURES, MAX_MESSAGE, MAX_NAME)
    while True:
        copy = _cut(document, *limits)
        if _size(copy) < max_bytes or not any(limits):
            return copy
        limits = (limits[0] // 2, limits[1] // 2, limits[2] // 2)


def _cut(document: "SmokeSummary", failures: int, message: int, name: int) -> "SmokeSummary":
    listed = document.get("failures") or []
    error = document.get("error")
    copy: SmokeSummary = {**document, "error": error[:message] if error else error,
                          "failures": [{**item, "class": item["class"][:name],
                                        "check": item["check"][:name],
                                        "message": item["message"][:message]}
                                       for item in listed[:failures]]}
    if copy["failures"] != listed or copy["error"] != error:
        copy["truncated"] = True
    return copy


def _size(document: "SmokeSummary") -> int:
    return len(json.dumps(document).encode())


def _xml(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def shown(line: str) -> str:
    """``line`` for a terminal or a log: control characters written out (``\\x1b``,
    ``\\u202e``), not obeyed."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}" if ord(match.group()) < 256
                        else f"\\u{ord(match.group()):04x}", line)
