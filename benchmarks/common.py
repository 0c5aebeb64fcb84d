"""What the benchmarks share: the generated directory, finding opslab's commands,
the environment of measured processes, the API under test (its database of
host tokens, its configuration, gunicorn), CPU accounting from /proc,
load-generating client processes, and reporting helpers.

The benchmarks run as scripts (``python benchmarks/X.py``), so this module is
imported as ``common`` from their own folder.
"""

import contextlib
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml

from opslab.names import environment_for_branch
from opslab.slapd import ThrowawaySlapd

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((REPO / "schema").glob("*.ldif"))

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


class BenchmarkError(RuntimeError):
    """The benchmark itself could not run, or what it measured answered wrongly."""


@dataclass(frozen=True)
class ExpectedNode:
    """What opslab must answer for one generated host."""

    project: str
    classes: frozenset[str]
    environment: str


# --- the directory -------------------------------------------------------------------------


def seeded_random() -> random.Random:
    """The same pseudo-random sequence every run: same directory, same sample hosts."""
    return random.Random(SEED)  # noqa: S311 - reproducible test data, not secrets


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
          f"generate+load {loaded - started:6.2f} s   slapd start {running - loaded:5.2f} s")
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


# --- the API under test --------------------------------------------------------------------

SERVER_START_DEADLINE = 60.0  # seconds until gunicorn must answer
SERVER_STOP_DEADLINE = 20.0
REQUEST_TIMEOUT = 5.0  # seconds, for every request


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


def write_api_config(
    slapd: ThrowawaySlapd, workdir: Path, database: str, port: int, workers: int,
    remote: str | None = None,
) -> Path:
    """The opslab configuration for the API under test (``workdir/opslab.yaml``):
    the directory's ldapi socket, the root DN as the API's writer, ``workers``
    gunicorn workers on loopback ``port``, and ``remote`` as the control
    repository whose branch heads targets carry (none: targets have no commit)."""
    secret = workdir / "writer.secret"
    secret.write_text(slapd.root_password, encoding="utf-8")
    secret.chmod(0o600)
    path = workdir / "opslab.yaml"
    document: dict[str, Any] = {
        "ldap": {"uri": slapd.ldapi_uri, "base": SUFFIX},
        "api": {
            "database": database,
            "writer_dn": slapd.root_dn,
            "writer_password_file": str(secret),
            "domain": "example.org",
            "listen": f"127.0.0.1:{port}",
            "workers": workers,
            "public_url": f"http://127.0.0.1:{port}",
        },
    }
    if remote is not None:
        document["branches"] = {"remote": remote}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class Answer(NamedTuple):
    """One HTTP answer: status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def request_once(
    port: int, method: str, path: str, headers: dict[str, str] | None = None,
    body: bytes | None = None, timeout: float = REQUEST_TIMEOUT,
) -> Answer:
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


class ApiServer:
    """``opslab --config FILE api serve`` as a child process, its output in a log file."""

    def __init__(self, config_path: Path, port: int, workdir: Path, workers: int) -> None:
        self.config_path = config_path
        self.port = port
        self.workdir = workdir
        self.workers = workers
        self.log_path = workdir / "gunicorn.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start gunicorn and wait until it answers HTTP with all its workers up (the first
        answers before the others have booted), within SERVER_START_DEADLINE."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [find_script("opslab"), "--config", str(self.config_path), "api", "serve"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise BenchmarkError(f"opslab api serve exited with {self.process.returncode}:"
                                     f"\n{self.log_tail()}")
            try:
                request_once(self.port, "GET", "/v1/no-such-route", timeout=2.0)
                workers = self.worker_pids()
                ready = len(workers) >= self.workers
            except OSError:
                ready = False
            if not ready:
                if time.monotonic() - started > SERVER_START_DEADLINE:
                    raise BenchmarkError(
                        f"opslab api serve did not answer with {self.workers} workers within "
                        f"{SERVER_START_DEADLINE:g} s:\n{self.log_tail()}")
                time.sleep(0.2)
                continue
            print(f"gunicorn: answering on 127.0.0.1:{self.port} after "
                  f"{time.monotonic() - started:.1f} s, master {self.process.pid}, "
                  f"{len(workers)} workers")
            return

    def worker_pids(self) -> list[int]:
        """The master's child processes (the workers), from /proc."""
        if self.process is None:
            return []
        return children_of(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop); SIGKILL master and workers after the deadline."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        workers = children_of(process.pid)
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SERVER_STOP_DEADLINE)
        for pid in workers:  # gone with a graceful stop; not after a SIGKILL of the master
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines gunicorn wrote."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- CPU accounting from /proc -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        text = stream.read()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def children_of(parent: int) -> list[int]:
    """Process ids whose parent is ``parent``."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(_stat_fields(int(name))[1]) == parent:
                children.append(int(name))
    return children


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
    def take(cls, server: ApiServer, slapd_pid: int) -> "CpuSample":
        assert server.process is not None
        busy, total = machine_busy_seconds()
        return cls(
            workers=process_cpu_seconds(server.worker_pids()),
            master=process_cpu_seconds([server.process.pid]),
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


# --- load-generating client processes ------------------------------------------------------

CLIENT_START_MARGIN = 3.0  # seconds between launching the clients and their first request


class ClientProcesses:
    """Clients that load the API from processes of their own, so that their CPU is not
    the server's: ``python SCRIPT --client SPEC``, each given a JSON spec and writing
    its results as JSON to the spec's ``out``. Clients still running when the
    ``with`` block ends are killed."""

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
        """Launch the client ``name`` with ``spec``."""
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


def read_client_spec(path: str) -> dict[str, Any]:
    """In a client process: the spec it was started with."""
    spec: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return spec


def write_client_result(spec: dict[str, Any], result: dict[str, Any]) -> None:
    """In a client process: hand its results to :meth:`ClientProcesses.results`."""
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")


def sleep_until(moment: float) -> None:
    """Sleep until ``time.time()`` reaches ``moment``: the wall clock, because the parent
    and its clients share schedules (``time.monotonic()`` compares only within a process)."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


# --- reporting -----------------------------------------------------------------------------


def percentile(samples: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile (inclusive method, interpolated)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and maximum of latencies in ms, under the keys the reports use."""
    return {
        "median_ms": statistics.median(samples_ms),
        "p90_ms": percentile(samples_ms, 90),
        "p99_ms": percentile(samples_ms, 99),
        "max_ms": max(samples_ms),
    }


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


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
    print(f"python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {load_1:.2f}")
