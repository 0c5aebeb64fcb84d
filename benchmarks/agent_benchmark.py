"""What does an agent check that finds nothing changed cost, on the instance and on the
API, and does one API process carry 10,000 agents checking in every minute?

Every instance's agent checks once per ``agent.check_interval`` (60 s): it
delivers its spool (empty when nothing happened), sends one ``GET
/v1/nodes/FQDN/target`` with ``If-None-Match: <ETag of the target it last
acted on>``, which the API answers 304, reads its state.json and compares the
sudoers drop-in with what the target asks for. That no-change check is what
a fleet does almost all the time, so it is what this benchmark measures, on a
real slapd, a real git remote, a real SQLite database and the real ``opslab
api serve`` (gunicorn). One run of this script:

1. Setup. Generates the 10,000-host directory (500 projects, as in the other
   benchmarks) and bulk-loads it into a throwaway slapd; makes a bare git
   repository with a ``production`` branch of one commit, the API's
   ``branches.remote`` (``api.heads_ttl`` left at its default, 30 s: each
   worker lists the remote at most that often); migrates a SQLite database
   holding a host token for every host; starts ``opslab api serve`` with
   ``api.workers: 1``. *One API process* means that: gunicorn's master (it
   supervises, it serves nothing) and ONE worker process, with the default
   ``api.threads`` (4 threads); the CPU of both is counted as the API's. By default
   the simulation is repeated with 2 workers, for the headroom. Sample
   targets are checked (project, environment, the branch's commit, a 304 for
   their own ETag, a foreign token refused) before anything is measured.
   Then every host's target is fetched once as a new agent would (a 200 with
   an ETag): that warms the API and gives each simulated agent the real ETag
   the API answered.
2. The agent side. One generated host gets an instance's configuration
   (``enc.api_url``, ``enc.api_token_file``, ``apply.certname``,
   ``apply.state_dir`` and ``agent.sudoers_file`` in the work directory).
   Puppet cannot run here, so the state after a successful first run is
   seeded as the agent writes it (``{"etag", "target", "applied_at": now,
   "failed": null}``) from a real ``ApiClient.target`` answer, and the sudoers
   drop-in is written as the agent would render it, so the check compares it
   for real. Then ``Agent.check()`` runs in this process (as in the
   long-running ``opslab agent run``) many times: CPU per check from
   ``time.process_time()``, wall per check, median and p99, and the API's CPU
   per check with nothing else loading it; every outcome must be
   "unchanged". Then whole ``opslab agent run --once`` processes (as a
   systemd timer would start them), interleaved with ``python -c pass`` (the
   interpreter's own start-up, the floor): CPU per process from
   ``getrusage(RUSAGE_CHILDREN)``, and wall, medians. state.json must be
   byte for byte the same afterwards: nothing was applied.
3. The simulation. Each of the 10,000 agents gets a seeded random phase in
   [0, interval) and checks at its phase, then every interval after, with
   its own token and its own ETag: one full interval is 10,000 requests,
   about 167 per second. OPEN LOOP: requests go out at their scheduled times
   whatever the earlier ones are doing, and latency is measured from the
   scheduled time, so a server falling behind shows as queueing in the
   latency, not as a slower client (no coordinated omission). The load comes
   from separate client processes (this same file with ``--client``), each
   with a pool of threads; every check opens a new connection, as the agent
   does. The client checks itself: how late requests were sent against their
   schedule, and how often no thread was free when one was due. If it could
   not keep the schedule, the report says so.
4. Reports the agent's CPU per check (the target is for the long-running
   mode; the timer mode pays the interpreter's start-up and the imports on
   top, shown beside it), and for the simulation: offered and achieved rate,
   latency from the schedule (median, p90, p99, max) and from the send, the
   statuses (all must be 304: a 200 means the ETag was not stable, and fails
   the verdict, as does any error), the API's CPU as a share of one core and
   per check, slapd's, the client's, and the machine's busy share of all its
   cores (a large share used by none of them means the machine was disturbed
   and the run should be repeated). PASS/FAIL against the targets: agent CPU
   per no-change check under 50 ms (median of the in-process checks); 10,000
   agents on a 60-second interval served by one API process with p99 under
   100 ms, every answer a 304, and the achieved rate within 1% of the offered
   one. Benchmarks report; they do not fail: the exit status is 0 whatever
   the numbers, non-zero only when the benchmark cannot run or the system
   answers wrongly before the load.

slapd, gunicorn and the client processes are always stopped and the
temporary directory removed.

Usage: ``python benchmarks/agent_benchmark.py [--quick] [--seconds N] [--workers 1,2]
[--checks N] [--process-runs N] [--threads N] [--client-processes N] [--json FILE]``
"""

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from common import (
    CLIENT_START_MARGIN,
    COMMAND_TIMEOUT,
    REQUEST_TIMEOUT,
    SCHEMAS,
    SEED,
    SUFFIX,
    Answer,
    BenchmarkError,
    ClientProcesses,
    CpuSample,
    ExpectedNode,
    Request,
    ServedApi,
    bytecode_environment,
    find_script,
    git,
    load_client,
    load_directory,
    percentile,
    print_targets,
    request_once,
    rotated,
    run_measured,
    run_script,
    seeded_random,
    serve_api,
    sleep_until,
    succeeded,
    summary,
    verdict,
    write_results,
)

from opslab.agent.client import USER_AGENT

INTERVAL = 60.0  # seconds: agent.check_interval's default
SAMPLE_HOSTS = 20  # targets checked before anything is measured
WARM_UP_THREADS = 4  # the parent's connections for the warm-up pass
REWARM_HOSTS = 1000  # conditional GETs that warm a second server's workers
AGENT_WARM_UP = 10  # in-process checks before the measured ones
LATE_MS = 5.0  # a request sent later than this after its scheduled time was sent late

AGENT_CPU_TARGET_MS = 50.0
P99_TARGET_MS = 100.0
SUSTAINED_SHARE = 0.99  # achieved rate / offered rate


class Defaults(NamedTuple):
    """What the options not given default to, in a full run or a quick one."""

    seconds: float
    checks: int
    process_runs: int
    workers: tuple[int, ...]


FULL = Defaults(seconds=60.0, checks=300, process_runs=15, workers=(1, 2))
QUICK = Defaults(seconds=15.0, checks=100, process_runs=5, workers=(1,))


# --- the control repository ----------------------------------------------------------------


def make_control_repository(workdir: Path) -> tuple[str, str]:
    """A bare repository whose ``production`` branch holds one commit: its path (the API's
    ``branches.remote``) and that commit."""
    work, bare = workdir / "control", workdir / "control.git"
    git("init", "--quiet", "--initial-branch=production", str(work))
    (work / "README").write_text("The agent benchmark's control repository.\n",
                                 encoding="utf-8")
    git("-C", str(work), "add", "README")
    git("-C", str(work), "commit", "--quiet", "--message", "one commit")
    git("clone", "--quiet", "--bare", str(work), str(bare))
    commit = git("-C", str(bare), "rev-parse", "refs/heads/production").decode().strip()
    print(f"control repository: a bare repository, production at {commit[:12]}")
    return str(bare), commit


# --- the API's answers ---------------------------------------------------------------------


def fetch_target(port: int, host: str, token: str, etag: str | None) -> Answer:
    """One check as the agent makes it: a new connection, ``GET /v1/nodes/FQDN/target``
    with the host's token, and ``If-None-Match`` when there is an ETag."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    return request_once(port, "GET", f"/v1/nodes/{host}/target", headers)


def check_targets(
    port: int, tokens: dict[str, str], expected: dict[str, ExpectedNode], commit: str,
    rng: random.Random,
) -> None:
    """Fail unless sample targets are right, are 304 for their own ETag, and a foreign
    token is refused."""
    sample = rng.sample(sorted(expected), SAMPLE_HOSTS)
    for host in sample:
        answer = fetch_target(port, host, tokens[host], None)
        if answer.status != 200 or not answer.headers.get("etag"):
            raise BenchmarkError(f"GET /v1/nodes/{host}/target: {answer.status} "
                                 f"{answer.body[:300]!r}")
        document = json.loads(answer.body)
        want = expected[host]
        # Only the production branch exists, so other environments have no commit.
        want_commit = commit if want.environment == "production" else None
        got = (document.get("project"), document.get("environment"), document.get("commit"))
        if got != (want.project, want.environment, want_commit):
            raise BenchmarkError(f"GET /v1/nodes/{host}/target: project, environment, commit "
                                 f"{got}; expected {(want.project, want.environment, want_commit)}")
        again = fetch_target(port, host, tokens[host], answer.headers["etag"])
        if again.status != 304:
            raise BenchmarkError(f"GET /v1/nodes/{host}/target with its ETag: {again.status}, "
                                 "not 304")
    host, other = sample[0], sample[1]
    status = fetch_target(port, host, tokens[other], None).status
    if status != 403:
        raise BenchmarkError(f"GET /v1/nodes/{host}/target with {other}'s token: {status}, "
                             "not 403")
    print(f"checked: {SAMPLE_HOSTS} targets carry the generated project and environment and "
          "the branch's commit, are 304 for their own ETag; a foreign token is refused (403)")


def warm_up(
    port: int, hosts: Sequence[str], tokens: dict[str, str], etags: dict[str, str] | None,
) -> dict[str, str]:
    """Ask for each host's target as its agent would, from a few threads: without an ETag
    (``etags`` None: 200s expected; returns the ETags answered), or with each host's
    ETag (304s expected: the ETags hold in a freshly started API). Warms the workers."""
    expect = 200 if etags is None else 304

    def ask(host: str) -> tuple[str, str]:
        answer = fetch_target(port, host, tokens[host], etags[host] if etags else None)
        if answer.status != expect or not answer.headers.get("etag"):
            raise BenchmarkError(f"GET /v1/nodes/{host}/target: {answer.status}, expected "
                                 f"{expect} with an ETag")
        return host, answer.headers["etag"]

    started = time.perf_counter()
    with ThreadPoolExecutor(WARM_UP_THREADS) as pool:
        answered = dict(pool.map(ask, hosts))
    elapsed = time.perf_counter() - started
    print(f"warm-up: {len(hosts):,} targets ({expect}) in {elapsed:.1f} s, "
          f"{len(hosts) / elapsed:.0f}/s from {WARM_UP_THREADS} connections")
    return answered


# --- the agent side ------------------------------------------------------------------------


class Instance(NamedTuple):
    """One simulated instance: its configuration file, and what its agent keeps."""

    host: str
    config_path: Path
    state_path: Path  # STATE_DIR/agent/state.json
    sudoers_path: Path


def write_agent_config(workdir: Path, port: int, host: str, token: str) -> Instance:
    """An instance's opslab configuration for ``host``, everything it writes in ``workdir``."""
    agent_dir = workdir / "instance"
    (agent_dir / "sudoers.d").mkdir(parents=True)
    token_file = agent_dir / "api.token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    instance = Instance(host, agent_dir / "opslab.yaml", agent_dir / "state" / "agent" /
                        "state.json", agent_dir / "sudoers.d" / "opslab-project")
    instance.config_path.write_text(yaml.safe_dump({
        "enc": {"api_url": f"http://127.0.0.1:{port}", "api_token_file": str(token_file)},
        "apply": {"certname": host, "state_dir": str(agent_dir / "state")},
        "agent": {"sudoers_file": str(instance.sudoers_path)},
    }), encoding="utf-8")
    return instance


def seed_agent_state(instance: Instance) -> None:
    """The instance as after a successful first run: state.json from a real target answer,
    written as ``Agent._apply`` writes it, and the sudoers drop-in as the agent renders
    it."""
    from opslab.agent import sudoers
    from opslab.agent.client import ApiClient
    from opslab.config import load

    target = ApiClient(load(str(instance.config_path)).enc).target(instance.host, None)
    if target is None or not target.etag:
        raise BenchmarkError("the API answered the agent's first fetch without a target")
    # The spool as a first run leaves it: there, and empty (its report delivered).
    (instance.state_path.parent / "spool").mkdir(parents=True)
    state = {"etag": target.etag, "target": target.document, "applied_at": time.time(),
             "failed": None}
    instance.state_path.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    instance.sudoers_path.write_text(sudoers.render(target.document["project"] or "",
                                                    list(target.document["sudo"])),
                                     encoding="utf-8")
    instance.sudoers_path.chmod(0o440)
    print(f"agent: {instance.host}, state seeded from its target (commit "
          f"{str(target.document['commit'])[:12]}, sudo for "
          f"{', '.join(target.document['sudo']) or 'nobody'})")


def measure_checks(
    config_path: Path, checks: int, server: ServedApi, slapd_pid: int,
) -> dict[str, Any]:
    """``Agent.check()`` in this process, ``checks`` times after a warm-up: CPU and wall
    per check, and the API's CPU per check with nothing else loading it."""
    from opslab.agent.agent import Agent
    from opslab.agent.cli import agent_version
    from opslab.config import load

    messages: list[str] = []

    class Said(logging.Handler):
        """What the agent says: a check that finds nothing changed says nothing."""

        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("opslab").addHandler(Said(logging.INFO))
    logging.getLogger("opslab").setLevel(logging.INFO)
    agent = Agent(load(str(config_path)), agent_version())

    def check() -> tuple[float, float]:
        """One check that must find nothing changed and say nothing: its CPU and wall ms."""
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        result = agent.check()
        wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started
        if result.outcome != "unchanged" or messages:
            raise BenchmarkError(f"a check: {result.outcome} {result.detail!r}, not "
                                 f"unchanged; the agent said {messages}")
        return cpu * 1000, wall * 1000

    for _ in range(AGENT_WARM_UP):
        check()
    before = CpuSample.take(server, slapd_pid)
    cpu_ms, wall_ms = zip(*(check() for _ in range(checks)), strict=True)
    used = CpuSample.take(server, slapd_pid).since(before)
    return {
        "checks": checks,
        "cpu_ms": {"median": statistics.median(cpu_ms), "p99": percentile(cpu_ms, 99)},
        "wall_ms": {"median": statistics.median(wall_ms), "p99": percentile(wall_ms, 99)},
        "api_cpu_ms_per_check": used.server * 1000 / checks,
        "slapd_cpu_ms_per_check": used.slapd * 1000 / checks,
    }


def measure_processes(config_path: Path, runs: int, workdir: Path) -> dict[str, Any]:
    """``opslab agent run --once`` as a timer starts it, and the interpreter's floor
    (``python -c pass``), interleaved: median CPU and wall per process, in ms. The agent
    names its check's outcome last: it must be ``unchanged``."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "opslab agent run --once": [find_script("opslab"), "--config", str(config_path),
                                    "agent", "run", "--once"],
    }
    outcomes = {"python -c pass": "", "opslab agent run --once": "unchanged"}
    environment = bytecode_environment(workdir / "pycache", drop=("OPSLAB_CONFIG",))

    def run(name: str) -> tuple[float, float]:
        result = succeeded(run_measured(commands[name], COMMAND_TIMEOUT, environment), name)
        if not result.stderr.strip().endswith(outcomes[name]):
            raise BenchmarkError(f"{name}: not {outcomes[name]}:\n{result.stderr[-2000:]}")
        return result.cpu * 1000, result.seconds * 1000

    for name in commands:  # warm-up: bytecode cached, files in the page cache; not counted
        run(name)
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    wall: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(runs):
        for name in rotated(list(commands), round_number):
            cpu_ms, wall_ms = run(name)
            cpu[name].append(cpu_ms)
            wall[name].append(wall_ms)
    return {name: {"cpu_ms": statistics.median(cpu[name]),
                   "wall_ms": statistics.median(wall[name])} for name in commands}


def print_agent(checks: dict[str, Any], processes: dict[str, Any]) -> None:
    """The agent side's figures."""
    cpu, wall = checks["cpu_ms"], checks["wall_ms"]
    print(f"in process (the long-running `opslab agent run`): {checks['checks']} checks, "
          "all unchanged")
    print(f"  agent CPU per check   median {cpu['median']:6.2f} ms   p99 {cpu['p99']:6.2f} ms")
    print(f"  agent wall per check  median {wall['median']:6.2f} ms   p99 {wall['p99']:6.2f} ms"
          "   (the API's answer included)")
    print(f"  API CPU per check, nothing else loading it: gunicorn "
          f"{checks['api_cpu_ms_per_check']:.2f} ms, slapd {checks['slapd_cpu_ms_per_check']:.2f}"
          " ms")
    print("as a process (a timer's `opslab agent run --once`), medians, interleaved runs:")
    print(f"  {'':<26} {'CPU ms':>8} {'wall ms':>8}")
    for name, row in processes.items():
        print(f"  {name:<26} {row['cpu_ms']:8.1f} {row['wall_ms']:8.1f}")
    agent, floor = processes["opslab agent run --once"], processes["python -c pass"]
    print(f"  {'opslab minus the floor':<26} {agent['cpu_ms'] - floor['cpu_ms']:8.1f} "
          f"{agent['wall_ms'] - floor['wall_ms']:8.1f}   (imports, configuration, the check)")
    print(f"  {'ratio opslab / floor':<26} {agent['cpu_ms'] / floor['cpu_ms']:7.1f}x "
          f"{agent['wall_ms'] / floor['wall_ms']:7.1f}x")


# --- the simulation: its client (a separate process) ---------------------------------------


def make_request(spec: dict[str, Any], index: int, rng: random.Random) -> Request:
    """Check ``index`` of the plan, as its agent makes it (see :func:`fetch_target`)."""
    host, token, etag = spec["requests"][index]
    return Request("GET", f"/v1/nodes/{host}/target",
                   {"Authorization": f"Bearer {token}", "Accept": "application/json",
                    "User-Agent": USER_AGENT, "If-None-Match": etag})


# --- the simulation: schedule, run, figures ------------------------------------------------


def plan_checks(
    hosts: Sequence[str], seconds: float, interval: float, rng: random.Random,
) -> list[tuple[float, str]]:
    """Every check in the first ``seconds``: (offset in s, host), each host at its random
    phase in [0, interval) and every ``interval`` after; in time order."""
    checks = []
    for host in hosts:
        moment = rng.uniform(0, interval)
        while moment < seconds:
            checks.append((moment, host))
            moment += interval
    return sorted(checks)


def simulate(
    server: ServedApi, slapd_pid: int, workdir: Path, workers: int,
    checks: Sequence[tuple[float, str]], tokens: dict[str, str], etags: dict[str, str],
    arguments: argparse.Namespace,
) -> dict[str, Any]:
    """Run ``checks`` against the server from the client processes; the merged figures."""
    processes = arguments.client_processes
    start_at = time.time() + CLIENT_START_MARGIN
    with ClientProcesses(Path(__file__).resolve(), workdir) as clients:
        for number in range(processes):
            # Every n-th check: each process gets the same rate, spread over the window.
            share = checks[number::processes]
            clients.start(f"{workers}w-{number}", {
                "port": server.port, "threads": arguments.threads // processes,
                "keep_alive": False, "seed": f"{SEED}-{workers}-{number}",
                "start_at": start_at, "schedule": [start_at + offset for offset, _ in share],
                "requests": [[host, tokens[host], etags[host]] for _, host in share],
            })
        sleep_until(start_at)
        before = CpuSample.take(server, slapd_pid)
        results = clients.results(deadline=start_at + arguments.seconds + REQUEST_TIMEOUT + 30)
        used = CpuSample.take(server, slapd_pid).since(before)
        window = time.time() - start_at
    return merge_results(results, used, window, start_at, workers, len(checks), arguments)


def merge_results(
    results: Sequence[dict[str, Any]], used: CpuSample, window: float, start_at: float,
    workers: int, planned: int, arguments: argparse.Namespace,
) -> dict[str, Any]:
    """One simulation's figures from its clients' results and the CPU used meanwhile."""
    timings = [timing for result in results for timing in result["timings"]]
    if not timings:
        raise BenchmarkError("the simulation's clients sent no request")
    lateness = [(sent - due) * 1000 for due, sent, _, _ in timings]
    statuses = Counter(outcome for *_, outcome in timings)
    answered = statuses["304"]
    client_cpu = sum(result["cpu_s"] for result in results)
    last_done = max(done for _, _, done, _ in timings)
    return {
        "workers": workers,
        "planned": planned,
        "seconds": arguments.seconds,
        "offered_per_s": planned / arguments.seconds,
        "achieved_per_s": answered / max(last_done - start_at, 1e-3),
        "answered_304": answered,
        "statuses": dict(statuses),
        "unsent": planned - len(timings),
        "latency_ms": summary([(done - due) * 1000 for due, _, done, _ in timings]),
        "service_ms": summary([(done - sent) * 1000 for _, sent, done, _ in timings]),
        "lateness_ms": summary(lateness),
        "late_sends": sum(ms > LATE_MS for ms in lateness),
        "late_pickups": sum(result["late_pickups"] for result in results),
        "stuck_threads": sum(result["stuck_threads"] for result in results),
        "window_s": window,
        "api_cpu_share": used.server / window,
        "api_cpu_ms_per_check": used.server * 1000 / len(timings),
        "api_master_cpu_ms_per_check": used.master * 1000 / len(timings),
        "slapd_cpu_ms_per_check": used.slapd * 1000 / len(timings),
        "slapd_cpu_share": used.slapd / window,
        "client_cpu_share": client_cpu / window,
        "machine_busy_share": used.busy_share,
        "other_busy_share": used.other_share(client_cpu),
    }


def client_kept_schedule(row: dict[str, Any]) -> bool:
    """True if (almost) every check went out on time and every one was sent."""
    sent = row["planned"] - row["unsent"]
    return (not row["unsent"] and not row["late_pickups"]
            and row["late_sends"] <= 0.01 * sent)


def print_simulation(row: dict[str, Any], arguments: argparse.Namespace, cores: int) -> None:
    """One simulation's figures."""
    latency, service, lateness = row["latency_ms"], row["service_ms"], row["lateness_ms"]
    print(f"offered {row['offered_per_s']:.1f} checks/s ({row['planned']:,} over "
          f"{row['seconds']:g} s), achieved {row['achieved_per_s']:.1f}/s (304s until the "
          "last answer)")
    print(f"latency from the schedule: median {latency['median']:6.1f}  p90 "
          f"{latency['p90']:6.1f}  p99 {latency['p99']:6.1f}  max {latency['max']:7.1f}"
          " ms")
    print(f"  from the send:           median {service['median']:6.1f}  p90 "
          f"{service['p90']:6.1f}  p99 {service['p99']:6.1f}  max {service['max']:7.1f}"
          " ms")
    print(f"statuses {json.dumps(row['statuses'], sort_keys=True)}"
          + (f", {row['unsent']} never sent" if row["unsent"] else ""))
    print(f"API (gunicorn master + {row['workers']} worker(s)): {row['api_cpu_share'] * 100:.1f}%"
          f" of one core, {row['api_cpu_ms_per_check']:.2f} ms CPU per check (master "
          f"{row['api_master_cpu_ms_per_check']:.2f}); slapd {row['slapd_cpu_share'] * 100:.1f}%"
          f", {row['slapd_cpu_ms_per_check']:.2f} ms per check")
    print(f"machine: {cores} cores, busy {row['machine_busy_share'] * 100:.0f}% of all of them "
          f"(of which {row['other_busy_share'] * 100:.0f}% neither API, slapd nor client: "
          f"kernel, other processes), over {row['window_s']:.1f} s")
    print(f"client: {arguments.client_processes} process(es) x "
          f"{arguments.threads // arguments.client_processes} threads, "
          f"{row['client_cpu_share'] * 100:.1f}% of one core; sent after the schedule by: median "
          f"{lateness['median']:.2f}  p99 {lateness['p99']:.2f}  max "
          f"{lateness['max']:.1f} ms; {row['late_sends']} later than {LATE_MS:g} ms; "
          f"{row['late_pickups']} due with no thread free")
    if not client_kept_schedule(row):
        print("WARNING: the client did not keep the schedule (late sends, no free thread, or "
              "unsent checks). Latency counts from the schedule, so it includes that delay "
              "and overstates the API's; rerun with more --threads or --client-processes, or "
              "on a quieter machine.")
    if row["stuck_threads"]:
        print(f"WARNING: {row['stuck_threads']} client threads did not finish in time")


# --- reporting -----------------------------------------------------------------------------


def simulation_targets(row: dict[str, Any], agents: int) -> dict[str, tuple[bool, str]]:
    """The simulation's verdicts."""
    others = {status: count for status, count in row["statuses"].items() if status != "304"}
    scale = (f"{agents:,} agents / {INTERVAL:g} s ({row['planned']:,} checks in "
             f"{row['seconds']:g} s), {row['workers']} worker(s)")
    return {
        f"{scale}: p99 under {P99_TARGET_MS:g} ms (from the schedule)": (
            row["latency_ms"]["p99"] < P99_TARGET_MS, f"{row['latency_ms']['p99']:.1f} ms"),
        f"{scale}: every check answered 304": (
            not others and not row["unsent"],
            f"{row['answered_304']:,} of {row['planned']:,}"
            + (f"; others {json.dumps(others, sort_keys=True)}" if others else "")
            + (f"; {row['unsent']} never sent" if row["unsent"] else "")),
        f"{scale}: sustained (achieved at least {SUSTAINED_SHARE:.0%} of offered)": (
            row["achieved_per_s"] >= SUSTAINED_SHARE * row["offered_per_s"],
            f"{row['achieved_per_s']:.1f} of {row['offered_per_s']:.1f} checks/s"),
    }


def print_summary(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """PASS/FAIL against the targets (the first worker count is the headline; others are
    shown for information); returns them for the JSON."""
    checks = results["agent"]["checks"]
    timer = results["agent"]["processes"]["opslab agent run --once"]
    targets = {
        f"agent CPU per no-change check (long-running mode, median) under "
        f"{AGENT_CPU_TARGET_MS:g} ms": (
            checks["cpu_ms"]["median"] < AGENT_CPU_TARGET_MS,
            f"{checks['cpu_ms']['median']:.2f} ms (p99 {checks['cpu_ms']['p99']:.2f} ms)"),
    }
    simulations = list(results["simulations"].values())
    targets.update(simulation_targets(simulations[0], results["agents"]))
    printed = print_targets(targets)
    for row in simulations[1:]:
        for name, (ok, value) in simulation_targets(row, results["agents"]).items():
            print(f"info  {name}: {value} ({verdict(ok)})")
    floor = results["agent"]["processes"]["python -c pass"]
    within = "within" if timer["cpu_ms"] < AGENT_CPU_TARGET_MS else "over"
    print(f"info  a timer's `opslab agent run --once`: {timer['cpu_ms']:.0f} ms CPU, "
          f"{timer['wall_ms']:.0f} ms wall per check, of which the interpreter's start-up "
          f"{floor['cpu_ms']:.0f} ms CPU ({within} {AGENT_CPU_TARGET_MS:g} ms)")
    if not all(client_kept_schedule(row) for row in simulations):
        print("note  the client did not keep its schedule in every simulation: see above")
    return printed


def parse_workers(text: str) -> tuple[int, ...]:
    """``--workers 1,2``: worker counts, each at least 1."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Measure the agent side, then simulate the fleet per worker count; 0 whatever the
    numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 15 s of the simulation at the same rate, fewer "
                        "checks and runs, 1 worker")
    parser.add_argument("--seconds", type=float,
                        help=f"simulated time, at the fleet's rate (default {FULL.seconds:g}:"
                        " one full interval, every agent once)")
    parser.add_argument("--workers", type=parse_workers,
                        help=f"API worker counts to simulate, the first the headline "
                        f"(default {','.join(str(count) for count in FULL.workers)})")
    parser.add_argument("--checks", type=int,
                        help=f"in-process agent checks measured (default {FULL.checks})")
    parser.add_argument("--process-runs", type=int,
                        help=f"`opslab agent run --once` processes measured (default "
                        f"{FULL.process_runs})")
    parser.add_argument("--threads", type=int, default=100,
                        help="client threads, over all client processes (default 100)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="client processes sharing the threads (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--client", metavar="SPEC", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.client:
        return load_client(arguments.client, make_request)
    defaults = QUICK if arguments.quick else FULL
    for name, value in defaults._asdict().items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    if arguments.seconds <= 0 or arguments.checks < 2 or arguments.process_runs < 1:
        parser.error("--seconds must be positive, --checks at least 2, --process-runs at least 1")
    if not 1 <= arguments.client_processes <= arguments.threads:
        parser.error("--client-processes must be between 1 and --threads")

    from opslab.slapd import ThrowawaySlapd

    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "interval": INTERVAL, "seconds": arguments.seconds, "workers": arguments.workers,
        "threads": arguments.threads, "client_processes": arguments.client_processes,
        "simulations": {},
    }
    with tempfile.TemporaryDirectory(prefix="opslab-agent-bench-") as scratch:
        workdir = Path(scratch)
        slapd = ThrowawaySlapd(SUFFIX, SCHEMAS)
        server: ServedApi | None = None
        try:
            print("\n== 1. directory, control repository, database ==")
            expected = load_directory(slapd, workdir)
            remote, commit = make_control_repository(workdir)
            hosts = sorted(expected)
            results["agents"] = len(hosts)
            checks = plan_checks(hosts, arguments.seconds, INTERVAL,
                                 random.Random(f"{SEED}-phases"))  # noqa: S311 - not secrets
            scheduled = sorted({host for _, host in checks})
            etags: dict[str, str] = {}
            tokens: dict[str, str] = {}
            database = ""
            for number, workers in enumerate(arguments.workers):
                print(f"\n-- the API: opslab api serve, {workers} worker(s) of api.threads "
                      "(default 4) threads, branches.remote "
                      "the control repository, api.heads_ttl 30 s (the default)")
                settings: dict[str, dict[str, Any]] = {"api": {"workers": workers},
                                                       "branches": {"remote": remote}}
                work = workdir / f"api-{workers}w"
                work.mkdir()
                if number == 0:
                    server, tokens = serve_api(work, slapd, expected, settings)
                else:  # the first one's database, tokens and all
                    settings["api"]["database"] = database
                    server = ServedApi(work, slapd, SUFFIX, settings)
                    server.start()
                database = server.database
                port = server.port
                if number == 0:
                    check_targets(port, tokens, expected, commit, seeded_random())
                    etags = warm_up(port, scheduled, tokens, None)
                    rng = seeded_random()
                    host = rng.choice([name for name in hosts
                                       if expected[name].environment == "production"])
                    print("\n== 2. the agent side: a no-change check ==")
                    instance = write_agent_config(workdir, port, host, tokens[host])
                    seed_agent_state(instance)
                    state = instance.state_path.read_bytes()
                    results["agent"] = {
                        "host": host,
                        "checks": measure_checks(instance.config_path, arguments.checks,
                                                 server, slapd.pid),
                        "processes": measure_processes(instance.config_path,
                                                       arguments.process_runs, workdir),
                    }
                    if instance.state_path.read_bytes() != state:
                        raise BenchmarkError("state.json changed: a check did more than "
                                             "find nothing changed")
                    print_agent(results["agent"]["checks"], results["agent"]["processes"])
                else:
                    warm_up(port, random.Random(SEED).sample(  # noqa: S311 - not secrets
                        scheduled, min(REWARM_HOSTS, len(scheduled))), tokens, etags)
                print(f"\n== 3. simulation: {len(hosts):,} agents on a {INTERVAL:g} s interval,"
                      f" their {len(checks):,} checks in {arguments.seconds:g} s, open loop, "
                      f"{workers} API worker(s) ==", flush=True)
                row = simulate(server, slapd.pid, workdir, workers, checks, tokens, etags,
                               arguments)
                results["simulations"][str(workers)] = row
                print_simulation(row, arguments, cores)
                server.stop()
                server = None
        finally:
            if server is not None:
                server.stop()
            slapd.destroy()
    results["targets"] = print_summary(results)
    print("(latency counts from each check's scheduled time; the API, slapd and the client "
          "share the machine's cores)")
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "agent_benchmark")
