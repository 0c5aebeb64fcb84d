"""What the benchmarks share: the generated directory, finding opslab's commands,
the environment of measured processes, and reporting helpers.

The benchmarks run as scripts (``python benchmarks/X.py``), so this module is
imported as ``common`` from their own folder.
"""

import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


# --- reporting -----------------------------------------------------------------------------


def percentile(samples: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile (inclusive method, interpolated)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def print_environment() -> None:
    """One line on the machine: noisy numbers need their context."""
    load_1, _, _ = os.getloadavg()
    print(f"python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {load_1:.2f}")
