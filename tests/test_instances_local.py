"""The local provider with real systemd-nspawn containers and Debian's real cloud-init.

One set of instances is launched at once for the whole module (from threads, so
the creations race for ids and subnets): alpha and beta, of this installation,
serve what their user-data's write_files and runcmd made; doomed and killed, of
another installation, are there to be deleted (killed has its nspawn killed -9
first); broken boots an image that is no OS, so its nspawn fails. alpha's runcmd
then waits for the test to let it finish, which shows that the instance was
ACTIVE while cloud-init's final stage was still running.
"""

import os
import signal
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from opslab.config import InstanceSettings
from opslab.instances.local import FLAVORS, LocalProvider
from opslab.instances.provider import (
    ACTIVE,
    ERROR,
    INSTALLATION,
    Launch,
    ProviderError,
    ProviderUnavailable,
    Server,
)
from tests.local_instances import (
    assert_gone,
    cloud_init_done,
    http_get,
    inside,
    local_image_fixture,  # noqa: F401  (the fixture local_image)
    local_provider_fixture,  # noqa: F401  (the fixture local_provider)
    namespaces,
    processes_in,
    serving_user_data,
)

THIS, OTHER = "opslab-test-local", "opslab-test-other"
LAUNCH_DEADLINE = 240.0
NAMES = {"alpha": THIS, "beta": THIS, "doomed": OTHER, "killed": OTHER, "broken": OTHER}


class Booted(NamedTuple):
    servers: dict[str, Server]  # by name, as wait() returned them
    launches: dict[str, Launch]
    created: dict[str, Server]  # as create() returned them
    alpha_status_when_active: str  # cloud-init's status when alpha was first ACTIVE
    early_wait: str  # what wait() with no time left said of an instance still booting
    seconds: dict[str, float]  # create to ACTIVE (or ERROR)


@pytest.fixture(scope="module")
def booted(local_provider: LocalProvider, tmp_path_factory: pytest.TempPathFactory) -> Booted:
    local_provider.images["not-an-os"] = tmp_path_factory.mktemp("not-an-os")
    launches = {}
    for name, installation in NAMES.items():
        fqdn = f"{name}.local-test.example.org"
        launches[name] = Launch(
            name=fqdn, project="local-test",
            image="not-an-os" if name == "broken" else "debian-12", flavor="small",
            user_data=serving_user_data(fqdn, hold=name == "alpha"), installation=installation)
    created: dict[str, Server] = {}
    failures: list[BaseException] = []

    def create(name: str) -> None:
        try:
            created[name] = local_provider.create(launches[name])
        except BaseException as error:
            failures.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=create, args=(name,)) for name in launches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    try:
        early_wait = repr(local_provider.wait(created["beta"].id, 0))
    except ProviderUnavailable as error:
        early_wait = f"ProviderUnavailable: {error}"
    servers, seconds = {}, {}
    for name, server in created.items():
        servers[name] = local_provider.wait(server.id, LAUNCH_DEADLINE)
        seconds[name] = time.monotonic() - started
    status = "(alpha was not active)"
    if servers["alpha"].state == ACTIVE:
        status = str(inside(local_provider, servers["alpha"].id, "cloud-init status").stdout)
        inside(local_provider, servers["alpha"].id, "touch /run/opslab-go")
    return Booted(servers, launches, created, status, early_wait, seconds)


def test_concurrent_creates_get_their_own_ids_and_subnets(booted: Booted) -> None:
    ids = [server.id for server in booted.created.values()]
    assert len(set(ids)) == len(ids) == len(NAMES)
    # create() returns once nspawn has started; the broken one's may have failed already.
    assert {name: server.state for name, server in booted.created.items()
            if name != "broken"} == {name: "building" for name in NAMES if name != "broken"}
    assert booted.created["broken"].state in ("building", "error")
    addresses = [server.addresses[0] for server in booted.created.values()]
    subnets = {address.rsplit(".", 1)[0] + "." + str(int(address.rsplit(".", 1)[1]) // 4)
               for address in addresses}
    assert len(subnets) == len(addresses)


def test_wait_gives_up_at_its_deadline(booted: Booted) -> None:
    assert booted.early_wait == (f"ProviderUnavailable: {booted.created['beta'].id} was "
                                 f"still building after 0 s")


def test_an_instance_boots_with_its_name_and_user_data(
        local_provider: LocalProvider, booted: Booted) -> None:
    alpha = booted.servers["alpha"]
    assert alpha.state == ACTIVE
    assert alpha.fault is None
    assert (alpha.cores, alpha.ram_mb) == FLAVORS["small"]
    # ACTIVE came before cloud-init's final stage (runcmd) had finished.
    assert "status: running" in booted.alpha_status_when_active
    assert "status: done" in cloud_init_done(local_provider, alpha.id)
    names = inside(local_provider, alpha.id, "hostname; hostname -f").stdout.split()
    assert names == ["alpha", booted.launches["alpha"].name]
    # cloud-init read exactly the user-data launched, from the NoCloud seed.
    given = inside(local_provider, alpha.id, "cat /var/lib/cloud/instance/user-data.txt")
    assert given.stdout == booted.launches["alpha"].user_data
    detail = inside(local_provider, alpha.id, "cloud-init status --long").stdout
    assert "DataSourceNoCloud" in detail


def test_the_host_reaches_what_the_user_data_started(booted: Booted) -> None:
    for name in ("alpha", "beta"):
        address = booted.servers[name].addresses[0]
        assert http_get(f"http://{address}:8080/hello.txt") == \
            f"hello from {booted.launches[name].name}\n"
        assert http_get(f"http://{address}:8080/whoami") == "root\n"


def test_root_inside_writes_its_own_etc_not_the_hosts(
        local_provider: LocalProvider, booted: Booted, local_image: Path) -> None:
    alpha = booted.servers["alpha"]
    cloud_init_done(local_provider, alpha.id)
    # runcmd ran as root in the instance and wrote to its /etc.
    assert inside(local_provider, alpha.id, "cat /etc/opslab-proof-alpha").stdout == "0\n"
    written = inside(local_provider, alpha.id,
                     "id -u > /etc/opslab-local-test && cat /etc/opslab-local-test")
    assert written.stdout == "0\n"
    for name in ("opslab-proof-alpha", "opslab-local-test"):
        assert not Path("/etc", name).exists()
        assert not (local_image / "etc" / name).exists()
        assert (local_provider.root / "instances" / alpha.id / "root/etc" / name).exists()


def test_two_instances_are_apart(local_provider: LocalProvider, booted: Booted) -> None:
    alpha, beta = booted.servers["alpha"], booted.servers["beta"]
    assert alpha.id != beta.id
    assert alpha.addresses != beta.addresses
    for server in (alpha, beta):
        cloud_init_done(local_provider, server.id)
    assert inside(local_provider, alpha.id, "cat /srv/www/hello.txt").stdout == \
        f"hello from {booted.launches['alpha'].name}\n"
    assert inside(local_provider, beta.id, "cat /srv/www/hello.txt").stdout == \
        f"hello from {booted.launches['beta'].name}\n"
    assert inside(local_provider, alpha.id, "ls /etc/opslab-proof-beta").returncode != 0
    assert inside(local_provider, beta.id, "ls /etc/opslab-proof-alpha").returncode != 0
    machine_ids = {inside(local_provider, server.id, "cat /etc/machine-id").stdout
                   for server in (alpha, beta)}
    assert len(machine_ids) == 2
    assert Path("/etc/machine-id").read_text() not in machine_ids
    # Neither reaches the other: the host forwards nothing between instances.
    reach = ("python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], 8080), "
             "timeout=2)' {}")
    assert inside(local_provider, alpha.id, reach.format(beta.addresses[0])).returncode != 0
    assert inside(local_provider, beta.id, reach.format(alpha.addresses[0])).returncode != 0
    # Each reaches the host, through its own link.
    prefix, last = alpha.addresses[0].rsplit(".", 1)
    gateway = f"{prefix}.{int(last) - 1}"
    assert inside(local_provider, alpha.id,
                  f"ip route show default | grep -q 'via {gateway} '").returncode == 0


def test_servers_lists_its_installation_only(local_provider: LocalProvider,
                                             booted: Booted) -> None:
    mine = local_provider.servers(THIS)
    assert {server.id for server in mine} == {booted.servers[name].id
                                              for name in ("alpha", "beta")}
    assert all(server.metadata[INSTALLATION] == THIS for server in mine)
    assert {server.state for server in mine} == {ACTIVE}
    others = local_provider.servers(OTHER)
    assert booted.servers["broken"].id in {server.id for server in others}
    assert all(server.metadata[INSTALLATION] == OTHER for server in others)
    assert local_provider.servers("nobody") == []
    # Another process (a restarted one) finds the same instances in the same states.
    again = LocalProvider(InstanceSettings(), root=local_provider.root,
                          image=local_provider.image)
    assert sorted(again.servers(THIS)) == sorted(mine)


def test_delete_stops_the_container_and_removes_everything(
        local_provider: LocalProvider, booted: Booted) -> None:
    doomed = booted.servers["doomed"]
    assert doomed.state == ACTIVE
    [record] = [record for record in local_provider.records() if record.id == doomed.id]
    netns, pidns = namespaces(local_provider, record)
    assert netns is not None
    assert pidns is not None
    assert len(processes_in(netns, pidns)) > 3  # systemd, journald, sshd, ...
    nspawn = local_provider._children[doomed.id]
    started = time.monotonic()
    local_provider.delete(doomed.id, 60)
    seconds = time.monotonic() - started
    assert_gone(local_provider, record, netns, pidns)
    assert nspawn.returncode == 0  # a clean poweroff, reaped
    assert seconds < 30  # within the share of the deadline for a clean shutdown
    local_provider.delete(doomed.id, 60)  # nothing if it is gone already


def test_delete_after_nspawn_was_killed(local_provider: LocalProvider,
                                        booted: Booted) -> None:
    killed = booted.servers["killed"]
    assert killed.state == ACTIVE
    [record] = [record for record in local_provider.records() if record.id == killed.id]
    netns, pidns = namespaces(local_provider, record)
    nspawn = local_provider._children[killed.id]
    os.kill(nspawn.pid, signal.SIGKILL)
    nspawn.wait(10)
    # The container's systemd outlives its nspawn, reparented to the host's init.
    assert processes_in(netns, pidns)
    after = local_provider.get(killed.id)
    assert after is not None
    assert after.state == ERROR
    assert "killed by signal 9" in str(after.fault)
    local_provider.delete(killed.id, 60)
    assert_gone(local_provider, record, netns, pidns)


def test_an_instance_whose_nspawn_fails_is_in_error(local_provider: LocalProvider,
                                                    booted: Booted) -> None:
    broken = booted.servers["broken"]
    assert broken.state == ERROR
    assert "exited with status 1" in str(broken.fault)
    assert "os-release" in str(broken.fault) or "OS tree" in str(broken.fault)
    [record] = [record for record in local_provider.records() if record.id == broken.id]
    local_provider.delete(broken.id, 30)
    assert_gone(local_provider, record, None, None)
    assert broken.id not in local_provider._children


def test_refusals_leave_nothing(local_provider: LocalProvider, booted: Booted,
                                tmp_path: Path) -> None:
    local_provider.images["missing"] = tmp_path / "no-such-image"
    assert local_provider.flavor("small") == (1, 512)
    assert local_provider.flavor("medium") == (2, 2048)
    with pytest.raises(ProviderError, match="no flavor 'huge'"):
        local_provider.flavor("huge")
    before = {record.id for record in local_provider.records()}
    good = booted.launches["beta"]
    for launch, refusal in (
            (good._replace(flavor="huge"), "no flavor"),
            (good._replace(image="ubuntu"), "no image 'ubuntu'"),
            # A path is no image name: a member could boot this machine's own /.
            (good._replace(image="/usr/.."), "no image '/usr/..'"),
            (good._replace(image="missing"), "is not there"),
            (good._replace(name="Not A Name"), "not a host name")):
        with pytest.raises(ProviderError, match=refusal):
            local_provider.create(launch)
    assert {record.id for record in local_provider.records()} == before
    assert sorted(os.listdir(local_provider.root / "instances")) == sorted(before)
    assert local_provider.get("i-00000000") is None
    assert local_provider.get("../../etc") is None
