"""How long until a new instance is usable, and what does an idle one cost?

On the local provider (systemd-nspawn containers of Debian 12 booted with the
real cloud-init), behind the site of ``tests/site.py`` (nginx with TLS in front
of the API, slapd with StartTLS, apt-cacher-ng, a wheelhouse, the example
control repository over HTTPS): the path a member's request takes in
production, on one machine. Each round, a member creates a host with an
instance and the ``greeter`` class through the API, and the clock runs from
the request until:

1. the API answers (the instance is ACTIVE: its sshd answers);
2. the member's first SSH login with their own key (tried every half second),
   and their first ``sudo -n true`` (the agent grants it at its first check);
3. the agent's first report reaches the API; the target excludes Puppet's own
   run (the report's ``duration``), which the classes decide, not opslab.

Targets (medians): the first login and the first report without Puppet's run,
each under 30 s. Then, after ``--idle`` seconds with nothing to do, what the
instance costs this machine: its processes, their memory (the sum of their
PSS, so pages shared with other instances count once in total), and its own
layer on disk. The instance is then deleted through the API; the next round
starts with nothing of it left.

Rounds run one after the other, not side by side: a 2-core machine booting
several instances at once measures its own contention (a note in
docs/benchmarks.md gives what three at once take). There is no reference
tool to run beside it: the targets are absolute, so the machine's load is
printed with the figures. Needs root, like the local provider.

Usage: ``python benchmarks/instance_benchmark.py [--rounds N] [--idle SECONDS] [--json FILE]``
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, BenchmarkError, print_environment, print_targets, run_script, write_results

# tests/ as a package (tests.site imports its siblings as tests.*), appended so
# that the installed opslab, not the checkout's opslab/ folder, is imported.
sys.path.append(str(REPO))
from opslab.config import InstanceSettings
from opslab.instances import image
from opslab.instances.local import LocalProvider, namespace_of
from tests.local_instances import IMAGE_CACHE, TEST_ROOTS
from tests.site import INSTALLATION, Person, Site, running_site, ssh

TARGET_SECONDS = 30.0
DEADLINE = 600.0  # for any one step of a round
POLL = 0.5


def wait(what: str, done: Any, started: float) -> float:
    """Seconds from ``started`` until ``done()`` is true (BenchmarkError past DEADLINE)."""
    while not done():
        if time.monotonic() - started > DEADLINE:
            raise BenchmarkError(f"{what}: not after {DEADLINE:g} s")
        time.sleep(POLL)
    return time.monotonic() - started


def instance_cost(provider: LocalProvider, server_id: str) -> dict[str, float]:
    """Processes, their summed PSS (MiB) and the instance's own layer on disk (MB)."""
    leader = provider.leader(server_id)
    if leader is None:
        raise BenchmarkError(f"{server_id} is not running")
    pidns = namespace_of(f"/proc/{leader}/ns/pid")
    if pidns == namespace_of("/proc/self/ns/pid"):
        raise BenchmarkError("the instance's PID namespace is this process's own")
    pss_kib, processes = 0, 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and namespace_of(f"/proc/{entry}/ns/pid") == pidns:
            try:
                rollup = Path(f"/proc/{entry}/smaps_rollup").read_text()
            except OSError:
                continue  # gone meanwhile
            processes += 1
            pss_kib += next(int(line.split()[1]) for line in rollup.splitlines()
                            if line.startswith("Pss:"))
    upper = provider.root / "instances" / server_id
    disk = subprocess.run(["du", "-sk", "--one-file-system", str(upper)], capture_output=True,
                          text=True, timeout=120, check=True).stdout.split()[0]
    return {"processes": processes, "pss_mib": pss_kib / 1024, "disk_mb": int(disk) / 1000}


def one_round(site: Site, provider: LocalProvider, member: Person, number: int,
              idle: float) -> dict[str, float]:
    name = f"bench{number}"
    started = time.monotonic()
    status, answer = site.request("POST", "/v1/projects/web/hosts", {
        "name": name, "classes": ["greeter"],
        "class_parameters": {"greeter": {"bind": "0.0.0.0"}},  # noqa: S104 (the instance's)
        "instance": {}}, as_=member.uid, password=member.password)
    if status != 201:
        raise BenchmarkError(f"creating {name}: {status} {answer}")
    active = time.monotonic() - started
    certname, instance = answer["host"]["name"], answer["host"]["instance"]
    address, server_id = instance["addresses"][0], instance["server_id"]
    login = wait("first login", lambda: ssh(address, member, "true",
                                            timeout=30).returncode == 0, started)
    root = wait("root", lambda: ssh(address, member, "sudo -n true",
                                    timeout=30).returncode == 0, started)
    found: list[dict[str, Any]] = []

    def reported() -> bool:
        code, reports = site.request("GET", f"/v1/hosts/{certname}/reports", as_="carol",
                                     timeout=30)
        found[:] = reports if code == 200 else []
        return bool(found)

    report = wait("first report", reported, started)
    puppet = float(found[-1]["duration"])
    time.sleep(idle)
    cost = instance_cost(provider, server_id)
    status, _ = site.request("DELETE", f"/v1/hosts/{certname}", as_="carol")
    if status != 204 or provider.get(server_id) is not None:
        raise BenchmarkError(f"deleting {certname}: {status}, instance left: "
                             f"{provider.get(server_id)}")
    figures = {"active": active, "login": login, "root": root, "report": report,
               "puppet": puppet,
               "report_without_puppet": report - puppet, **cost}
    print(f"  round {number}: " + ", ".join(f"{key} {value:.1f}" for key, value in
                                          figures.items()), flush=True)
    return figures


def benchmark(rounds: int, idle: float) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise BenchmarkError("local instances need root")
    print_environment()
    built = image.build(IMAGE_CACHE)
    print(f"image {IMAGE_CACHE}" + (f" built in {built:.0f} s" if built else " (cached)"))
    work = Path(tempfile.mkdtemp(prefix="opslab-instance-bench-"))
    root = TEST_ROOTS / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    provider = LocalProvider(InstanceSettings(installation=INSTALLATION), root=root,
                             image=Path(IMAGE_CACHE))
    samples: list[dict[str, float]] = []
    try:
        with running_site(work / "site", Path(IMAGE_CACHE), root) as site:
            member = site.new_person("bianca", work)
            status, project = site.request("POST", "/v1/projects/web/members",
                                           {"uid": "bianca"}, as_="carol")
            if status != 200:
                raise BenchmarkError(f"adding bianca to web: {status} {project}")
            # One untimed round: apt-cacher-ng and the page cache as a running site has them.
            print("untimed round (fills apt-cacher-ng and the page cache):")
            one_round(site, provider, member, 0, 0)
            print(f"{rounds} rounds, {idle:g} s idle before the cost is taken:")
            samples = [one_round(site, provider, member, number, idle)
                       for number in range(1, rounds + 1)]
    finally:
        for record in provider.records():
            provider.delete(record.id, 60)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    medians = {key: statistics.median(sample[key] for sample in samples)
               for key in samples[0]}
    print("\nmedians: " + ", ".join(f"{key} {value:.1f}" for key, value in medians.items()))
    targets = print_targets({
        f"first SSH login under {TARGET_SECONDS:g} s": (
            medians["login"] < TARGET_SECONDS, f"{medians['login']:.1f} s"),
        f"first report, without Puppet's run, under {TARGET_SECONDS:g} s": (
            medians["report_without_puppet"] < TARGET_SECONDS,
            f"{medians['report_without_puppet']:.1f} s (Puppet's run "
            f"{medians['puppet']:.1f} s more)"),
    })
    return {"samples": samples, "medians": medians, "targets": targets}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed launches (default 3)")
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds an instance idles before its cost is taken (default 60)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    arguments = parser.parse_args()
    write_results(arguments.json, benchmark(arguments.rounds, arguments.idle))
    return 0


if __name__ == "__main__":
    run_script(main, "instance_benchmark")
