"""The mission's promise, end to end on the local provider: a member asks the API for an
instance with the greeter class; it boots, the real cloud-init runs the user-data, bootstrap
installs opslab from the site's wheelhouse, the agent applies the project's branch and
reports; the greeter answers on the instance's own address; members log in over SSH with
their own keys, as themselves, with root; nobody else does, and a removed member no more;
deleting the host leaves nothing of the instance.

Everything the instance reaches is a real server of :mod:`tests.site` (nginx in front of
gunicorn, slapd with StartTLS, apt-cacher-ng); nothing is reached by a back door.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import ldap
import pytest

from opslab.api import context
from opslab.api.app import create_app
from opslab.api.reaper import GRACE, reap
from opslab.api.store import now
from opslab.config import InstanceSettings, load
from opslab.instances.local import LocalProvider
from tests.conftest import BASE, CONTROL_REPO
from tests.local_instances import (
    TEST_ROOTS,
    assert_gone,
    http_get,
    local_image_fixture,  # noqa: F401 (a fixture)
    namespaces,
    remove_all,
)
from tests.openstack_standin import StandIn
from tests.site import INSTALLATION, Person, Site, running_site, ssh

# From the create request until the agent's first report: a boot, cloud-init, bootstrap
# (apt through the proxy, pip from the wheelhouse) and a first Puppet run.
FIRST_REPORT_DEADLINE = 600.0
DOMAIN = "example.org"  # the API's api.domain (tests/served_api.py)
# A login refused because the directory does not answer: within nslcd's and
# opslab-ssh-keys' own time limits, not sshd's LoginGraceTime of two minutes.
REFUSAL_DEADLINE = 30.0


class Launched(NamedTuple):
    site: Site
    certname: str
    address: str
    member: Person
    outsider: Person
    seconds_to_report: float


def assert_refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 255, result
    assert "Permission denied" in result.stderr, result


def reports(site: Site, certname: str) -> list[dict[str, Any]]:
    status, found = site.request("GET", f"/v1/hosts/{certname}/reports", as_="carol", timeout=30)
    assert status == 200, found
    return list(found)


@pytest.fixture(scope="module", params=["local", "openstack"])
def site(request: pytest.FixtureRequest, local_image: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The site, its API launching through the local provider, or through openstacksdk
    and the OpenStack stand-in booting each server as a local instance."""
    root = TEST_ROOTS / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    work = tmp_path_factory.mktemp("site")
    local = LocalProvider(InstanceSettings(installation=INSTALLATION), root=root,
                          image=local_image)
    try:
        with contextlib.ExitStack() as stack:
            settings: dict[str, dict[str, Any]] = {}
            if request.param == "openstack":
                standin = stack.enter_context(StandIn(boot=local))
                settings["instances"] = {
                    "provider": "openstack", "cloud": "standin",
                    "clouds_file": str(standin.clouds_yaml(work / "clouds.yaml")),
                    "image": "debian-12", "flavor": "m1.small", "network": "private"}
            yield stack.enter_context(running_site(work, local_image, root, settings))
    finally:
        # Whatever the API launched and a test did not delete: gone, and checked gone.
        remove_all(local)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def launched(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Launched:
    work = tmp_path_factory.mktemp("people")
    member, outsider = site.new_person("vera", work), site.new_person("nils", work)
    # vera joins web; nils stays in the default project (tools) only.
    status, project = site.request("POST", "/v1/projects/web/members", {"uid": "vera"}, as_="carol")
    assert status == 200, project
    started = time.monotonic()
    status, answer = site.request("POST", "/v1/projects/web/hosts", {
        "name": "app1", "classes": ["greeter"],
        "class_parameters": {"greeter": {"bind": "0.0.0.0",  # noqa: S104 (the instance's own)
                                         "greeting": "Hello from app1"}},
        "instance": {}}, as_="vera", password=member.password)
    assert status == 201, answer
    host = answer["host"]
    assert host["instance"]["state"] == "active", host["instance"]
    [address] = host["instance"]["addresses"]
    certname = host["name"]
    while not reports(site, certname):
        assert time.monotonic() - started < FIRST_REPORT_DEADLINE, (
            f"no report from {certname} after {FIRST_REPORT_DEADLINE:g} s")
        time.sleep(2)
    return Launched(site, certname, address, member, outsider, time.monotonic() - started)


def test_the_instance_configured_itself_from_the_projects_branch(launched: Launched) -> None:
    [report] = reports(launched.site, launched.certname)[-1:]
    assert report["status"] in ("changed", "unchanged"), json.dumps(report, indent=1)
    assert report["environment"] == "production"
    assert report["commit"] == launched.site.remote.head("production")  # type: ignore[union-attr]
    assert report["failed"] == 0
    assert report["failures"] == []
    print(f"create request -> first report: {launched.seconds_to_report:.1f} s")


def test_the_greeter_answers_on_the_instances_own_address(launched: Launched) -> None:
    assert launched.address.startswith("10.213.")
    assert http_get(f"http://{launched.address}:8181/", deadline=60) == "Hello from app1\n"


def test_the_instance_ran_its_smoke_tests_and_a_member_can_run_them(launched: Launched) -> None:
    """After its run the instance checked its classes (the greeter, and what the directory's
    default entry gives every host); a member runs the same checks by hand with sudo."""
    [report] = reports(launched.site, launched.certname)[-1:]
    smoke = report["smoke"]
    assert (smoke["failed"], smoke["skipped"], smoke["error"]) == (0, 1, None), smoke
    result = ssh(launched.address, launched.member,
                 "sudo -n /opt/opslab/bin/opslab smoke run --json")
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout)
    assert (ran["passed"], ran["failed"]) == (smoke["passed"], 0), ran
    passed = {(item["class"], item["check"]) for item in ran["results"]
              if item["status"] == "passed"}
    assert {("greeter", "runs"), ("greeter", "listens on its address and port"),
            ("greeter", "answers with its greeting"),
            ("base", "writes base.conf with its environment")} <= passed, passed


def test_the_greeters_outside_check_holds_seen_from_the_site(launched: Launched,
                                                             tmp_path: Path) -> None:
    """What an outside observer (the CI harness) does: the instance's catalog (over SSH,
    with a member's sudo), its classification (the API), the control repository, and
    ``opslab smoke run --target`` looking at the instance's address."""
    catalog = ssh(launched.address, launched.member,
                  f"sudo -n cat /var/lib/opslab/client_data/catalog/{launched.certname}.json")
    assert catalog.returncode == 0, catalog.stderr
    (tmp_path / "catalog.json").write_text(catalog.stdout)
    status, classification = launched.site.request(
        "GET", f"/v1/nodes/{launched.certname}", as_="carol", timeout=30)
    assert status == 200, classification
    (tmp_path / "classification.json").write_text(json.dumps(classification))

    result = subprocess.run(
        [str(Path(sys.executable).with_name("opslab")), "smoke", "run",
         "--target", launched.address, "--tree", str(CONTROL_REPO),
         "--classification", str(tmp_path / "classification.json"),
         "--catalog", str(tmp_path / "catalog.json"), "--certname", launched.certname,
         "--junit", str(tmp_path / "junit.xml")],
        capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed, 0 skipped" in result.stdout, result.stdout
    assert 'name="answers with its greeting from outside"' in (tmp_path / "junit.xml").read_text()


def test_a_member_logs_in_with_their_key_as_themselves_and_has_root(launched: Launched) -> None:
    result = ssh(launched.address, launched.member,
                 "id -un; id -Gn; test -d \"$HOME\" && echo home; sudo -n true && echo root")
    assert result.returncode == 0, result.stderr
    name, groups, home, root = result.stdout.splitlines()
    assert (name, home, root) == ("vera", "home", "root")
    assert "web" in groups.split()


def test_ssh_offers_no_password_login(launched: Launched) -> None:
    """People have directory passwords (for the API), which PAM through nslcd would take:
    sshd must not ask for them. Refused without a key, it names the methods it offers."""
    result = subprocess.run(
        ["ssh", "-o", "PubkeyAuthentication=no", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", f"{launched.member.uid}@{launched.address}", "true"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 255, result
    assert "Permission denied (publickey)." in result.stderr, result.stderr


def test_someone_outside_the_project_is_refused(launched: Launched) -> None:
    assert_refused(ssh(launched.address, launched.outsider, "true"))


def test_a_removed_member_is_refused_at_once_and_let_in_again_when_back(
        launched: Launched) -> None:
    site = launched.site
    status, _ = site.request("DELETE", "/v1/projects/web/members/vera", as_="olga")
    assert status == 200
    try:
        assert_refused(ssh(launched.address, launched.member, "true"))
    finally:
        status, _ = site.request("POST", "/v1/projects/web/members", {"uid": "vera"}, as_="olga")
        assert status == 200
    assert ssh(launched.address, launched.member, "true").returncode == 0


def test_a_locked_member_is_refused_and_let_in_again_when_unlocked(launched: Launched) -> None:
    slapd = launched.site.slapd
    assert slapd is not None
    dn = f"uid={launched.member.uid},ou=people,{BASE}"
    connection = slapd.connect()
    try:
        # Expired since 1970-01-02 (opslab.accounts: a shadowExpire today or before).
        connection.modify_s(dn, [(ldap.MOD_ADD, "objectClass", [b"shadowAccount"]),
                                 (ldap.MOD_ADD, "shadowExpire", [b"1"])])
        try:
            assert_refused(ssh(launched.address, launched.member, "true"))
        finally:
            connection.modify_s(dn, [(ldap.MOD_DELETE, "shadowExpire", None),
                                     (ldap.MOD_DELETE, "objectClass", [b"shadowAccount"])])
    finally:
        connection.unbind_s()
    assert ssh(launched.address, launched.member, "true").returncode == 0


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_a_directory_that_does_not_answer_refuses_logins_quickly(launched: Launched,
                                                                 fault: str) -> None:
    slapd = launched.site.slapd
    assert slapd is not None
    if fault == "stopped":  # connections refused at once
        slapd.stop()
    else:  # connections accepted by the kernel, then nothing: the network that hangs
        os.kill(slapd.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        refused = ssh(launched.address, launched.member, "true")
        seconds = time.monotonic() - started
    finally:
        if fault == "stopped":
            slapd.start()
        else:
            os.kill(slapd.pid, signal.SIGCONT)
    assert refused.returncode == 255, refused
    assert seconds < REFUSAL_DEADLINE, seconds
    print(f"refused in {seconds:.1f} s with the directory {fault}")
    # Logins come back on their own once the directory answers: nslcd retries a server
    # it found down after reconnect_retrytime (2 s), and a thawed slapd first works off
    # the requests queued while it was frozen.
    back = time.monotonic() + REFUSAL_DEADLINE
    while ssh(launched.address, launched.member, "true").returncode != 0:
        assert time.monotonic() < back, f"no login {REFUSAL_DEADLINE:g} s after the {fault} " \
                                        "directory came back"
        time.sleep(1)


def test_deleting_the_host_removes_its_instance_names_and_container(site: Site) -> None:
    status, answer = site.request("POST", "/v1/projects/web/hosts",
                                  {"name": "brief", "classes": ["motd"], "instance": {}},
                                  as_="carol")
    assert status == 201, answer
    certname, [address] = answer["host"]["name"], answer["host"]["instance"]["addresses"]
    local = LocalProvider(InstanceSettings(installation=INSTALLATION), root=site.local_root,
                          image=site.local_image)
    [record] = [record for record in local.records() if record.address == address]
    traces = namespaces(local, record)
    assert names(site, certname)

    status, _ = site.request("DELETE", f"/v1/hosts/{certname}", as_="carol")
    assert status == 204
    assert_gone(local, record, *traces)
    assert site.request("GET", f"/v1/hosts/{certname}", as_="carol")[0] == 404
    assert names(site, certname) == []


def test_an_api_killed_mid_launch_leaves_what_the_reaper_removes(site: Site) -> None:
    """kill -9 of the API while it waits for the instance: the request dies, the container
    is left running; one pass of the reaper, once the launch is past its deadline, removes
    the instance, the host and its names."""
    assert site.api is not None
    certname = f"doomed.web.{DOMAIN}"
    local = LocalProvider(InstanceSettings(), root=site.local_root, image=site.local_image)
    answers: list[tuple[int, Any] | Exception] = []

    def launch() -> None:
        try:
            answers.append(site.request("POST", "/v1/projects/web/hosts", {
                "name": "doomed", "classes": ["motd"], "instance": {}}, as_="carol",
                timeout=60))
        except OSError as error:  # the connection the kill cut
            answers.append(error)

    request = threading.Thread(target=launch)
    request.start()
    try:
        deadline = time.monotonic() + 60
        while not [record for record in local.records() if record.name == certname]:
            assert time.monotonic() < deadline, "the launch never reached the provider"
            time.sleep(0.05)
        site.api.kill()
    finally:
        request.join(timeout=90)
    [answer] = answers  # the connection cut (nginx may answer 502 for it)
    assert isinstance(answer, Exception) or answer[0] >= 500, answer
    site.api.start()
    [record] = [record for record in local.records() if record.name == certname]
    traces = namespaces(local, record)
    assert site.request("GET", f"/v1/hosts/{certname}", as_="carol")[0] == 200

    config = load(str(site.api.config))
    app = create_app(config)
    with app.app_context():
        context.directory().begin_request()
        assert reap(now()).undone == []  # a launch may still be under way
        past_its_deadline = timedelta(seconds=config.instances.launch_timeout + 1) + GRACE
        assert reap(now() + past_its_deadline).undone == [certname]
    app.extensions["opslab.engine"].dispose()
    assert_gone(local, record, *traces)
    assert site.request("GET", f"/v1/hosts/{certname}", as_="carol")[0] == 404
    assert names(site, certname) == []


def names(site: Site, certname: str) -> list[str]:
    """The directory's DNS entries of ``certname``: its host entry and its id's alias."""
    assert site.slapd is not None
    connection = site.slapd.connect()
    try:
        return [dn for dn, _ in connection.search_s(
            BASE, ldap.SCOPE_SUBTREE,
            f"(|(associatedDomain={certname})(cNAMERecord={certname}))", ["1.1"])]
    finally:
        connection.unbind_s()
