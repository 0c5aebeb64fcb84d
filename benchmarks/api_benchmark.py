"""How many requests per second does the opslab API serve, and how fast, behind gunicorn?

Every instance asks the API for its classification (``GET /v1/nodes/FQDN``)
and posts a report after every Puppet run (``POST /v1/hosts/FQDN/reports``),
both with its own host token. With thousands of instances on a 30-minute run
interval, those two requests are the API's steady load, so they are what this
benchmark measures, end to end, on a real slapd, a real SQLite database and
the real ``opslab api serve`` (gunicorn). One run of this script:

1. Generates a directory of 10,000 hosts in 500 projects (plus people and the
   ``default`` entry) below ``dc=example,dc=org``, as ``enc_benchmark.py``
   does, each host naming its project in ``opslabProject``; bulk-loads it with
   slapadd into a throwaway slapd (:class:`opslab.slapd.ThrowawaySlapd`).
2. Creates a SQLite database in a temporary directory (``opslab.api.store.migrate``)
   holding a token digest for every host, writes an opslab configuration
   file (the directory's ldapi socket, the root DN as the API's writer, two
   gunicorn workers on a free loopback port) and starts ``opslab --config
   FILE api serve``, waiting (with a deadline) until it answers.
3. Checks the answers before measuring anything: classifications of sample
   hosts against the generated data, a report's project, a foreign token
   refused.
4. Loads each scenario from separate client processes (this same file run
   with ``--client``, so the client's CPU is not the server's): several
   threads, each with its own ``http.client`` connection (keep-alive asked
   for, and reconnecting when the server closes), random hosts, each
   request with a timeout. A few seconds of warm-up are not counted; then a
   fixed measuring window (and a cap on the request count). Closed loop: each
   connection sends its next request as soon as it has the answer, so the
   throughput is the most the server gives at that concurrency, and by
   Little's law the mean latency is connections / throughput. Scenarios:

   * ``floor``: an unauthenticated request for a route that does not exist
     (a 404 from the API's own error handler): gunicorn plus Flask, no LDAP,
     no SQL; the most any route can reach on this machine;
   * ``classify``: ``GET /v1/nodes/FQDN`` with the host's token (expects 200);
   * ``report``: ``POST /v1/hosts/FQDN/reports`` with the host's token and a
     run report (expects 201); afterwards the number of stored reports is
     checked against the 201s the clients saw.

   Any other status and any failed request (timeout, reset) counts as an
   error and is reported. For each scenario: requests/s, median, p90 and p99
   latency in ms, errors, connections opened, and the CPU spent per request
   by the gunicorn workers, slapd and the client, read from /proc: the
   machine's 2 cores are shared by all three, and those figures say who is
   the bottleneck. The share of the machine's CPU that went to none of them
   (the kernel, or some other process disturbing the measurement) is shown
   too: a large one means the run should be repeated on a quiet machine.
5. Prints PASS/FAIL against the targets: classification at least 500
   requests/s with p99 under 50 ms; run reports at least 300 per second.
   Benchmarks report; they do not fail: the exit status is 0 whatever the
   numbers, non-zero only if the benchmark itself cannot run (a server does
   not start, or answers wrongly before the load).

gunicorn, slapd and the client processes are always stopped and the
temporary directories removed.

Usage: ``python benchmarks/api_benchmark.py [--seconds N] [--warmup N] [--connections N]
[--client-processes N] [--json FILE]``
"""

import argparse
import functools
import json
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    CLIENT_START_MARGIN,
    REQUEST_TIMEOUT,
    SCHEMAS,
    SEED,
    SUFFIX,
    BenchmarkError,
    ClientProcesses,
    CpuSample,
    ExpectedNode,
    Request,
    ServedApi,
    load_client,
    load_directory,
    print_targets,
    request_once,
    run_script,
    seeded_random,
    serve_api,
    sleep_until,
    summary,
    write_results,
)

WORKERS = 2
SAMPLE_HOSTS = 20  # checked before the load

MAX_REQUESTS = 200_000  # per scenario, over all client processes, warm-up included

CLASSIFY_RPS_TARGET = 500.0
CLASSIFY_P99_TARGET_MS = 50.0
REPORT_RPS_TARGET = 300.0


@dataclass(frozen=True)
class Scenario:
    """One kind of request to load the API with."""

    name: str
    method: str
    path: str  # with {host}
    expect: int
    authenticated: bool
    description: str


SCENARIOS = (
    Scenario("floor", "GET", "/v1/no-such-route/{host}", 404, False,
             "unauthenticated 404: gunicorn + Flask, no LDAP, no SQL"),
    Scenario("classify", "GET", "/v1/nodes/{host}", 200, True,
             "GET /v1/nodes/FQDN with the host's token"),
    Scenario("report", "POST", "/v1/hosts/{host}/reports", 201, True,
             "POST /v1/hosts/FQDN/reports with the host's token"),
)


# --- the database --------------------------------------------------------------------------


def count_reports(url: str) -> int:
    """How many run reports the database holds."""
    from sqlalchemy import func, select

    from opslab.api.store import RunReport, engine_for, sessions

    engine = engine_for(url)
    try:
        with sessions(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(RunReport)) or 0)
    finally:
        engine.dispose()


# --- the load-generating client (a separate process) ---------------------------------------


@functools.cache
def tokens_of(path: str) -> tuple[list[str], dict[str, str]]:
    """The hosts (sorted) and their tokens, read once per client process."""
    tokens: dict[str, str] = json.loads(Path(path).read_text(encoding="utf-8"))
    return sorted(tokens), tokens


def make_request(spec: dict[str, Any], index: int, rng: random.Random) -> Request:
    """The scenario's request for a random host, with the host's token when it needs one."""
    hosts, tokens = tokens_of(spec["tokens"])
    scenario = next(s for s in SCENARIOS if s.name == spec["scenario"])
    host = rng.choice(hosts)
    headers = {"Accept": "application/json", "Connection": "keep-alive"}
    if scenario.authenticated:
        headers["Authorization"] = f"Bearer {tokens[host]}"
    body = None
    if scenario.method == "POST":
        headers["Content-Type"] = "application/json"
        body = json.dumps({
            "status": "changed", "exit_code": 2, "commit": f"{rng.getrandbits(160):040x}",
            "environment": "production", "resources": {"changed": 3, "failed": 0},
            "failed_resources": [], "duration": round(rng.uniform(1, 60), 1),
        }).encode()
    return Request(scenario.method, scenario.path.format(host=host), headers, body)


# --- one scenario --------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario, arguments: argparse.Namespace, server: ServedApi, slapd_pid: int,
    workdir: Path, tokens_path: Path,
) -> dict[str, Any]:
    """Load the server with ``scenario`` from the client processes; the merged results."""
    processes = arguments.client_processes
    per_process = [arguments.connections // processes + (i < arguments.connections % processes)
                   for i in range(processes)]
    start_at = time.time() + CLIENT_START_MARGIN
    warm_end = start_at + arguments.warmup
    end_at = warm_end + arguments.seconds
    with ClientProcesses(Path(__file__).resolve(), workdir) as clients:
        for number, connections in enumerate(per_process):
            clients.start(f"{scenario.name}-{number}", {
                "scenario": scenario.name, "port": server.port, "tokens": str(tokens_path),
                "threads": connections, "keep_alive": True, "schedule": None,
                "count": MAX_REQUESTS // processes, "seed": f"{SEED}-{scenario.name}-{number}",
                "start_at": start_at, "end_at": end_at,
            })
        sleep_until(warm_end)
        before = CpuSample.take(server, slapd_pid)
        sleep_until(end_at)
        after = CpuSample.take(server, slapd_pid)
        results = clients.results(deadline=end_at + REQUEST_TIMEOUT + 30)
    return merge_results(scenario, results, before, after, warm_end, arguments.seconds)


def merge_results(
    scenario: Scenario, results: Sequence[dict[str, Any]], before: CpuSample,
    after: CpuSample, warm_end: float, seconds: float,
) -> dict[str, Any]:
    """One scenario's figures from its client processes' results and the CPU samples:
    requests sent after the warm-up, and every expected answer (for the stored count)."""
    timings = [timing for result in results for timing in result["timings"]]
    measured = [(sent, done, outcome) for _, sent, done, outcome in timings if sent >= warm_end]
    if not measured:
        raise BenchmarkError(f"{scenario.name}: no request completed in the measuring window")
    statuses = Counter(outcome for _, _, outcome in measured)
    window = max(done for _, done, _ in measured) - warm_end
    count = len(measured)
    used = after.since(before)
    client_cpu = sum(result["cpu_s"] for result in results)
    return {
        "description": scenario.description,
        "expected_status": scenario.expect,
        "requests": count,
        "window_s": window,
        "requests_per_s": count / window,
        "latency_ms": summary([(done - sent) * 1000 for sent, done, _ in measured]),
        "errors": sum(n for outcome, n in statuses.items() if outcome != str(scenario.expect)),
        "statuses": dict(statuses),
        "connections_opened": sum(result["connections_opened"] for result in results),
        "all_expected": sum(outcome == str(scenario.expect) for *_, outcome in timings),
        "cpu_ms_per_request": {"workers": used.workers * 1000 / count,
                               "master": used.master * 1000 / count,
                               "slapd": used.slapd * 1000 / count,
                               "client": client_cpu * 1000 / count},
        "client_cpu_share": client_cpu / seconds,
        "machine_busy_share": used.busy_share,
        "other_busy_share": used.other_share(client_cpu),
        "stuck_threads": sum(result["stuck_threads"] for result in results),
    }


def print_scenario(name: str, row: dict[str, Any], cores: int) -> None:
    """One scenario's figures."""
    latency = row["latency_ms"]
    print(f"{name:<9} {row['requests_per_s']:8.1f} req/s  median {latency['median']:6.1f}  "
          f"p90 {latency['p90']:6.1f}  p99 {latency['p99']:6.1f}  max {latency['max']:6.1f} ms"
          f"  errors {row['errors']}")
    cpu = row["cpu_ms_per_request"]
    print(f"          {row['requests']:,} requests in {row['window_s']:.1f} s; "
          f"{row['connections_opened']:,} connections opened (warm-up included); "
          f"statuses {json.dumps(row['statuses'], sort_keys=True)}")
    print(f"          CPU per request: workers {cpu['workers']:.2f} ms, slapd "
          f"{cpu['slapd']:.2f} ms, client {cpu['client']:.2f} ms, master {cpu['master']:.2f} ms;"
          f" machine busy {row['machine_busy_share'] * 100:.0f}% of {cores} cores "
          f"(of which {row['other_busy_share'] * 100:.0f}% neither server, slapd nor client: "
          f"kernel, other processes), client {row['client_cpu_share'] * 100:.0f}% of one core")
    if row["stuck_threads"]:
        print(f"          {row['stuck_threads']} client threads did not finish in time")


# --- checks before the load ----------------------------------------------------------------


def check_answers(
    port: int, tokens: dict[str, str], expected: dict[str, ExpectedNode], rng: random.Random,
) -> int:
    """Fail unless sample answers are right; returns the number of reports it posted."""
    sample = rng.sample(sorted(expected), SAMPLE_HOSTS)
    for host in sample:
        status, _, body = request_once(port, "GET", f"/v1/nodes/{host}",
                                       {"Authorization": f"Bearer {tokens[host]}"})
        if status != 200:
            raise BenchmarkError(f"GET /v1/nodes/{host}: {status} {body[:300]!r}")
        answer = json.loads(body)
        got = frozenset(answer.get("classes") or [])  # a list, or class -> parameters
        want = expected[host]
        if got != want.classes or answer.get("environment") != want.environment:
            raise BenchmarkError(
                f"GET /v1/nodes/{host}: classes {sorted(got)}, environment "
                f"{answer.get('environment')!r}; expected {sorted(want.classes)}, "
                f"{want.environment!r}")
    host, other = sample[0], sample[1]
    status = request_once(port, "GET", f"/v1/nodes/{host}",
                          {"Authorization": f"Bearer {tokens[other]}"}).status
    if status != 403:
        raise BenchmarkError(f"GET /v1/nodes/{host} with {other}'s token: {status}, not 403")
    report = {"status": "changed", "exit_code": 2, "commit": "a" * 40,
              "environment": "production", "resources": {"changed": 3, "failed": 0},
              "failed_resources": [], "duration": 4.2}
    status, _, body = request_once(
        port, "POST", f"/v1/hosts/{host}/reports",
        {"Authorization": f"Bearer {tokens[host]}", "Content-Type": "application/json"},
        json.dumps(report).encode())
    if status != 201 or json.loads(body).get("project") != expected[host].project:
        raise BenchmarkError(f"POST /v1/hosts/{host}/reports: {status} {body[:300]!r}")
    status = request_once(port, "GET", "/v1/no-such-route").status
    if status != 404:
        raise BenchmarkError(f"GET /v1/no-such-route: {status}, not 404")
    print(f"checked: {SAMPLE_HOSTS} classifications match the generated data, a foreign "
          "token is refused (403), a report is stored with its project (201)")
    return 1


# --- reporting -----------------------------------------------------------------------------


def summary_targets(scenarios: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """PASS/FAIL per target, printed; returned for the JSON."""
    classify, report = scenarios["classify"], scenarios["report"]
    targets = print_targets({
        f"classification at least {CLASSIFY_RPS_TARGET:g} requests/s": (
            classify["requests_per_s"] >= CLASSIFY_RPS_TARGET,
            f"{classify['requests_per_s']:.1f} req/s"),
        f"classification p99 under {CLASSIFY_P99_TARGET_MS:g} ms": (
            classify["latency_ms"]["p99"] < CLASSIFY_P99_TARGET_MS,
            f"{classify['latency_ms']['p99']:.1f} ms"),
        f"run reports at least {REPORT_RPS_TARGET:g} per second": (
            report["requests_per_s"] >= REPORT_RPS_TARGET,
            f"{report['requests_per_s']:.1f} req/s"),
    })
    errors = {name: row["errors"] for name, row in scenarios.items() if row["errors"]}
    print(f"errors (status other than expected, or failed requests): "
          f"{json.dumps(errors) if errors else 'none'}")
    return targets


def main(argv: list[str] | None = None) -> int:
    """Run every scenario once and print the report; 0 whatever the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measuring window per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="warm-up per scenario, not counted (default 3)")
    parser.add_argument("--connections", type=int, default=8,
                        help="concurrent connections, over all client processes (default 8)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="client processes sharing the connections (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--client", metavar="SPEC", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.client:
        return load_client(arguments.client, make_request)
    if arguments.seconds <= 0 or arguments.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")
    if not 1 <= arguments.client_processes <= arguments.connections:
        parser.error("--client-processes must be between 1 and --connections")

    from opslab.slapd import ThrowawaySlapd

    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "seconds": arguments.seconds, "warmup": arguments.warmup,
        "connections": arguments.connections, "client_processes": arguments.client_processes,
        "workers": WORKERS,
    }
    with tempfile.TemporaryDirectory(prefix="opslab-api-bench-") as scratch:
        workdir = Path(scratch)
        slapd = ThrowawaySlapd(SUFFIX, SCHEMAS)
        server: ServedApi | None = None
        try:
            print("\n== 1. directory, database, server ==")
            expected = load_directory(slapd, workdir)
            server, tokens = serve_api(workdir, slapd, expected, {"api": {"workers": WORKERS}})
            tokens_path = workdir / "tokens.json"
            tokens_path.write_text(json.dumps(tokens), encoding="utf-8")
            tokens_path.chmod(0o600)
            posted = check_answers(server.port, tokens, expected, seeded_random())

            print(f"\n== 2. load: {arguments.connections} connections from "
                  f"{arguments.client_processes} client process(es), {arguments.warmup:g} s "
                  f"warm-up, then {arguments.seconds:g} s measured, per scenario; "
                  f"{WORKERS} gunicorn workers ==")
            scenarios: dict[str, dict[str, Any]] = {}
            for scenario in SCENARIOS:
                print(f"-- {scenario.name}: {scenario.description} (expects {scenario.expect})",
                      flush=True)
                row = run_scenario(scenario, arguments, server, slapd.pid, workdir,
                                   tokens_path)
                scenarios[scenario.name] = row
                print_scenario(scenario.name, row, cores)
                if scenario.name == "report":
                    posted += row["all_expected"]
                    stored = count_reports(server.database)
                    row["stored_reports"] = stored
                    print(f"          reports stored {stored:,}, 201s seen by the clients "
                          f"{posted:,}: {'consistent' if stored == posted else 'MISMATCH'}")
            results["scenarios"] = scenarios
        finally:
            if server is not None:
                server.stop()
            slapd.destroy()
    results["targets"] = summary_targets(results["scenarios"])
    print(f"(closed loop: mean latency = {arguments.connections} connections / throughput; "
          "the server, slapd and the client share the machine's cores)")
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "api_benchmark")
