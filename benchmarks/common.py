"""What the benchmarks share: the generated directory, measured processes, git, the API
under test (served as the tests and the demo serve it), CPU accounting from /proc, the
load-generating client, summaries of samples, and reporting.

The benchmarks run as scripts (``python benchmarks/X.py``), so this module is
imported as ``common`` from their own folder.
"""

import contextlib
import http.client
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from opslab.names import environment_for_branch
from opslab.slapd import ThrowawaySlapd

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((REPO / "schema").glob("*.ldif"))
# The one way to serve the API on loopback, shared with the tests and the demo. Appended,
# not prepended: the checkout's own opslab/ folder must not shadow the installed package.
sys.path.append(str(REPO / "tests"))
from served_api import ServedApi  # noqa: E402

# The generated directory: 10,000 hosts in 500 projects.
SUFFIX = "dc=example,dc=org"
DOMAIN = "example.org"
PROJECTS = 500
HOSTS_PER_PROJECT = 20
PEOPLE = 25
SEED = 20240601
HOST_CLASSES = (
    "role::app", "role::db", "role::cache", "role::queue", "role::proxy",
    "profile::backup", "profile::monitoring", "profile::firewall", "profile::logging",
)
PROJECT_CLASSES = ("motd", "profile::base", "profile::users", "profile::ssh", "profile::ntp")
DEFAULT_CLASS = "base"

COMMAND_TIMEOUT = 60.0  # seconds, for a measured command unless it says otherwise
GIT_TIMEOUT = 600.0  # seconds, for one git command building or reading a repository
REQUEST_TIMEOUT = 5.0  # seconds, for every request of a load client


class BenchmarkError(RuntimeError):
    """The benchmark itself could not run, or what it measured answered wrongly."""


@dataclass(frozen=True)
class ExpectedNode:
    """What opslab must answer for one generated host."""

    project: str
    classes: frozenset[str]
    environment: str


# --- the directory -------------------------------------------------------------------------


def seeded_random(salt: str = "") -> random.Random:
    """The same pseudo-random sequence every run: same directory, same sample hosts."""
    return random.Random(f"{SEED}{salt}")  # noqa: S311 - reproducible test data, not secrets


def _entry(dn: str, *lines: str) -> str:
    return "\n".join((f"dn: {dn}", *lines)) + "\n"


def generate_ldif(rng: random.Random) -> tuple[str, dict[str, ExpectedNode]]:
    """The benchmark directory as LDIF (parents first), and each host's expected answer."""
    top = SUFFIX.split(",")[0].partition("=")[2]
    entries = [
        _entry(SUFFIX, "objectClass: dcObject", "objectClass: organization",
               f"dc: {top}", f"o: {top}"),
        *(_entry(f"ou={ou},{SUFFIX}", "objectClass: organizationalUnit", f"ou: {ou}")
          for ou in ("people", "projects", "hosts")),
    ]
    people = [f"uid=user{number:02d},ou=people,{SUFFIX}" for number in range(PEOPLE)]
    for number, dn in enumerate(people):
        entries.append(_entry(
            dn, "objectClass: inetOrgPerson", f"uid: user{number:02d}",
            f"cn: User {number}", "sn: Example",
        ))
    entries.append(_entry(
        f"dc=default,ou=hosts,{SUFFIX}",
        "objectClass: dNSDomain", "objectClass: domainRelatedObject",
        "objectClass: puppetClient", "objectClass: opslabNode",
        "dc: default", "associatedDomain: default", f"puppetClass: {DEFAULT_CLASS}",
        f"puppetVar: ntp_server=ntp.{DOMAIN}", "puppetVar: cluster=unassigned",
        "puppetVar: monitored=true",
    ))

    expected: dict[str, ExpectedNode] = {}
    host_number = 0
    for project_number in range(PROJECTS):
        project = f"proj{project_number:03d}"
        branch = "production" if project_number % 5 else f"feature/{project}-Rollout"
        project_classes = rng.sample(PROJECT_CLASSES, 2)
        members = rng.sample(people, rng.randint(1, 3))
        entries.append(_entry(
            f"cn={project},ou=projects,{SUFFIX}",
            "objectClass: groupOfNames", "objectClass: puppetClient",
            "objectClass: opslabNode", f"cn: {project}",
            f"description: Benchmark project {project}",
            *(f"member: {member}" for member in members),
            f"owner: {members[0]}",
            f"environment: {branch}",
            *(f"puppetClass: {name}" for name in project_classes),
            f"puppetVar: cluster=cluster{project_number % 7}",
            f"puppetVar: project_name={project}",
            f'opslabClassParameter: motd::message="Welcome to {project}"',
        ))
        for _ in range(HOSTS_PER_PROJECT):
            host = f"h{host_number:05d}.{project}.{DOMAIN}"
            host_number += 1
            host_classes = rng.sample(HOST_CLASSES, rng.randint(1, 2))
            variables = [f"rack=r{rng.randint(1, 40)}", f"serial=SN{rng.randrange(10**8):08d}"]
            if rng.random() < 0.5:
                variables.append(f"monitored={rng.choice(('true', 'false'))}")
            entries.append(_entry(
                f"dc={host},ou=hosts,{SUFFIX}",
                "objectClass: dNSDomain", "objectClass: domainRelatedObject",
                "objectClass: puppetClient", "objectClass: opslabNode",
                f"dc: {host}", f"associatedDomain: {host}", f"opslabProject: {project}",
                *(f"puppetClass: {name}" for name in host_classes),
                *(f"puppetVar: {variable}" for variable in variables),
                f"opslabClassParameter: {host_classes[0]}::workers={rng.randint(1, 32)}",
            ))
            expected[host] = ExpectedNode(
                project=project,
                classes=frozenset([*host_classes, *project_classes, DEFAULT_CLASS]),
                environment=environment_for_branch(branch),
            )
    return "\n".join(entries), expected


def load_directory(slapd: ThrowawaySlapd, workdir: Path) -> dict[str, ExpectedNode]:
    """Generate the directory, bulk-load it and start slapd; prints the timings."""
    started = time.perf_counter()
    ldif, expected = generate_ldif(seeded_random())
    ldif_path = workdir / "directory.ldif"
    ldif_path.write_text(ldif, encoding="utf-8")
    generated = time.perf_counter()
    slapd.preload([ldif_path])
    loaded = time.perf_counter()
    slapd.start()
    running = time.perf_counter()
    print(f"directory: {len(expected):,} hosts in {PROJECTS} projects, "
          f"{ldif.count('dn: '):,} entries, {len(ldif) / 1e6:.1f} MB of LDIF")
    print(f"  generate {generated - started:6.2f} s   slapadd {loaded - generated:6.2f} s   "
          f"slapd start {running - loaded:5.2f} s")
    return expected


# --- processes -----------------------------------------------------------------------------


def find_script(name: str) -> str:
    """An installed opslab console script (``opslab``, ``opslab-enc``) of this environment."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    path = shutil.which(name)
    if path is None:
        raise BenchmarkError(f"{name} not installed: pip install . into this environment")
    return path


def bytecode_environment(pycache: Path, drop: Iterable[str] = ()) -> dict[str, str]:
    """The measured processes' environment: bytecode cached below ``pycache``, as on a
    server (a caller's PYTHONDONTWRITEBYTECODE would make every run recompile opslab),
    without the variables in ``drop``."""
    environment = dict(os.environ)
    for variable in ("PYTHONDONTWRITEBYTECODE", *drop):
        environment.pop(variable, None)
    environment["PYTHONPYCACHEPREFIX"] = str(pycache)
    return environment


@dataclass(frozen=True)
class Run:
    """One whole process: wall time, CPU time, what it said; returncode None if it timed out.

    ``cpu`` is user + system time of the process and of every descendant it
    waited for (git, for the branch runner), from getrusage(RUSAGE_CHILDREN):
    far steadier than wall time on a shared machine, and blind to I/O waits.
    """

    seconds: float
    cpu: float
    returncode: int | None
    stdout: str
    stderr: str


def run_measured(command: Sequence[str], timeout: float = COMMAND_TIMEOUT,
                 environment: dict[str, str] | None = None, cwd: Path | None = None,
                 stdin: Any = subprocess.DEVNULL) -> Run:
    """Run ``command`` to completion in a process group of its own (the whole group killed
    at ``timeout``), reaped either way."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=environment, cwd=cwd,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except BaseException as error:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        if not isinstance(error, subprocess.TimeoutExpired):
            raise
        returncode = None
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, cpu, returncode, stdout.decode(errors="replace"),
               stderr.decode(errors="replace"))


def succeeded(result: Run, what: str) -> Run:
    """``result`` if it exited 0; else BenchmarkError with its output."""
    if result.returncode != 0:
        status = "timed out" if result.returncode is None else f"exited {result.returncode}"
        raise BenchmarkError(f"{what} {status} after {result.seconds:.1f} s:\n"
                             f"{result.stdout[-1500:]}{result.stderr[-2500:]}")
    return result


def git(*arguments: str, cwd: Path | None = None, stdin: Any = subprocess.DEVNULL,
        timeout: float = GIT_TIMEOUT) -> bytes:
    """Run git (an identity of its own, no signing: the user's configuration must not
    matter); its stdout. BenchmarkError on failure or timeout."""
    command = ["git", "-c", "user.name=opslab benchmark", "-c", "user.email=bench@example.org",
               "-c", "commit.gpgsign=false", *arguments]
    try:
        result = subprocess.run(command, cwd=cwd, stdin=stdin, capture_output=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"git {' '.join(arguments[:3])} timed out") from None
    if result.returncode != 0:
        raise BenchmarkError(f"git {' '.join(arguments[:3])} failed: "
                             f"{result.stderr.decode(errors='replace')[-1500:]}")
    return result.stdout


def rotated(names: Sequence[str], round_number: int) -> list[str]:
    """``names`` starting with a different one each round, so none always goes first or
    always follows the same neighbour."""
    shift = round_number % len(names)
    return [*names[shift:], *names[:shift]]


# --- the API under test --------------------------------------------------------------------


def create_database(url: str, hosts: dict[str, str]) -> dict[str, str]:
    """Migrate the database at ``url`` and store a token digest for each host (with its
    project, as host creation through the API does); returns the tokens."""
    from sqlalchemy import insert

    from opslab.api.store import HostToken, engine_for, migrate, sessions, token_digest

    started = time.perf_counter()
    migrate(url)
    tokens = {host: secrets.token_urlsafe(32) for host in hosts}
    engine = engine_for(url)
    try:
        with sessions(engine)() as session:
            session.execute(insert(HostToken), [
                {"host": host, "project": hosts[host], "digest": token_digest(token)}
                for host, token in tokens.items()
            ])
            session.commit()
    finally:
        engine.dispose()
    print(f"database: {url.rpartition('/')[2]} (SQLite), {len(tokens):,} host tokens, "
          f"{time.perf_counter() - started:.2f} s")
    return tokens


def serve_api(workdir: Path, slapd: ThrowawaySlapd, expected: dict[str, ExpectedNode],
              settings: dict[str, dict[str, Any]]) -> tuple[ServedApi, dict[str, str]]:
    """The API under test for the generated directory: its SQLite database holding every
    host's token, then ``opslab api serve`` started (every worker up) with
    ``settings``. Returns the server and the hosts' tokens."""
    server = ServedApi(workdir, slapd, SUFFIX, settings)
    tokens = create_database(server.database, {host: expected[host].project
                                               for host in sorted(expected)})
    server.start()
    print(f"gunicorn: answering on {server.url}, master {server.pid}, "
          f"{len(server.worker_pids())} worker(s)")
    return server, tokens


class Answer(NamedTuple):
    """One HTTP answer: status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def request_once(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = REQUEST_TIMEOUT) -> Answer:
    """One request on a fresh connection to loopback ``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status,
                      {name.lower(): value for name, value in response.getheaders()}, data)
    finally:
        connection.close()


# --- CPU accounting from /proc -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        text = stream.read()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def process_cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds of ``pids`` and of the children they have waited for
    (a worker's ``git ls-remote``); processes that are gone count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stream:
        values = [int(value) for value in stream.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used by each party and by the machine: so far (``take``), or between
    two samples (``since``)."""

    workers: float
    master: float
    slapd: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, server: ServedApi, slapd_pid: int) -> "CpuSample":
        busy, total = machine_busy_seconds()
        return cls(
            workers=process_cpu_seconds(server.worker_pids()),
            master=process_cpu_seconds([server.pid]),
            slapd=process_cpu_seconds([slapd_pid]),
            machine_busy=busy,
            machine_total=total,
        )

    def since(self, before: "CpuSample") -> "CpuSample":
        """What was used between ``before`` and this sample."""
        return CpuSample(
            workers=self.workers - before.workers,
            master=self.master - before.master,
            slapd=self.slapd - before.slapd,
            machine_busy=self.machine_busy - before.machine_busy,
            machine_total=self.machine_total - before.machine_total,
        )

    @property
    def server(self) -> float:
        """gunicorn's CPU: workers and master."""
        return self.workers + self.master

    @property
    def busy_share(self) -> float:
        """How busy the whole machine was (0 to 1, all cores)."""
        return self.machine_busy / self.machine_total if self.machine_total else 0.0

    def other_share(self, clients: float) -> float:
        """The machine's share that went to neither gunicorn, slapd nor the ``clients``
        (CPU seconds): the kernel, or another process disturbing the measurement."""
        if not self.machine_total:
            return 0.0
        accounted = self.server + self.slapd + clients
        return max(self.machine_busy - accounted, 0.0) / self.machine_total


# --- the load-generating client ------------------------------------------------------------

CLIENT_START_MARGIN = 3.0  # seconds between launching the clients and their first request


class Request(NamedTuple):
    """One request a client sends."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


# The one client loop, in a process of its own. Its spec (JSON) says: ``port``;
# ``threads``; ``keep_alive`` (one connection per thread, reopened when the server
# closes it) or a new connection per request, as an agent makes it; ``count``
# requests at most; ``schedule``: each request's send time (open loop: sent at its
# time whatever the others are doing, latency counted from it, so queueing shows),
# or null with ``start_at`` and ``end_at`` (closed loop: each thread sends its next
# request as soon as it has the answer, until ``end_at``); ``seed``. What to send
# comes from the benchmark's ``make_request(spec, index, rng)``.
RequestMaker = Callable[[dict[str, Any], int, random.Random], Request]


def load_client(spec_path: str, make_request: RequestMaker) -> int:
    """``--client SPEC``: send SPEC's requests, then write to SPEC's ``out`` (JSON) each
    request's due, send and answer times (``time.time()``) and status (or the
    exception's name), and how often a thread had to open a connection."""
    spec: dict[str, Any] = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    schedule: list[float] | None = spec["schedule"]
    count: int = len(schedule) if schedule is not None else spec["count"]
    end_at: float = spec.get("end_at") or float("inf")
    indexes = iter(range(count))
    lock = threading.Lock()
    timings: list[tuple[float, float, float, str]] = []
    counters = {"late_pickups": 0, "connections_opened": 0}

    def worker(thread: int) -> None:
        rng = random.Random(f"{spec['seed']}-{thread}")  # noqa: S311 - load, not secrets
        mine: list[tuple[float, float, float, str]] = []
        connection: http.client.HTTPConnection | None = None
        opened = late = 0
        sleep_until(spec["start_at"])
        try:
            while time.time() < end_at:
                with lock:
                    index = next(indexes, None)
                if index is None:
                    return
                due = time.time()
                if schedule is not None:
                    due = schedule[index]
                    # A free thread takes its next request long before it is due;
                    # taking it late means every thread was busy then.
                    late += time.time() > due
                    sleep_until(due)
                request = make_request(spec, index, rng)
                if connection is None or connection.sock is None or not spec["keep_alive"]:
                    if connection is not None:
                        connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", spec["port"],
                                                            timeout=REQUEST_TIMEOUT)
                    opened += 1
                sent = time.time()
                try:
                    connection.request(request.method, request.path, body=request.body,
                                       headers=request.headers)
                    response = connection.getresponse()
                    response.read()
                    outcome = str(response.status)
                except (OSError, http.client.HTTPException) as error:  # timeouts, resets
                    outcome = type(error).__name__
                    connection.close()
                mine.append((due if schedule is not None else sent, sent, time.time(), outcome))
        finally:
            if connection is not None:
                connection.close()
            with lock:
                timings.extend(mine)
                counters["late_pickups"] += late
                counters["connections_opened"] += opened

    threads = [threading.Thread(target=worker, args=(number,), daemon=True)
               for number in range(spec["threads"])]
    cpu_started = time.process_time()
    for thread in threads:
        thread.start()
    last_due = schedule[-1] if schedule else min(end_at, time.time() + COMMAND_TIMEOUT)
    deadline = last_due + REQUEST_TIMEOUT + 5
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.time()))
    with lock:
        Path(spec["out"]).write_text(json.dumps({
            "timings": sorted(timings), **counters,
            "cpu_s": time.process_time() - cpu_started,
            "stuck_threads": sum(thread.is_alive() for thread in threads),
        }), encoding="utf-8")
    return 0


class ClientProcesses:
    """Load clients in processes of their own, so that their CPU is not the server's:
    ``python SCRIPT --client SPEC``, the script calling :func:`load_client`. Clients
    still running when the ``with`` block ends are killed and reaped."""

    def __init__(self, script: Path, workdir: Path) -> None:
        self.script = script
        self.workdir = workdir
        self._clients: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> "ClientProcesses":
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process, _ in self._clients:
            if process.poll() is None:
                process.kill()
            process.wait()

    def start(self, name: str, spec: dict[str, Any]) -> None:
        """Launch the client ``name`` with ``spec`` (see :func:`load_client`)."""
        spec_path = self.workdir / f"client-{name}.json"
        out_path = self.workdir / f"result-{name}.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path)}), encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, str(self.script), "--client", str(spec_path)],
            stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        self._clients.append((process, out_path))

    def results(self, deadline: float) -> list[dict[str, Any]]:
        """Every client's results, waiting for them until ``deadline`` (``time.time()``)."""
        results = []
        for process, out_path in self._clients:
            try:
                status = process.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise BenchmarkError(f"client {process.pid} did not finish") from None
            if status != 0 or not out_path.exists():
                raise BenchmarkError(f"client {process.pid} exited with {status}")
            results.append(json.loads(out_path.read_text(encoding="utf-8")))
        return results


def sleep_until(moment: float) -> None:
    """Sleep until ``time.time()`` reaches ``moment``: the wall clock, because the parent
    and its clients share schedules (``time.monotonic()`` compares only within a process)."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


# --- summaries and reporting ---------------------------------------------------------------


def percentile(samples: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile (inclusive method, interpolated)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Count, median, p90, p99, minimum and maximum of ``samples`` (whatever their unit)."""
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "min": min(samples),
        "max": max(samples),
    }


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def print_targets(targets: dict[str, tuple[bool, str]]) -> dict[str, dict[str, Any]]:
    """Print PASS/FAIL per target with the machine's state; returns them for the JSON."""
    print("\n== summary ==")
    print_environment()
    for name, (ok, value) in targets.items():
        print(f"{verdict(ok)}  {name}: {value}")
    return {name: {"pass": ok, "value": value} for name, (ok, value) in targets.items()}


def write_results(path: str | None, results: dict[str, Any]) -> None:
    """``--json FILE``: the results as JSON too."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {path}")


def run_script(main: Callable[[], int], name: str) -> NoReturn:
    """Exit with ``main()``'s status; a BenchmarkError exits non-zero with its message."""
    try:
        sys.exit(main())
    except BenchmarkError as error:
        sys.exit(f"{name}: {error}")


def print_environment() -> None:
    """One line on the machine: noisy numbers need their context."""
    load_1, _, _ = os.getloadavg()
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                            check=False).stdout.strip() or "unknown"
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load_1:.2f}")
