"""What does a page cost beside the JSON requests that carry the same data?

The pages (api/pages/) render on the server, from the modules the JSON
API's handlers call. A person who opens a project's page, instead of a
script asking ``/v1/projects/P`` and ``/v1/hosts?project=P``, should not
wait noticeably longer: templates and escaping must stay small beside the
directory and SQL reads both make. One run of this script:

1. Generates the benchmark directory of ``common.py`` (10,000 hosts in 500
   projects), bulk-loads it into a throwaway slapd, adds ``user00`` to a
   new ``operations`` project with a password, and serves the API with its
   pages under gunicorn (two workers, SQLite), as the tests do.
2. Fills what the pages show: a run report for each of the 20 hosts of one
   project (one in four failed, with two failed resources), 200 Server
   Admin Log entries over 20 projects, the project's documentation, and
   audit records (a description changed 50 times).
3. Logs ``user00`` in through the login form (CSRF token and session
   cookie) and checks every page and JSON answer once (status 200, the
   expected names in them).
4. Times each pair, interleaved (the order rotating each round), over
   ``--rounds`` rounds (default 15), each request on a fresh connection:

   * ``projects``: ``/projects`` (the 500 projects, with their members and how many
     hosts each has) beside ``/v1/projects`` and ``/v1/hosts`` (the JSON API
     counts no hosts: a script reads them all);
   * ``project``: ``/projects/P`` beside ``/v1/projects/P``,
     ``/v1/hosts?project=P`` and ``/v1/projects/P/documentation`` in turn;
   * ``host``: ``/hosts/FQDN`` beside ``/v1/hosts/FQDN``,
     ``/v1/hosts/FQDN/reports`` and ``/v1/nodes/FQDN``;
   * ``log``: ``/log`` (20 projects, their 10 newest entries each) beside
     ``/v1/log?limit=200`` (as many entries), both anonymous (the log is public);
   * ``changes``: ``/changes`` beside ``/v1/changes``.

5. Prints each pair's medians and the ratio page / JSON, against the
   target: every page within 1.5x of its JSON requests. Benchmarks report;
   they do not fail: the exit status is 0 whatever the numbers.

Usage: ``python benchmarks/pages_benchmark.py [--rounds N] [--json FILE]``
"""

import argparse
import base64
import json
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ldap
from common import (
    SCHEMAS,
    SUFFIX,
    Answer,
    BenchmarkError,
    load_directory,
    print_targets,
    request_once,
    rotated,
    run_script,
    serve_api,
    write_results,
)

from opslab.slapd import ThrowawaySlapd

PROJECT = "proj007"
PASSWORD = secrets.token_urlsafe(16)  # user00's, for this run only
TARGET_RATIO = 1.5
REQUEST_TIMEOUT = 30.0  # seconds: a page of 500 projects on a busy machine


def basic() -> dict[str, str]:
    token = base64.b64encode(f"user00:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def check(answer: Answer, what: str, *needles: str) -> Answer:
    if answer.status != 200:
        raise BenchmarkError(f"{what}: status {answer.status}: {answer.body[:300]!r}")
    for needle in needles:
        if needle.encode() not in answer.body:
            raise BenchmarkError(f"{what}: {needle!r} is not in the answer")
    return answer


def prepare_directory(slapd: ThrowawaySlapd) -> None:
    """user00 gets a password and joins a new operations project (may post anywhere)."""
    connection = slapd.connect()
    try:
        connection.modify_s(f"uid=user00,ou=people,{SUFFIX}",
                            [(ldap.MOD_REPLACE, "userPassword", [PASSWORD.encode()])])
        connection.add_s(f"cn=operations,ou=projects,{SUFFIX}", [
            ("objectClass", [b"groupOfNames"]), ("cn", [b"operations"]),
            ("member", [f"uid=user00,ou=people,{SUFFIX}".encode()])])
    finally:
        connection.unbind_s()


def fill(port: int, hosts: list[str], tokens: dict[str, str]) -> None:
    """Run reports, Server Admin Log entries, documentation and audit records."""
    for number, host in enumerate(hosts):
        failed = number % 4 == 0
        body = {"status": "failed" if failed else "changed", "exit_code": 6 if failed else 2,
                "commit": f"{number:040x}", "environment": "production",
                "resources": {"changed": 3, "failed": 2 if failed else 0},
                "failed_resources": [
                    {"resource": f"Service[app{item}]", "messages": ["Could not start <app>"]}
                    for item in range(2 if failed else 0)],
                "duration": 12.5}
        answer = request_once(port, "POST", f"/v1/hosts/{host}/reports",
                              {"Authorization": f"Bearer {tokens[host]}",
                               "Content-Type": "application/json"},
                              json.dumps(body).encode(), REQUEST_TIMEOUT)
        if answer.status != 201:
            raise BenchmarkError(f"report of {host}: {answer.status} {answer.body[:200]!r}")
    headers = {**basic(), "Content-Type": "application/json"}
    for number in range(200):
        project = f"proj{number % 20:03d}"
        answer = request_once(port, "POST", f"/v1/projects/{project}/log", headers,
                              json.dumps({"message": f"restarted app{number} <b>"}).encode(),
                              REQUEST_TIMEOUT)
        if answer.status != 201:
            raise BenchmarkError(f"log entry: {answer.status} {answer.body[:200]!r}")
    document = "# proj007\n\n" + "\n".join(f"* step {n}: `sudo service app{n} restart`"
                                            for n in range(60))
    answer = request_once(port, "PUT", f"/v1/projects/{PROJECT}/documentation", headers,
                          json.dumps({"text": document, "version": 0}).encode(),
                          REQUEST_TIMEOUT)
    if answer.status not in (200, 201):
        raise BenchmarkError(f"documentation: {answer.status} {answer.body[:200]!r}")
    for number in range(50):
        answer = request_once(port, "PATCH", f"/v1/projects/{PROJECT}", headers,
                              json.dumps({"description": f"Benchmark project, take {number}"})
                              .encode(), REQUEST_TIMEOUT)
        if answer.status != 200:
            raise BenchmarkError(f"description: {answer.status} {answer.body[:200]!r}")


def log_in(port: int) -> dict[str, str]:
    """The headers of user00's session: through the login form, as a browser does it."""
    form = request_once(port, "GET", "/login", timeout=REQUEST_TIMEOUT)
    token = re.search(rb'name="csrf_token" value="([^"]+)"', form.body)
    cookie = form.headers.get("set-cookie", "").split(";")[0]
    if token is None or not cookie:
        raise BenchmarkError("the login form has no CSRF token or no session cookie")
    body = f"csrf_token={token.group(1).decode()}&uid=user00&password={PASSWORD}&next=/"
    answer = request_once(port, "POST", "/login",
                          {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
                          body.encode(), REQUEST_TIMEOUT)
    session = answer.headers.get("set-cookie", "").split(";")[0]
    if answer.status != 302 or not session:
        raise BenchmarkError(f"login: {answer.status} {answer.body[:200]!r}")
    return {"Cookie": session}


def pairs(host: str) -> dict[str, tuple[str, list[str], tuple[str, ...]]]:
    """Each scenario: (the page, the JSON requests carrying its data, what the page shows)."""
    return {
        "projects": ("/projects", ["/v1/projects", "/v1/hosts"], ("proj499",)),
        "project": (f"/projects/{PROJECT}",
                    [f"/v1/projects/{PROJECT}", f"/v1/hosts?project={PROJECT}",
                     f"/v1/projects/{PROJECT}/documentation"], (host, "step 59")),
        "host": (f"/hosts/{host}",
                 [f"/v1/hosts/{host}", f"/v1/hosts/{host}/reports", f"/v1/nodes/{host}"],
                 ("Service[app1]",)),
        "log": ("/log", ["/v1/log?limit=200"], ("restarted app199",)),
        "changes": ("/changes", ["/v1/changes"], (PROJECT,)),
    }


ANONYMOUS = {"log"}  # scenarios read without credentials on both sides


def timed(port: int, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    answer = request_once(port, "GET", path, headers, timeout=REQUEST_TIMEOUT)
    elapsed = time.perf_counter() - started
    if answer.status != 200:
        raise BenchmarkError(f"GET {path}: {answer.status}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="also write the results to this file")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opslab-pages-bench-") as temporary:
        work = Path(temporary)
        slapd = ThrowawaySlapd(SUFFIX, SCHEMAS)
        try:
            expected = load_directory(slapd, work)
            prepare_directory(slapd)
            server, tokens = serve_api(work, slapd, expected, {})
            try:
                return measure(server.port, sorted(h for h in expected
                                                   if expected[h].project == PROJECT),
                               tokens, arguments)
            finally:
                server.stop()
        finally:
            slapd.stop()


def credentials(name: str, session: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The page's headers (the session) and the JSON requests' (Basic), or none at all."""
    return ({}, {}) if name in ANONYMOUS else (session, basic())


def measure(port: int, hosts: list[str], tokens: dict[str, str],
            arguments: argparse.Namespace) -> int:
    started = time.perf_counter()
    fill(port, hosts, tokens)
    print(f"filled: {len(hosts)} run reports, 200 log entries, documentation, 50 changes "
          f"in {time.perf_counter() - started:.1f} s")
    session = log_in(port)
    scenarios = pairs(hosts[0])
    for name, (page, requests, needles) in scenarios.items():
        page_headers, json_headers = credentials(name, session)
        check(request_once(port, "GET", page, page_headers, timeout=REQUEST_TIMEOUT),
              f"{name} page", *needles)
        for path in requests:
            check(request_once(port, "GET", path, json_headers, timeout=REQUEST_TIMEOUT), path)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"page": [], "json": []} for name in scenarios}
    for round_number in range(arguments.rounds):
        for name in rotated(list(scenarios), round_number):
            page, requests, _ = scenarios[name]
            page_headers, json_headers = credentials(name, session)
            sides = ["page", "json"] if round_number % 2 == 0 else ["json", "page"]
            for side in sides:
                if side == "page":
                    samples[name]["page"].append(timed(port, page, page_headers))
                else:
                    samples[name]["json"].append(
                        sum(timed(port, path, json_headers) for path in requests))
    print(f"\n{'scenario':<10} {'page ms':>9} {'JSON ms':>9} {'ratio':>7}   "
          f"(medians of {arguments.rounds} interleaved rounds)")
    results: dict[str, Any] = {}
    targets: dict[str, tuple[bool, str]] = {}
    for name, sides in samples.items():
        page_ms = statistics.median(sides["page"]) * 1000
        json_ms = statistics.median(sides["json"]) * 1000
        ratio = page_ms / json_ms
        print(f"{name:<10} {page_ms:9.1f} {json_ms:9.1f} {ratio:7.2f}")
        results[name] = {"page_ms": page_ms, "json_ms": json_ms, "ratio": ratio,
                         "page_samples": sides["page"], "json_samples": sides["json"]}
        targets[f"{name} page within {TARGET_RATIO}x of its JSON requests"] = (
            ratio <= TARGET_RATIO, f"{ratio:.2f}x ({page_ms:.1f} ms against {json_ms:.1f} ms)")
    results["targets"] = print_targets(targets)
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "pages_benchmark")
