"""The OpenStack provider with the real openstacksdk against the stand-in cloud
(tests/openstack_standin.py): launches, faults, deadlines, quota, timeouts, deletion,
the installation's servers, unknown names, and no secret in any message. Then the
stand-in's booting mode, where each server is a local instance (as root, like
tests/test_instances_local.py): one boots with its user-data and serves what its
cloud-init started, and a local boot that fails is a server in ERROR with its fault."""

import base64
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from openstack import exceptions as sdk_exceptions
from openstack.config.loader import OpenStackConfig
from openstack.connection import Connection

from opslab.config import InstanceSettings
from opslab.instances.local import LocalProvider
from opslab.instances.openstack import OpenStackProvider
from opslab.instances.provider import (
    ACTIVE,
    BUILDING,
    DELETING,
    ERROR,
    INSTALLATION,
    TAGS,
    Launch,
    ProviderError,
    ProviderUnavailable,
)
from tests.local_instances import (
    assert_gone,
    cloud_init_done,
    http_get,
    inside,
    local_image_fixture,  # noqa: F401  (the fixture local_image)
    local_provider_fixture,  # noqa: F401  (the fixture local_provider)
    namespaces,
    serving_user_data,
)
from tests.openstack_standin import (
    IMAGE_ID,
    LOCAL_INSTALLATION,
    NETWORK_ID,
    Created,
    Fate,
    MakeCloud,
    StandIn,
    image,
    openstack_cloud_fixture,  # noqa: F401  (the fixture openstack_cloud)
)

SLACK = 1.0  # seconds a bounded call may overrun its bound (scheduling, one short poll)
BOOT_DEADLINE = 240.0  # a local instance's boot to ACTIVE, on a busy machine
LOCAL_DELETE_DEADLINE = 60.0
USER_DATA = "#cloud-config\n# ünïcödé, quotes \" ' and a backslash \\\nruncmd:\n - [true]\n"


class Cloud(NamedTuple):
    standin: StandIn
    provider: OpenStackProvider
    settings: InstanceSettings
    clouds_file: Path


def settings_for(clouds_file: Path, **changes: Any) -> InstanceSettings:
    return InstanceSettings(
        provider="openstack", cloud="standin", clouds_file=str(clouds_file),
        image="debian-12", flavor="m1.small", network="private", request_timeout=2.0,
        launch_timeout=10.0, delete_timeout=10.0, installation="test-inst")._replace(**changes)


@pytest.fixture
def cloud(openstack_cloud: MakeCloud, tmp_path: Path) -> Cloud:
    standin = openstack_cloud()
    clouds_file = standin.clouds_yaml(tmp_path / "clouds.yaml")
    settings = settings_for(clouds_file)
    return Cloud(standin, OpenStackProvider(settings, poll_interval=0.1), settings, clouds_file)


def launch(name: str = "web1.web.example.org", installation: str = "test-inst",
           **changes: str) -> Launch:
    return Launch(name=name, project="web", image="debian-12", flavor="m1.small",
                  user_data=USER_DATA, installation=installation)._replace(**changes)


def no_secret(error: BaseException, standin: StandIn) -> None:
    """Neither the password nor a token in the message, and no library exception
    (whose message may carry more) chained to it."""
    for text in (str(error), repr(error)):
        assert standin.password not in text
        assert not any(token in text for token in standin.tokens)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_a_launch_becomes_active_with_its_address_user_data_and_tags(cloud: Cloud) -> None:
    seen: list[Created] = []

    def hook(created: Created) -> Fate:
        seen.append(created)
        return Fate.active(after=0.3, addresses=("192.0.2.7", "2001:db8::7"))

    cloud.standin.on_create = hook

    created = cloud.provider.create(launch())
    server = cloud.provider.wait(created.id, deadline=5)

    assert (created.state, created.id) == (BUILDING, seen[0].id)
    assert (server.state, server.name, server.addresses, server.fault) == (
        ACTIVE, "web1.web.example.org", ["192.0.2.7", "2001:db8::7"], None)
    assert (server.cores, server.ram_mb) == (1, 2048)
    tags = {"opslab-installation": "test-inst", "opslab-project": "web",
            "opslab-host": "web1.web.example.org"}
    assert set(tags) == set(TAGS)
    assert server.metadata == created.metadata == tags
    # What Nova got: exactly the launch's user-data (base64 on the wire), the tags, and the
    # image, flavor and network the names stand for.
    assert seen[0].user_data == USER_DATA
    assert seen[0].metadata == tags
    assert (seen[0].image_id, seen[0].flavor_id, seen[0].networks) == (
        IMAGE_ID, "f1", [NETWORK_ID])
    assert cloud.standin.refused == []
    assert cloud.provider.get(created.id) == server


def test_image_flavor_and_network_may_be_given_by_id(cloud: Cloud) -> None:
    provider = OpenStackProvider(cloud.settings._replace(network=NETWORK_ID), poll_interval=0.1)

    created = provider.create(launch(image=IMAGE_ID, flavor="f2"))

    assert provider.wait(created.id, deadline=5).cores == 4
    stored = cloud.standin.servers[created.id].created
    assert (stored.image_id, stored.flavor_id, stored.networks) == (IMAGE_ID, "f2", [NETWORK_ID])


def test_a_server_in_error_is_final_and_names_its_fault(cloud: Cloud) -> None:
    cloud.standin.on_create = lambda created: Fate.error("No valid host was found. "
                                                         "There are not enough hosts: rack 7")
    created = cloud.provider.create(launch())

    start = time.monotonic()
    server = cloud.provider.wait(created.id, deadline=30)

    assert time.monotonic() - start < 3  # not the deadline: ERROR is final
    assert server.state == ERROR
    assert server.fault == "No valid host was found. There are not enough hosts: rack 7"
    assert cloud.provider.get(created.id) == server


def test_a_server_stuck_building_is_unavailable_at_the_deadline(cloud: Cloud) -> None:
    cloud.standin.on_create = lambda created: Fate.stuck()
    created = cloud.provider.create(launch())

    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"still building after 1\.5 seconds"):
        cloud.provider.wait(created.id, deadline=1.5)
    elapsed = time.monotonic() - start

    assert 1.5 <= elapsed < 1.5 + SLACK
    assert cloud.standin.status(created.id) == "BUILD"


def test_nova_refusing_for_quota_is_a_provider_error_with_its_message(cloud: Cloud) -> None:
    cloud.standin.max_instances = 1
    cloud.standin.add_server("other.example.org", {INSTALLATION: "elsewhere"})

    with pytest.raises(ProviderError) as refused:
        cloud.provider.create(launch())

    assert type(refused.value) is ProviderError  # a refusal, not "unavailable"
    message = str(refused.value)
    assert "403" in message
    assert "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances" \
        in message
    no_secret(refused.value, cloud.standin)
    assert len(cloud.standin.servers) == 1


@pytest.mark.parametrize(("field", "value", "named"), [
    ("image", "no-such-image", "no image 'no-such-image'"),
    ("flavor", "m9.huge", "no flavor 'm9.huge'"),
    ("network", "no-such-net", "no network 'no-such-net'"),
])
def test_an_unknown_image_flavor_or_network_is_named(cloud: Cloud, field: str, value: str,
                                                      named: str) -> None:
    if field == "network":
        provider = OpenStackProvider(cloud.settings._replace(network=value))
        wanted = launch()
    else:
        provider = cloud.provider
        wanted = launch(**{field: value})

    with pytest.raises(ProviderError, match=named) as refused:
        provider.create(wanted)

    assert type(refused.value) is ProviderError
    assert cloud.standin.servers == {}
    no_secret(refused.value, cloud.standin)


def test_user_data_too_long_for_nova_is_refused_before_it_is_sent(cloud: Cloud) -> None:
    with pytest.raises(ProviderError, match="more than Nova's 65535"):
        cloud.provider.create(launch(user_data="x" * 49152))  # 65536 in base64

    assert not any(method == "POST" and "/servers" in path
                   for method, path, _ in cloud.standin.requests)


def test_a_hanging_cloud_is_unavailable_within_the_request_timeout(
        cloud: Cloud) -> None:
    provider = OpenStackProvider(cloud.settings._replace(request_timeout=1.0))
    cloud.standin.hang(60, lambda method, path: path.startswith("/compute/v2.1/servers"))

    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="did not answer") as hung:
        provider.create(launch())

    assert time.monotonic() - start < 1.0 + 2 * SLACK
    no_secret(hung.value, cloud.standin)


def test_a_hang_while_waiting_is_bounded_by_the_request_timeout(cloud: Cloud) -> None:
    provider = OpenStackProvider(cloud.settings._replace(request_timeout=1.0), poll_interval=0.1)
    cloud.standin.on_create = lambda created: Fate.stuck()
    created = provider.create(launch())
    cloud.standin.hang(60, lambda method, path: path.endswith(created.id))

    start = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        provider.wait(created.id, deadline=30)

    assert time.monotonic() - start < 1.0 + 2 * SLACK


def test_a_cloud_nobody_answers_for_is_unavailable(cloud: Cloud, tmp_path: Path) -> None:
    cloud.standin.stop()  # its port is closed now; credentials in the URL stay unsaid
    text = cloud.clouds_file.read_text().replace("http://", "http://admin:hunter2@")
    cloud.clouds_file.write_text(text)
    provider = OpenStackProvider(cloud.settings)

    with pytest.raises(ProviderUnavailable) as unreachable:
        provider.get("a-server")

    no_secret(unreachable.value, cloud.standin)
    assert "hunter2" not in str(unreachable.value)


def test_a_wrong_password_is_refused_without_being_said(cloud: Cloud, tmp_path: Path) -> None:
    wrong = "wrong-" + cloud.standin.password
    clouds_file = cloud.standin.clouds_yaml(tmp_path / "wrong.yaml", password=wrong)
    provider = OpenStackProvider(settings_for(clouds_file))

    with pytest.raises(ProviderError) as refused:
        provider.servers("test-inst")

    assert type(refused.value) is ProviderError
    assert "401" in str(refused.value)
    assert wrong not in str(refused.value)
    no_secret(refused.value, cloud.standin)


def test_a_cloud_missing_from_clouds_yaml_is_a_provider_error(cloud: Cloud) -> None:
    with pytest.raises(ProviderError, match="'nowhere'") as missing:
        OpenStackProvider(cloud.settings._replace(cloud="nowhere"))

    no_secret(missing.value, cloud.standin)


def test_delete_waits_until_the_server_is_gone(cloud: Cloud) -> None:
    created = cloud.provider.create(launch())
    cloud.provider.wait(created.id, deadline=5)
    cloud.standin.delete_after = 1.0

    start = time.monotonic()
    cloud.provider.delete(created.id, deadline=5)

    assert time.monotonic() - start >= 1.0
    assert cloud.standin.status(created.id) is None
    assert cloud.provider.get(created.id) is None


def test_deleting_a_server_that_is_gone_is_nothing(cloud: Cloud) -> None:
    created = cloud.provider.create(launch())
    cloud.provider.delete(created.id, deadline=5)

    cloud.provider.delete(created.id, deadline=5)
    cloud.provider.delete("00000000-0000-4000-8000-000000000000", deadline=5)

    assert cloud.provider.get("00000000-0000-4000-8000-000000000000") is None


def test_a_server_that_stays_deleting_is_unavailable_at_the_deadline(cloud: Cloud) -> None:
    created = cloud.provider.create(launch())
    cloud.standin.delete_after = 60

    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="still there"):
        cloud.provider.delete(created.id, deadline=1.0)

    assert 1.0 <= time.monotonic() - start < 1.0 + SLACK


def test_servers_are_only_this_installations(cloud: Cloud) -> None:
    cloud.standin.page_size = 2  # the listing comes in pages (servers_links)
    mine = {cloud.provider.create(launch(f"web{n}.web.example.org")).id for n in range(3)}
    cloud.standin.add_server("theirs.example.org", {INSTALLATION: "other-inst",
                                                    "opslab-host": "theirs.example.org"})
    cloud.standin.add_server("manual", {})
    cloud.standin.add_server("prefix", {INSTALLATION: "test-inst-2"})

    found = cloud.provider.servers("test-inst")

    assert {server.id for server in found} == mine
    assert all(server.metadata[INSTALLATION] == "test-inst" for server in found)
    assert {s.id for s in cloud.provider.servers("other-inst")} != set()
    assert cloud.provider.servers("nobody") == []


def test_flavor_gives_cores_and_ram(cloud: Cloud) -> None:
    assert cloud.provider.flavor("m1.large") == (4, 8192)
    assert cloud.provider.flavor("f1") == (1, 2048)
    with pytest.raises(ProviderError, match=r"no flavor 'm0\.tiny'"):
        cloud.provider.flavor("m0.tiny")


def test_openstacksdk_is_needed_only_by_the_provider_itself() -> None:
    code = ("import sys; sys.modules['openstack'] = None; sys.modules['keystoneauth1'] = None\n"
            "import opslab.instances.provider, opslab.instances.openstack as o\n"
            "from opslab.config import InstanceSettings\n"
            "try:\n    o.OpenStackProvider(InstanceSettings(provider='openstack'))\n"
            "except opslab.instances.provider.ProviderError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)

    assert "install opslab[cloud]" in result.stdout


# The stand-in's booting mode: openstacksdk, the user-data and cloud-init end to end.

@pytest.fixture
def booting_cloud(openstack_cloud: MakeCloud, local_provider: LocalProvider,
                  tmp_path: Path) -> Cloud:
    standin = openstack_cloud(boot=local_provider)
    clouds_file = standin.clouds_yaml(tmp_path / "clouds.yaml")
    # No request waits for a boot, but a machine booting containers answers slowly.
    settings = settings_for(clouds_file, request_timeout=10.0)
    return Cloud(standin, OpenStackProvider(settings, poll_interval=0.5), settings, clouds_file)


def test_a_server_boots_as_a_local_instance_with_its_name_and_user_data(
        booting_cloud: Cloud, local_provider: LocalProvider) -> None:
    cloud = booting_cloud
    name = "booted.web.example.org"
    wanted = launch(name, user_data=serving_user_data(name))

    started = time.monotonic()
    created = cloud.provider.create(wanted)
    answered = time.monotonic() - started
    building = cloud.provider.get(created.id)
    server = cloud.provider.wait(created.id, deadline=BOOT_DEADLINE)
    active = time.monotonic() - started

    assert server.state == ACTIVE, server.fault
    # Nova answered the create at once and showed the server building while openstacksdk
    # polled it: no request waited for the boot.
    assert answered < 5
    assert building is not None
    assert building.state == BUILDING
    polls = [path for method, path, _ in cloud.standin.requests
             if method == "GET" and path.endswith(f"/servers/{created.id}")]
    assert len(polls) >= 3
    local_id = cloud.standin.local_id(created.id)
    assert local_id is not None
    [record] = [record for record in local_provider.records() if record.id == local_id]
    assert (record.name, record.metadata[INSTALLATION]) == (name, LOCAL_INSTALLATION)
    assert server.addresses == [record.address]
    # What the user-data's cloud-init started answers at the address Nova gave.
    assert http_get(f"http://{server.addresses[0]}:8080/hello.txt") == f"hello from {name}\n"
    served = time.monotonic() - started
    assert "status: done" in cloud_init_done(local_provider, local_id)
    done = time.monotonic() - started
    given = inside(local_provider, local_id, "cat /var/lib/cloud/instance/user-data.txt")
    assert given.stdout == wanted.user_data
    assert inside(local_provider, local_id, "hostname; hostname -f").stdout.split() == [
        "booted", name]

    netns, pidns = namespaces(local_provider, record)
    watcher = OpenStackProvider(cloud.settings, poll_interval=0.1)
    seen: list[str | None] = []
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        deleting = pool.submit(cloud.provider.delete, created.id, LOCAL_DELETE_DEADLINE)
        while not deleting.done():
            now = watcher.get(created.id)
            seen.append(None if now is None else now.state)
            time.sleep(0.1)
        deleting.result()
    deleted = time.monotonic() - started

    # "deleting" while the local instance shuts down, then 404, and nothing of it left.
    assert DELETING in seen
    assert cloud.provider.get(created.id) is None
    assert cloud.standin.status(created.id) is None
    assert_gone(local_provider, record, netns, pidns)
    print(f"booting mode: create answered in {answered:.2f} s, ACTIVE after {active:.1f} s, "
          f"served after {served:.1f} s, cloud-init done after {done:.1f} s; "
          f"deleted in {deleted:.1f} s")


@pytest.mark.parametrize("image_name", ["ubuntu-24.04", "not-an-os"])
def test_a_local_boot_that_fails_is_a_server_in_error_with_its_fault(
        booting_cloud: Cloud, local_provider: LocalProvider, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, image_name: str) -> None:
    # Glance has both images; the local provider knows no ubuntu-24.04 (its create
    # refuses), and not-an-os is an empty directory (nspawn starts and fails).
    cloud = booting_cloud
    cloud.standin.images.append(image("33333333-3333-4333-8333-333333333333", image_name))
    if image_name == "not-an-os":
        (tmp_path / image_name).mkdir()
        monkeypatch.setitem(local_provider.images, image_name, tmp_path / image_name)
    before = {record.id for record in local_provider.records()}

    created = cloud.provider.create(launch("failing.web.example.org", image=image_name))
    server = cloud.provider.wait(created.id, deadline=60)

    assert server.state == ERROR
    local_id = cloud.standin.local_id(created.id)
    records = [record for record in local_provider.records() if record.id == local_id]
    if image_name == "not-an-os":
        local = local_provider.get(str(local_id))
        assert local is not None
        assert local.state == ERROR
        assert server.fault == local.fault
        assert "systemd-nspawn exited with status 1" in str(server.fault)
        assert len(records) == 1
    else:
        assert local_id is None
        assert str(server.fault).startswith("no image 'ubuntu-24.04' here")
        assert {record.id for record in local_provider.records()} == before
    # openstacksdk itself sees Nova's ERROR with the fault.
    config = OpenStackConfig(config_files=[str(cloud.clouds_file)], load_envvars=False)
    nova = Connection(config=config.get_one(cloud="standin")).compute.get_server(created.id)
    assert (nova.status, nova.fault["code"], nova.fault["message"]) == (
        "ERROR", 500, server.fault)

    cloud.provider.delete(created.id, deadline=LOCAL_DELETE_DEADLINE)

    assert cloud.provider.get(created.id) is None
    assert {record.id for record in local_provider.records()} == before
    for record in records:
        assert_gone(local_provider, record, None, None)


# The stand-in checks what it gets as the real services do, or the tests above prove less.

def test_the_standin_refuses_what_nova_refuses(cloud: Cloud) -> None:
    config = OpenStackConfig(config_files=[str(cloud.clouds_file)], load_envvars=False)
    conn = Connection(config=config.get_one(cloud="standin"))
    compute = conn.compute

    def create(**changes: object) -> None:
        fields: dict[str, object] = {"name": "x", "image_id": IMAGE_ID, "flavor_id": "f1",
                                     "networks": [{"uuid": NETWORK_ID}]}
        fields.update(changes)
        compute.create_server(**fields)

    cases: list[tuple[dict[str, object], str]] = [
        ({"user_data": "#cloud-config\n"}, "is not a 'base64'"),
        ({"user_data": base64.b64encode(b"x" * 49152).decode()}, "is too long"),
        ({"metadata": {"k": "v" * 256}}, "at most 255"),
        ({"metadata": {"bad/key": "v"}}, "Additional properties"),
        ({"image_id": "nope"}, "Image nope could not be found"),
        ({"flavor_id": "nope"}, "Flavor nope could not be found"),
        ({"networks": [{"uuid": "nope"}]}, "Network nope could not be found"),
    ]
    for changes, said in cases:
        with pytest.raises(sdk_exceptions.BadRequestException, match=said):
            create(**changes)
    create(user_data=base64.b64encode(b"y" * 49149).decode(),  # 65532 in base64: fits
           metadata={f"k{n}": "v" * 255 for n in range(3)})
    with pytest.raises(sdk_exceptions.NotFoundException):
        compute.get_server("00000000-0000-4000-8000-000000000000")
    assert len(cloud.standin.servers) == 1


def test_the_standin_wants_a_token_and_a_microversion_it_has(cloud: Cloud) -> None:
    import requests

    url = f"{cloud.standin.url}/compute/v2.1/servers/detail"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"X-Auth-Token": "made-up"}, timeout=5).status_code == 401
    cloud.provider.servers("test-inst")  # gets a token
    token = next(iter(cloud.standin.tokens))
    assert requests.get(url, headers={"X-Auth-Token": token}, timeout=5).status_code == 200
    assert requests.get(url, headers={"X-Auth-Token": token,
                                      "OpenStack-API-Version": "compute 2.100"},
                        timeout=5).status_code == 406
