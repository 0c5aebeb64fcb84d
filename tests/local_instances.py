"""Local instances for tests: the base image (built once, cached), a provider under a
throwaway root, and ways to look inside an instance and at what it leaves behind.

``local_image`` builds the Debian 12 image into ``IMAGE_CACHE`` unless a complete one
is there (a fresh CI machine builds it, in about two minutes). ``local_provider`` is a
:class:`LocalProvider` whose root is a temporary directory; when the module's tests
are done it deletes every instance it holds and checks that nothing of them is left:
no process in their namespaces, no network namespace, no veth, no directory, no
child process of this one unreaped.

Local instances need root, systemd-nspawn, debootstrap and ip (the Makefile's
system packages): without them these fixtures fail, saying what is missing; they
never skip.
"""

import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opslab.config import InstanceSettings
from opslab.instances import image
from opslab.instances.local import LocalProvider, Namespace, Record, namespace_of
from opslab.process import run

IMAGE_CACHE = os.environ.get("OPSLAB_TEST_IMAGE", "/var/cache/opslab-test-image")
# The providers' roots, one per test process and module: PID-RANDOM. A root whose
# process is gone (a test run killed before its finalisers ran) is swept at the start
# of the next session: its instances deleted, its directory removed.
TEST_ROOTS = Path("/var/tmp/opslab-test-instances")
TOOLS = ("systemd-nspawn", "debootstrap", "ip", "nsenter")
DELETE_DEADLINE = 60.0


def require_local_instances() -> None:
    """Fail (never skip) with what is missing for local instances."""
    if os.geteuid() != 0:
        pytest.fail("local instances need root (systemd-nspawn, ip netns); run the tests as "
                    "root", pytrace=False)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"local instances need {', '.join(missing)}: install the Makefile's "
                    f"system packages (make test does)", pytrace=False)


@pytest.fixture(scope="session", name="local_image")
def local_image_fixture() -> Path:
    """``local_image``: the base image of local instances, built into IMAGE_CACHE once.

    A test module gets these fixtures with ``from tests.local_instances import
    local_image_fixture, local_provider_fixture  # noqa: F401`` (names of their own, so
    the tests' arguments redefine nothing)."""
    require_local_instances()
    sweep_stale_roots()
    try:
        seconds = image.build(IMAGE_CACHE)
    except image.ImageError as error:
        pytest.fail(f"could not build the local instances' image: {error}", pytrace=False)
    if seconds:
        print(f"built the local instances' image {IMAGE_CACHE} in {seconds:.0f} s")
    return Path(IMAGE_CACHE)


@pytest.fixture(scope="module", name="local_provider")
def local_provider_fixture(local_image: Path) -> Iterator[LocalProvider]:
    """``local_provider``: a LocalProvider under a root of its own; every instance it holds
    is deleted after the module, and checked gone."""
    root = TEST_ROOTS / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    provider = LocalProvider(InstanceSettings(installation="opslab-test"), root=root,
                             image=local_image)
    yield provider
    remove_all(provider)
    shutil.rmtree(root)


def sweep_stale_roots() -> None:
    """Delete the instances of test runs that ended without their finalisers."""
    if not TEST_ROOTS.is_dir():
        return
    for root in TEST_ROOTS.iterdir():
        pid = root.name.split("-")[0]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue  # a run still going (or a PID taken again: left for later)
        provider = LocalProvider(InstanceSettings(), root=root, image=IMAGE_CACHE)
        for record in provider.records():
            provider.delete(record.id, DELETE_DEADLINE)
        shutil.rmtree(root)


def remove_all(provider: LocalProvider) -> None:
    """Delete every instance of ``provider`` and check that nothing of them is left."""
    records = provider.records()
    traces = {record.id: namespaces(provider, record) for record in records}
    failures = []
    for record in records:
        try:
            provider.delete(record.id, DELETE_DEADLINE)
        except Exception as error:  # delete the others all the same
            failures.append(f"{record.id}: {error}")
    assert not failures, f"could not delete local instances: {failures}"
    for record in records:
        assert_gone(provider, record, *traces[record.id])
    assert not provider.records()
    zombies = [pid for pid in children() if process_state(pid) == "Z"]
    assert not zombies, f"child processes left unreaped: {zombies}"


def namespaces(provider: LocalProvider, record: Record) -> tuple[Namespace | None,
                                                                 Namespace | None]:
    """The network and PID namespaces of an instance (None for those it does not have)."""
    netns = namespace_of(f"/run/netns/{record.netns}")
    leader = provider.leader(record.id)
    pidns = None if leader is None else namespace_of(f"/proc/{leader}/ns/pid")
    assert pidns != namespace_of("/proc/self/ns/pid")
    return netns, pidns


def processes_in(netns: Namespace | None, pidns: Namespace | None) -> list[int]:
    """The living processes in either namespace."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind, namespace in (("net", netns), ("pid", pidns)):
            if namespace is not None and namespace_of(f"/proc/{entry}/ns/{kind}") == namespace \
                    and process_state(int(entry)) not in ("Z", None):
                found.append(int(entry))
                break
    return found


def assert_gone(provider: LocalProvider, record: Record, netns: Namespace | None,
                pidns: Namespace | None) -> None:
    """Nothing of the instance ``record`` is left on this machine."""
    assert provider.get(record.id) is None
    assert processes_in(netns, pidns) == []
    assert not os.path.lexists(f"/run/netns/{record.netns}")
    assert not os.path.exists(f"/sys/class/net/{record.veth}")
    assert not (provider.root / "instances" / record.id).exists()
    assert not os.path.exists(f"/run/systemd/nspawn/propagate/{record.id}")


def children() -> list[int]:
    """The processes whose parent is this one."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == os.getpid():
                found.append(int(entry))
    return found


def process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def inside(provider: LocalProvider, server_id: str, script: str,
           timeout: float = 60.0) -> "subprocess.CompletedProcess[str]":
    """Run the shell ``script`` as root inside the instance (all of its namespaces)."""
    leader = provider.leader(server_id)
    assert leader is not None, f"{server_id} is not running"
    return run(["nsenter", f"--target={leader}", "--all", "--", "sh", "-c", script], timeout,
               text=True)


def cloud_init_done(provider: LocalProvider, server_id: str, timeout: float = 120.0) -> str:
    """Wait for cloud-init in the instance to finish all its stages; its status."""
    result = inside(provider, server_id, "cloud-init status --wait --long", timeout)
    return str(result.stdout)


def http_get(url: str, deadline: float = 60.0) -> str:
    """The body at ``url``, trying until ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() >= end:
                raise
            time.sleep(0.2)


def serving_user_data(name: str, port: int = 8080, hold: bool = False) -> str:
    """A ``#cloud-config`` whose write_files puts ``hello from NAME`` in /srv/www, whose runcmd
    notes who it runs as (in /srv/www/whoami and /etc/opslab-proof-NAME) and serves /srv/www
    over HTTP on ``port`` of every address of the instance; ``hold``: runcmd then waits for
    /run/opslab-go, so cloud-init's final stage does not end before a test says so."""
    label = name.split(".")[0]
    runcmd: list[list[str]] = [
        ["sh", "-c", f"id -un > /srv/www/whoami; id -u > /etc/opslab-proof-{label}"],
        ["systemd-run", "--unit=opslab-hello", "--working-directory=/srv/www",
         "python3", "-m", "http.server", str(port)],
    ]
    if hold:
        runcmd.append(["sh", "-c", "while [ ! -e /run/opslab-go ]; do sleep 0.2; done"])
    document = {"write_files": [{"path": "/srv/www/hello.txt", "content": f"hello from {name}\n"}],
                "runcmd": runcmd}
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
