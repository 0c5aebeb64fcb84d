"""The run as JUnit XML for Jenkins' junit step (contract section 5.4).

One ``<testsuite>`` per cloned host (its certname), with a ``<testcase>`` for each Puppet
run (the target branch, the change, the change again, which must change nothing) and for
each smoke check (classname ``HOST.CLASS``, inside and outside checks apart); a suite
``secrets`` with one case, failed with the files and lines found (never the secret). The
junit plugin counts cases, not the suites' counters, and takes any failure as UNSTABLE.
"""

import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .result import SecretFound


@dataclass
class Case:
    """One test: passed unless ``failure`` (a one-line message) or ``skipped`` is set."""

    classname: str
    name: str
    seconds: float = 0.0
    failure: str | None = None
    detail: str = ""
    skipped: str | None = None
    error: bool = False  # the test could not run (an <error>, not a <failure>)


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)


def secrets_suite(secrets: list[SecretFound], error: str | None) -> Suite:
    """The secret scan as a suite of one case."""
    case = Case("secrets", "the change adds no private key, password or token")
    if error:
        case.failure, case.error = f"the scan could not run: {error}", True
    elif secrets:
        case.failure = f"{len(secrets)} secret(s) found"
        case.detail = "\n".join(f"{item.file}:{item.line}: {item.kind}" for item in secrets)
    return Suite("secrets", [case])


def write(path: Path, suites: list[Suite]) -> None:
    """Write ``suites`` to ``path`` whole or not at all (a temporary file, then renamed)."""
    root = ET.Element("testsuites", name="opslab CI")
    for suite in suites:
        element = ET.SubElement(root, "testsuite", name=suite.name, tests=str(len(suite.cases)),
                                failures=str(sum(1 for case in suite.cases
                                                 if case.failure and not case.error)),
                                errors=str(sum(1 for case in suite.cases if case.error)),
                                skipped=str(sum(1 for case in suite.cases if case.skipped)))
        for case in suite.cases:
            item = ET.SubElement(element, "testcase", classname=_clean(case.classname),
                                 name=_clean(case.name), time=f"{case.seconds:.3f}")
            if case.failure is not None:
                problem = ET.SubElement(item, "error" if case.error else "failure",
                                        message=_clean(case.failure)[:1000])
                problem.text = _clean(case.detail)
            elif case.skipped is not None:
                ET.SubElement(item, "skipped", message=_clean(case.skipped))
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _clean(text: str) -> str:
    """``text`` without what XML 1.0 cannot hold (control characters but tab and newline)."""
    return "".join(character for character in text
                   if character in "\t\n\r" or (character >= " " and character != "\x7f"
                                                and not 0xD800 <= ord(character) <= 0xDFFF
                                                and character not in "\ufffe\uffff"))
