"""The instance agent end to end: real slapd, real git, the real API behind gunicorn on a
loopback port, real ``puppet apply``.

Every Puppet run takes seconds, so the scenarios below share one fleet (one
project, one host, one control repository, one API), whose fixture makes the
first run with the real ``opslab agent run --once``. They pass alone and in
any order: each starts from the agent at rest on the current target (fixture
``converged``, which applies what an earlier test left pending), asserts
against what it changed itself, and what it takes away that others rely on
(the API, the remote, runs, members, classes) a fixture puts back at
teardown, whether the test passed or not. Scenarios: the first run, a
classification change, a branch change, the API down during a run, the
remote down, a disabled agent, runs in which a command prints a NUL or
hundreds of resources fail. Cheaper properties (spool order and idempotency,
sudo, the target's ETag) have tests of their own that need no Puppet run.
"""

import contextlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import ldap
import pytest
import yaml

from opslab import process
from opslab.agent.agent import Agent
from opslab.agent.client import ApiClient, ApiUnavailable
from opslab.agent.report import KEEP, MAX_BODY, bounded, clean, keep
from opslab.agent.spool import Spool
from opslab.agent.sudoers import SudoersError, install, render
from opslab.config import EncSettings, load
from opslab.slapd import ThrowawaySlapd, free_port
from tests.conftest import BASE, CONTROL_REPO, PEOPLE, basic, bearer
from tests.http_stubs import Recorder, Trickler, redirecting_to
from tests.local_accounts import free_uids, local_account, require_root
from tests.remote import Remote
from tests.served_api import ServedApi

PROJECT = "fleet"
NODE = f"agent1.{PROJECT}.example.org"
MOTD = "modules/motd/manifests/init.pp"
FAILING = "modules/failing/manifests/init.pp"
NUL_CLASS = "modules/printsnul/manifests/init.pp"
FAILURES = 400
SUDO = shutil.which("sudo")
SUDOERS_D = Path("/etc/sudoers.d")


class FirstRun(NamedTuple):
    """The fleet's first run, the real command, and what it left right after."""

    process: subprocess.CompletedProcess[str]
    commit: str
    motd: str | None
    reports: list[dict[str, Any]]
    sudoers: str | None
    sudoers_mode: int | None


class Fleet:
    """The API, the control repository and one instance's agent, sharing a scratch dir."""

    first: FirstRun  # set by the fixture

    def __init__(self, work: Path, slapd: ThrowawaySlapd) -> None:
        self.work = work
        self.remote = Remote(work / "repository")
        shutil.copytree(CONTROL_REPO, self.remote.work, dirs_exist_ok=True)
        self.remote.commit("production", {}, "the example control repository")
        # The agent reaches the repository through a link that tests can break,
        # while the API still reaches it: "the remote is down" for the instance.
        self.agent_remote = work / "agent-remote.git"
        self.agent_remote.symlink_to(self.remote.bare)
        (work / "api").mkdir()
        self.api = ServedApi(work / "api", slapd, BASE, {
            "branches": {"remote": self.remote.url},
            "api": {"heads_ttl": 0},
        })
        self.root = work / "root"
        self.root.mkdir()
        self.config_path = work / "agent.yaml"
        self.sudoers = work / "sudoers.d" / "opslab-project"
        # What the motd file says once the agent applied: the host's message, and
        # the trailer that the motd class of the branch's head adds to it.
        self.message = "first message"
        self.trailer = ""

    def create(self) -> None:
        """The project (olga of operations creates it, carol joins) and the host."""
        self.call("POST", "/v1/projects", "olga", {"name": PROJECT, "branch": "production"})
        self.call("POST", f"/v1/projects/{PROJECT}/members", "olga", {"uid": "carol"})
        host = self.call("POST", f"/v1/projects/{PROJECT}/hosts", "carol", {
            "name": NODE, "classes": ["motd"],
            "class_parameters": {"motd": {"message": self.message}}})
        token = self.work / "host-token"
        token.write_text(host["token"])
        token.chmod(0o600)
        self.config_path.write_text(yaml.safe_dump({
            "enc": {"api_url": self.api.url, "api_token_file": str(token), "api_timeout": 5},
            "cache": {"dir": str(self.work / "enc-cache")},
            "branches": {"remote": str(self.agent_remote),
                         "environments": str(self.work / "environments"),
                         "cache": str(self.work / "git-cache")},
            "apply": {"certname": NODE, "state_dir": str(self.work / "state"),
                      "puppet_state_dir": str(self.work / "puppet")},
            "agent": {"sudoers_file": str(self.sudoers),
                      "retry_interval": 300, "apply_interval": 1800},
        }))
        self.sudoers.parent.mkdir()

    def first_run(self) -> FirstRun:
        """The real command, as a timer would start it, and what it left."""
        result = process.run(
            [sys.executable, "-m", "opslab.cli", f"--config={self.config_path}", "agent", "run",
             "--once"], 600, text=True)
        motd = self.root / "motd"
        return FirstRun(result, self.remote.head("production"),
                        motd.read_text() if motd.exists() else None, self.reports(),
                        self.sudoers.read_text() if self.sudoers.exists() else None,
                        self.sudoers.stat().st_mode & 0o777 if self.sudoers.exists() else None)

    def agent(self) -> Agent:
        return Agent(load(str(self.config_path)), "0.1.0-test")

    def call(self, method: str, path: str, uid: str, body: Any = None) -> Any:
        status, answer = self.api.request(method, path, body, basic(uid))
        assert status < 300, (status, answer)
        return json.loads(answer) if answer else None

    def reports(self) -> list[dict[str, Any]]:
        """The host's reports as the API has them, oldest first."""
        return list(reversed(self.call("GET", f"/v1/hosts/{NODE}/reports", "carol")))

    def motd(self) -> str:
        return (self.root / "motd").read_text()

    def set_message(self, message: str) -> None:
        """The host's motd message, through the API."""
        self.call("PATCH", f"/v1/hosts/{NODE}", "carol",
                  {"class_parameters": {"motd": {"message": message}}})
        self.message = message

    def commit_trailer(self, trailer: str) -> str:
        """A commit on production whose motd class adds ``trailer`` to the message."""
        manifest = (CONTROL_REPO / MOTD).read_text()
        commit = self.remote.commit("production", {
            MOTD: manifest.replace('"${message}\\n"', f'"${{message}}\\n{trailer}\\n"')})
        self.trailer = f"{trailer}\n"
        return commit

    def wanted_motd(self) -> str:
        """The motd file once the agent applied the current message and commit."""
        return f"{self.message}\n{self.trailer}"


@pytest.fixture(scope="module")
def fleet(slapd: ThrowawaySlapd, people: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), slapd)
    fleet.api.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            # Puppet writes below this fact's directory (examples/control-repo).
            patch.setenv("FACTER_opslab_root", str(fleet.root))
            fleet.create()
            fleet.first = fleet.first_run()
            yield fleet
    finally:
        fleet.api.stop()


@pytest.fixture
def converged(fleet: Fleet) -> Fleet:
    """The fleet with its agent at rest on the current target, whichever tests ran before
    and however they ended: what one left pending is applied, a failed run retried."""
    agent = fleet.agent()
    check = agent.check()
    if check.outcome == "waiting":
        check = agent.check(now=_later(agent, agent.settings.retry_interval + 1))
    assert check.outcome in ("unchanged", "applied"), check
    assert check.report is None or check.report["success"], check.report
    assert agent.check().outcome == "unchanged"
    assert agent.spool.pending() == []
    return fleet


class Outage:
    """Something the fleet relies on, which a test takes away (``begin``) and may bring
    back (``end``) as part of what it checks; its fixture ends it at teardown."""

    def __init__(self, begin: Callable[[], object], end: Callable[[], object]) -> None:
        self._begin = begin
        self._end = end
        self.on = False

    def begin(self) -> None:
        self._begin()
        self.on = True

    def end(self) -> None:
        if self.on:
            self._end()
            self.on = False


@contextlib.contextmanager
def ended_afterwards(outage: Outage) -> Iterator[Outage]:
    try:
        yield outage
    finally:
        outage.end()


@pytest.fixture
def api_outage(converged: Fleet) -> Iterator[Outage]:
    """Stopping the fleet's API."""
    with ended_afterwards(Outage(converged.api.stop, converged.api.start)) as outage:
        yield outage


@pytest.fixture
def remote_outage(converged: Fleet) -> Iterator[Outage]:
    """Making the remote unreachable for the agent (the API still reaches it)."""
    link = converged.agent_remote
    with ended_afterwards(Outage(link.unlink,
                                 lambda: link.symlink_to(converged.remote.bare))) as outage:
        yield outage


@pytest.fixture
def global_project(converged: Fleet) -> Iterator[Outage]:
    """Making the fleet's project global, which takes sudo from its members."""
    def make_global(value: bool) -> Callable[[], object]:
        return lambda: converged.call("PATCH", f"/v1/projects/{PROJECT}", "olga",
                                      {"global": value})

    with ended_afterwards(Outage(make_global(True), make_global(False))) as outage:
        yield outage


@pytest.fixture
def runs_enabled_afterwards(converged: Fleet) -> Iterator[Agent]:
    """The fleet's agent, for a test that disables it: enabled again at teardown."""
    agent = converged.agent()
    yield agent
    agent.set_disabled(None)


@pytest.fixture
def members_removed_afterwards(converged: Fleet) -> Iterator[list[str]]:
    """The people a test adds to the fleet's project (it appends them): removed at
    teardown, so the project's members are carol and olga again."""
    added: list[str] = []
    yield added
    for uid in added:
        # 404 when the test removed them itself.
        converged.api.request("DELETE", f"/v1/projects/{PROJECT}/members/{uid}", None,
                              basic("olga"))


@pytest.fixture
def classes_restored_afterwards(converged: Fleet) -> Iterator[Fleet]:
    """For a test that gives the host more classes: its only class is motd again at
    teardown (the next test's ``converged`` applies that)."""
    yield converged
    converged.call("PATCH", f"/v1/hosts/{NODE}", "carol", {"classes": ["motd"]})


def test_first_run_applies_reports_and_grants_sudo(fleet: Fleet) -> None:
    """The real command, as a timer would start it (the fleet fixture's first run)."""
    first = fleet.first

    assert first.process.returncode == 0, first.process.stderr
    assert first.motd == "first message\n"
    [report] = first.reports
    assert (report["status"], report["trigger"], report["agent_version"]) == (
        "changed", "first", process_version())
    assert report["commit"] == first.commit
    assert report["changed"] >= 1
    assert report["failed"] == 0
    assert fleet.reports()[0] == report  # the oldest the API keeps, whatever ran since
    assert f"info opslab.agent.agent: applying certname={NODE} trigger=first" in \
        first.process.stderr.splitlines()
    assert first.sudoers is not None
    assert first.sudoers.splitlines()[2:] == ["carol ALL=(ALL:ALL) NOPASSWD: ALL",
                                              "olga ALL=(ALL:ALL) NOPASSWD: ALL"]
    assert first.sudoers_mode == 0o440


def process_version() -> str:
    from opslab.agent.cli import agent_version
    return agent_version()


def test_nothing_changed_means_no_run(converged: Fleet) -> None:
    count = len(converged.reports())

    check = converged.agent().check()

    assert check.outcome == "unchanged"
    assert len(converged.reports()) == count


def test_a_classification_change_converges(converged: Fleet) -> None:
    fleet = converged
    fleet.set_message("second message")

    check = fleet.agent().check()

    assert check.outcome == "applied", check
    assert fleet.motd() == fleet.wanted_motd()
    assert fleet.motd().startswith("second message\n")
    report = fleet.reports()[-1]
    assert (report["status"], report["trigger"]) == ("changed", "change")
    assert fleet.agent().check().outcome == "unchanged"


def test_a_new_commit_on_the_branch_converges(converged: Fleet) -> None:
    fleet = converged
    commit = fleet.commit_trailer("-- opslab")

    check = fleet.agent().check()

    assert check.outcome == "applied", check
    assert fleet.motd() == fleet.wanted_motd()
    assert fleet.motd().endswith("\n-- opslab\n")
    report = fleet.reports()[-1]
    assert (report["commit"], report["status"], report["trigger"]) == (commit, "changed",
                                                                       "change")


def test_api_down_during_a_run_spools_the_report_and_delivers_it_once(
        converged: Fleet, api_outage: Outage) -> None:
    fleet = converged
    agent = fleet.agent()
    before = len(fleet.reports())
    (fleet.root / "motd").write_text("drifted\n")
    api_outage.begin()
    # Due for a drift run while the API is away: Puppet runs on the ENC's
    # cached classification, and the report waits in the spool.
    check = agent.check(now=_later(agent, agent.settings.apply_interval + 1))
    assert check.outcome == "applied", check
    assert fleet.motd() == fleet.wanted_motd()
    [spooled] = agent.spool.pending()
    assert spooled.kind == "report"
    assert spooled.body["trigger"] == "drift"
    api_outage.end()

    delivery = agent.deliver()
    again = agent.deliver()

    assert (delivery.delivered, delivery.pending, again.delivered) == (1, 0, 0)
    reports = fleet.reports()
    assert len(reports) == before + 1
    assert (reports[-1]["trigger"], reports[-1]["status"]) == ("drift", "changed")
    assert agent.spool.pending() == []


def test_remote_down_changes_nothing_and_reports_the_failure(converged: Fleet,
                                                             remote_outage: Outage) -> None:
    fleet = converged
    agent = fleet.agent()
    deployed = fleet.wanted_motd()
    remote_outage.begin()
    commit = fleet.commit_trailer("-- v3")

    check = agent.check()

    assert check.outcome == "applied", check
    assert fleet.motd() == deployed
    report = fleet.reports()[-1]
    assert report["status"] == "failed"
    assert report["commit"] != commit
    assert any("could not be updated" in message for message in report["errors"])
    # The failed target is retried after agent.retry_interval, not on every check.
    assert agent.check().outcome == "waiting"

    remote_outage.end()
    check = agent.check(now=_later(agent, agent.settings.retry_interval + 1))

    assert check.outcome == "applied", check
    assert fleet.motd() == fleet.wanted_motd()
    assert fleet.motd().endswith("\n-- v3\n")
    assert fleet.reports()[-1]["commit"] == commit


def test_a_disabled_agent_does_not_apply_and_the_api_shows_why(
        converged: Fleet, runs_enabled_afterwards: Agent) -> None:
    fleet = converged
    agent = runs_enabled_afterwards
    agent.set_disabled("upgrading the database by hand")
    host = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")
    assert host["agent"]["disabled"] is True
    assert host["agent"]["reason"] == "upgrading the database by hand"
    count = len(fleet.reports())
    before = fleet.motd()
    fleet.set_message("third message")

    check = agent.check()

    assert check.outcome == "disabled"
    assert "upgrading the database by hand" in check.detail
    assert fleet.motd() == before
    assert len(fleet.reports()) == count

    agent.set_disabled(None)
    assert fleet.call("GET", f"/v1/hosts/{NODE}", "carol")["agent"]["disabled"] is False
    assert agent.check().outcome == "applied"
    assert fleet.motd() == fleet.wanted_motd()
    assert fleet.motd().startswith("third message\n")


def test_a_reason_that_is_not_utf8_reaches_the_api(converged: Fleet,
                                                   runs_enabled_afterwards: Agent) -> None:
    """``opslab agent disable`` with bytes that are not UTF-8 in its argument (Python
    holds them as lone surrogates, which the API refuses)."""
    fleet = converged
    agent = runs_enabled_afterwards

    delivery = agent.set_disabled(os.fsdecode(b"kernel \xff upgrade"))

    assert (delivery.delivered, delivery.rejected, delivery.pending) == (1, 0, 0)
    shown = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")["agent"]
    assert (shown["disabled"], shown["reason"]) == (True, "kernel \ufffd upgrade")


def test_a_membership_change_updates_sudo_without_a_puppet_run(
        converged: Fleet, members_removed_afterwards: list[str]) -> None:
    fleet = converged
    agent = fleet.agent()
    count = len(fleet.reports())
    members_removed_afterwards.append("dave")
    fleet.call("POST", f"/v1/projects/{PROJECT}/members", "olga", {"uid": "dave"})

    assert agent.check().outcome == "unchanged"
    assert "dave ALL=(ALL:ALL) NOPASSWD: ALL" in fleet.sudoers.read_text()

    fleet.call("DELETE", f"/v1/projects/{PROJECT}/members/dave", "olga")
    assert agent.check().outcome == "unchanged"
    assert "dave" not in fleet.sudoers.read_text()
    assert len(fleet.reports()) == count


def test_a_run_whose_command_printed_a_nul_reaches_the_api(
        classes_restored_afterwards: Fleet) -> None:
    """Puppet passes a command's output on, NUL bytes and all; the API refuses any text
    holding one. The copy sent has U+FFFD in its place, the full report keeps it."""
    fleet = classes_restored_afterwards
    agent = fleet.agent()
    fleet.remote.commit("production", {NUL_CLASS: (
        "class printsnul {\n  exec { 'migrate':\n"
        "    command   => \"/usr/bin/printf 'step 1\\\\000done\\\\n'; exit 1\",\n"
        "    provider  => shell,\n    logoutput => true,\n  }\n}\n")})
    fleet.call("PATCH", f"/v1/hosts/{NODE}", "carol", {"classes": ["motd", "printsnul"]})
    count = len(fleet.reports())

    check = agent.check()

    assert check.outcome == "applied", check
    assert check.report is not None
    assert "step 1\x00done" in check.report["output_tail"]  # what Puppet said
    assert agent.spool.pending() == []
    assert not agent.spool.rejected.exists()
    reports = fleet.reports()
    assert len(reports) == count + 1
    assert (reports[-1]["status"], reports[-1]["failed"]) == ("failed", 1)
    assert reports[-1]["failures"][0]["resource"] == "Exec[migrate]"


def test_a_run_with_hundreds_of_failures_reaches_the_api(
        classes_restored_afterwards: Fleet) -> None:
    """Its full report is far above the API's max body: the agent sends a bounded copy."""
    fleet = classes_restored_afterwards
    agent = fleet.agent()
    fleet.remote.commit("production", {FAILING: (
        "# Every file below a directory that does not exist: each one fails.\n"
        f"class failing {{\n  Integer[1, {FAILURES}].each |$i| {{\n"
        '    file { "${::opslab_root}/missing/file-${i}": ensure => file }\n  }\n}\n')})
    fleet.call("PATCH", f"/v1/hosts/{NODE}", "carol", {"classes": ["motd", "failing"]})
    reports = agent.directory / "reports"
    earlier = set(reports.glob("*.json"))

    check = agent.check()

    assert check.outcome == "applied", check
    assert check.report is not None
    assert len(check.report["failed_resources"]) == FAILURES
    assert len(json.dumps(check.report)) > 65536  # what the API would refuse whole
    # Delivered (201), not set aside: nothing left in the spool, nothing rejected.
    assert agent.spool.pending() == []
    assert not agent.spool.rejected.exists()
    last_run = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")["last_run"]
    assert (last_run["status"], last_run["failed"], last_run["commit"]) == (
        "failed", FAILURES, fleet.remote.head("production"))
    assert 0 < len(last_run["failures"]) <= 50
    # The full report is kept on the instance, under the key it was delivered with.
    [kept] = set(reports.glob("*.json")) - earlier
    full = json.loads(kept.read_text())
    assert len(full["failed_resources"]) == FAILURES
    assert "truncated" not in full
    assert oct(kept.stat().st_mode & 0o777) == "0o600"


def test_a_run_reports_its_smoke_tests(converged: Fleet) -> None:
    """The checks of the host's classes (examples/control-repo/modules/*/checks.yaml: base's,
    which every host has from the directory's default entry, and motd's) run after the run;
    their results are stored with the report and shown in the host view."""
    fleet = converged
    fleet.set_message("checked message")

    check = fleet.agent().check()

    assert check.outcome == "applied", check
    assert check.smoke is not None
    assert (check.smoke["passed"], check.smoke["failed"], check.smoke.get("error")) == (
        2, 0, None), check.smoke
    view = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")
    assert view["last_run"]["smoke"]["passed"] == 2
    assert view["smoke"]["commit"] == fleet.remote.head("production")
    assert view["failing"] is False


def test_a_service_killed_between_runs_fails_at_the_next_smoke_check(
        classes_restored_afterwards: Fleet) -> None:
    """Puppet starts the greeter; it dies; the next check, past agent.smoke_interval and
    before any Puppet run is due, runs the checks alone and the API shows the host failing
    while its last run stays the successful one."""
    fleet = classes_restored_afterwards
    agent = fleet.agent()
    port = free_port()
    fleet.call("PATCH", f"/v1/hosts/{NODE}", "carol", {
        "classes": ["motd", "greeter"],
        "class_parameters": {"greeter": {"port": port, "greeting": "Hello, checker"}}})
    applied = agent.check()
    assert applied.outcome == "applied", applied
    assert applied.smoke is not None
    assert applied.smoke["failed"] == 0, applied.smoke
    assert applied.smoke["passed"] == 5  # base's, motd's, and three of the greeter's four
    assert applied.smoke["skipped"] == 1  # the greeter seen from outside
    last_run = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")["last_run"]
    pid = int((fleet.root / "greeter" / "pid").read_text())

    os.kill(pid, 9)
    _wait_gone(pid)
    between = agent.check(now=_later(agent, agent.settings.smoke_interval + 1))

    assert between.outcome == "unchanged", between
    assert between.smoke is not None
    assert between.smoke["failed"] == 3, between.smoke
    failed = {(item["class"], item["check"]) for item in between.smoke["failures"]}
    assert failed == {("greeter", "runs"), ("greeter", "listens on its address and port"),
                      ("greeter", "answers with its greeting")}
    view = fleet.call("GET", f"/v1/hosts/{NODE}", "carol")
    assert view["failing"] is True
    assert view["last_run"] == last_run
    assert view["smoke"]["failed"] == 3
    failing = fleet.call("GET", f"/v1/hosts?project={PROJECT}&failing=true", "carol")
    assert [host["name"] for host in failing] == [NODE]
    # Puppet's next run starts it again, and the host is no longer failing.
    fleet.call("PATCH", f"/v1/hosts/{NODE}", "carol", {"classes": ["motd"]})
    assert agent.check().outcome == "applied"
    assert fleet.call("GET", f"/v1/hosts/{NODE}", "carol")["failing"] is False


def _wait_gone(pid: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")


@pytest.fixture
def system_sudoers() -> Iterator[Path]:
    """A drop-in path in /etc/sudoers.d, where the real sudo reads it; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("only root may put a drop-in where the real sudo reads it")
    if SUDO is None or not SUDOERS_D.is_dir():
        pytest.skip("needs sudo (Debian package sudo) and its /etc/sudoers.d")
    # No dot in the name: sudo skips such files in its includedir.
    path = SUDOERS_D / f"opslab-test-{os.getpid()}"
    yield path
    path.unlink(missing_ok=True)


def sudo_rights(user: str) -> str:
    """What the real sudo says ``user`` may run (``sudo -l -U USER``), as root asks it."""
    assert SUDO is not None
    result = subprocess.run([SUDO, "-n", "-l", "-U", user], capture_output=True, text=True,
                            timeout=60, check=False)
    return result.stdout + result.stderr


LOCAL_MEMBER = "fleet-admin"  # a member whose local account is their own (its uid, theirs)
IMPOSTOR = "fleet-impostor"  # a member named like a local account of another uid
NUMBERLESS = "fleet-numberless"  # a member without a uidNumber, named like a local account


def person_ldif(uid: str, number: int | None) -> str:
    """A person; with ``number``, a posixAccount of that uidNumber."""
    posix = (f"objectClass: posixAccount\nuidNumber: {number}\ngidNumber: {number}\n"
             f"homeDirectory: /home/{uid}\n") if number is not None else ""
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\n{posix}")


class Candidates(NamedTuple):
    """People the API grants sudo as members of the fleet's project, and their accounts."""

    people: dict[str, int | None]  # uid -> the directory's uidNumber (None: no posixAccount)
    local: dict[str, int]  # the local accounts' uids, by name
    own: int  # LOCAL_MEMBER's uid, here and in the directory
    impostor_local: int
    impostor_number: int
    numberless_local: int


@pytest.fixture
def sudo_candidates(converged: Fleet, slapd: ThrowawaySlapd) -> Iterator[Candidates]:
    """``backup`` (uid 34) and ``nobody`` (65534, sshd's AuthorizedKeysCommandUser) as
    people with uidNumbers of their own, a person named like a local account of another
    uid, one with no uidNumber at all and one whose local account is theirs: local
    accounts, directory entries and project members, all removed at teardown."""
    require_root()
    local = {name: pwd.getpwnam(name).pw_uid for name in ("backup", "nobody")}
    own, impostor_local, impostor_number, numberless_local = free_uids(4)
    people = {"backup": 5034, "nobody": 7777, LOCAL_MEMBER: own, IMPOSTOR: impostor_number,
              NUMBERLESS: None}
    with contextlib.ExitStack() as accounts:
        for name, uid in ((LOCAL_MEMBER, own), (IMPOSTOR, impostor_local),
                          (NUMBERLESS, numberless_local)):
            accounts.enter_context(local_account(name, uid))
            local[name] = uid
        # Registered first: whatever of them was added goes, however far adding got.
        accounts.callback(remove_people, converged, slapd, list(people))
        for uid, number in people.items():
            slapd.add_ldif(person_ldif(uid, number))
            converged.call("POST", f"/v1/projects/{PROJECT}/members", "olga", {"uid": uid})
        yield Candidates(people, local, own, impostor_local, impostor_number,
                         numberless_local)


def remove_people(fleet: Fleet, slapd: ThrowawaySlapd, uids: list[str]) -> None:
    """``uids`` out of the fleet's project and out of the directory, as far as they got."""
    connection = slapd.connect()
    try:
        for uid in uids:
            fleet.api.request("DELETE", f"/v1/projects/{PROJECT}/members/{uid}", None,
                              basic("olga"))
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                connection.delete_s(f"uid={uid},{PEOPLE}")
    finally:
        connection.unbind_s()


def test_sudo_goes_only_to_a_members_own_local_account(
        converged: Fleet, system_sudoers: Path, sudo_candidates: Candidates,
        slapd: ThrowawaySlapd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """sudo grants to the local account of a name, so a member gets sudo only where that
    account, if any, is theirs: its uid is their directory uidNumber.

    The directory cannot know an instance's accounts: the API grants all the
    candidates sudo as members; the instance must grant it to none of them but
    the one whose local account is their own.
    """
    fleet = converged
    people, local = sudo_candidates.people, sudo_candidates.local
    caplog.set_level(logging.INFO, logger="opslab.agent")
    agent = Agent(load(str(fleet.config_path)), "0.1.0-test")
    # The real agent, writing the drop-in where the real sudo reads it.
    settings = yaml.safe_load(fleet.config_path.read_text())
    settings["agent"]["sudoers_file"] = str(system_sudoers)
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(settings))
    system_agent = Agent(load(str(tmp_path / "agent.yaml")), "0.1.0-test")
    target = ApiClient(load(str(fleet.config_path)).enc).target(NODE, None)
    assert target is not None
    # What the agent must not take as it is.
    assert set(people) <= set(target.document["sudo"])
    assert {name: target.document["uid_numbers"][name] for name in people} == people

    assert agent.check().outcome == "unchanged"
    assert system_agent.check().outcome == "unchanged"

    rules = [line for line in fleet.sudoers.read_text().splitlines()
             if not line.startswith("#")]
    assert rules == [f"{user} ALL=(ALL:ALL) NOPASSWD: ALL"
                     for user in ("carol", LOCAL_MEMBER, "olga")]
    for reason in (
            f"no sudo for backup: the local account 'backup' has uid {local['backup']}, "
            "which is below accounts.min_uid (1000)",
            f"no sudo for nobody: the local account 'nobody' has uid {local['nobody']}, "
            "which is above accounts.max_uid (60000)",
            f"no sudo for {IMPOSTOR}: the local account {IMPOSTOR!r} has uid "
            f"{sudo_candidates.impostor_local}, not the person's uidNumber "
            f"{sudo_candidates.impostor_number}",
            f"no sudo for {NUMBERLESS}: a local account {NUMBERLESS!r} (uid "
            f"{sudo_candidates.numberless_local}) exists, and the directory gives this "
            "person no uidNumber"):
        assert any(message.startswith(reason) for message in caplog.messages), (
            reason, caplog.messages)
    assert system_sudoers.read_text() == fleet.sudoers.read_text()
    assert "NOPASSWD: ALL" in sudo_rights(LOCAL_MEMBER)  # sudo reads the drop-in
    for name in ("backup", "nobody", IMPOSTOR, NUMBERLESS):
        assert "is not allowed to run sudo" in sudo_rights(name), name

    # Taken out of the project (the fixture's teardown does it again, to no effect),
    # none of them keeps a rule.
    remove_people(fleet, slapd, list(people))
    assert agent.check().outcome == "unchanged"
    assert not any(name in fleet.sudoers.read_text() for name in people)


def test_one_bad_name_in_the_target_never_keeps_a_removed_member(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A name that is not a login name (``j.doe``, written into the directory by hand) is
    left out on its own: the rest of the target still reaches the drop-in, so a member
    removed meanwhile loses sudo. The real agent, the real visudo."""
    sudoers = tmp_path / "opslab-project"
    token = tmp_path / "host-token"
    token.write_text("never sent\n")
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        # Never asked: _keep_sudo acts on the target it is given.
        "enc": {"api_url": "http://127.0.0.1:9", "api_token_file": str(token)},
        "apply": {"certname": NODE, "state_dir": str(tmp_path / "state")},
        "agent": {"sudoers_file": str(sudoers)}}))
    caplog.set_level(logging.INFO, logger="opslab.agent")
    agent = Agent(load(str(config)), "0.1.0-test")
    agent._keep_sudo({"project": PROJECT, "sudo": ["carol", "dave"],
                      "uid_numbers": {"carol": None, "dave": None}}, announce=True)
    assert "dave ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers.read_text()

    # dave was removed from the project; j.doe was added by hand.
    agent._keep_sudo({"project": PROJECT, "sudo": ["carol", "j.doe"],
                      "uid_numbers": {"carol": None, "j.doe": None}}, announce=True)

    rules = [line for line in sudoers.read_text().splitlines() if not line.startswith("#")]
    assert rules == ["carol ALL=(ALL:ALL) NOPASSWD: ALL"]
    assert any(message.startswith("no sudo for j.doe: user name 'j.doe' is not a login name")
               for message in caplog.messages), caplog.messages


def test_members_of_a_global_project_get_no_sudo(converged: Fleet,
                                                global_project: Outage) -> None:
    agent = converged.agent()
    global_project.begin()

    assert agent.check().outcome == "unchanged"
    assert not converged.sudoers.exists()

    global_project.end()
    assert agent.check().outcome == "unchanged"
    assert "carol ALL=" in converged.sudoers.read_text()


def test_the_target_is_a_304_until_something_changes(fleet: Fleet) -> None:
    client = ApiClient(load(str(fleet.config_path)).enc)
    target = client.target(NODE, None)
    assert target is not None
    assert target.document["commit"] == fleet.remote.head("production")
    assert target.document["sudo"] == ["carol", "olga"]

    assert client.target(NODE, target.etag) is None
    fleet.remote.commit("production", {"README": "a new commit\n"})
    changed = client.target(NODE, target.etag)
    assert changed is not None
    assert changed.etag != target.etag
    assert changed.document["commit"] == fleet.remote.head("production")


def test_a_host_token_reads_only_its_own_target(fleet: Fleet) -> None:
    token = (fleet.work / "host-token").read_text()
    status, _ = fleet.api.request("GET", "/v1/nodes/web1.web.example.org/target",
                                  headers=bearer(token))
    assert status == 403


def test_only_the_hosts_own_token_sets_its_agent_state_and_older_states_lose(
        fleet: Fleet) -> None:
    token = (fleet.work / "host-token").read_text()
    path = f"/v1/hosts/{NODE}/agent"
    # Now and a second before: the API takes no state as dated later than its arrival.
    moment = datetime.now(UTC)
    newer = {"disabled": False, "reason": None, "changed_at": moment.isoformat()}
    older = {"disabled": True, "reason": "stale",
             "changed_at": (moment - timedelta(seconds=1)).isoformat()}

    assert fleet.api.request("PUT", path, newer, bearer(token))[0] == 200
    status, body = fleet.api.request("PUT", path, older, bearer(token))

    assert status == 200
    assert json.loads(body)["disabled"] is False
    assert fleet.api.request("PUT", path, newer, basic("carol"))[0] == 403
    assert fleet.api.request("PUT", "/v1/hosts/web1.web.example.org/agent", newer,
                             bearer(token))[0] == 403
    for bad in ({**newer, "disabled": "no"}, {**newer, "changed_at": "yesterday"},
                {**newer, "reason": "x" * 1001}, {**newer, "extra": 1}):
        status, body = fleet.api.request("PUT", path, bad, bearer(token))
        assert status == 422, (bad, body)


def test_a_report_delivered_twice_is_stored_once(fleet: Fleet) -> None:
    client = ApiClient(load(str(fleet.config_path)).enc)
    count = len(fleet.reports())
    report = {"status": "unchanged", "exit_code": 0, "trigger": "drift"}

    client.post_report(NODE, report, "retried-after-a-lost-answer")
    client.post_report(NODE, report, "retried-after-a-lost-answer")

    assert len(fleet.reports()) == count + 1


def client_for(tmp_path: Path, url: str, timeout: float = 5.0) -> ApiClient:
    token = tmp_path / "host-token"
    token.write_text(f"{SECRET_TOKEN}\n")
    return ApiClient(EncSettings(api_url=url, api_token_file=str(token), api_timeout=timeout))


SECRET_TOKEN = "host-token-never-to-leave"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_agent_follows_no_redirect(tmp_path: Path, status: int) -> None:
    """Whatever answers at enc.api_url with a redirect (a proxy, a man in the middle) gets
    nothing more: the token never goes to the Location, and a report is not taken for
    delivered: it stays spooled until enc.api_url is fixed."""
    with Recorder() as elsewhere, redirecting_to(elsewhere.url, status) as api:
        client = client_for(tmp_path, api.url)
        with pytest.raises(ApiUnavailable) as refused:
            client.target(NODE, None)
        spool = Spool(tmp_path / "spool")
        spool.add("report", NODE, {"status": "unchanged", "exit_code": 0})
        delivery = spool.deliver(lambda item: client.post_report(item.certname, item.body,
                                                                 item.key))
    assert (f"HTTP {status}, a redirect to '{elsewhere.url}/redirected': the agent follows "
            "no redirect") in str(refused.value)
    assert (delivery.delivered, delivery.rejected, delivery.pending) == (0, 0, 1)
    assert "a redirect to" in str(delivery.error)
    assert [method for method, _, _ in api.requests] == ["GET", "POST"]
    assert elsewhere.requests == []


TRICKLED_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"x\"\r\n"
                 b"Content-Length: 100\r\n\r\n")
TIMEOUT = 2.0  # enc.api_timeout in the trickle tests
MARGIN = 2.0  # a busy machine; far below what a trickled answer takes (20 s and more)


@pytest.mark.parametrize("trickled", ["head", "body"])
def test_an_answer_that_trickles_is_given_up_at_enc_api_timeout(tmp_path: Path,
                                                                trickled: str) -> None:
    """A byte every 0.2 s keeps every read within a per-read timeout; the deadline is for
    the whole request."""
    with Trickler(TRICKLED_HEAD, b" " * 100, trickled, interval=0.2) as api:
        client = client_for(tmp_path, api.url, TIMEOUT)
        started = time.monotonic()
        with pytest.raises(ApiUnavailable) as unavailable:
            client.target(NODE, None)
        elapsed = time.monotonic() - started
    assert f"no complete answer within {TIMEOUT:g} s" in str(unavailable.value)
    assert TIMEOUT <= elapsed < TIMEOUT + MARGIN


def test_the_spool_delivers_in_order_and_keeps_what_the_api_cannot_take(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    keys = [spool.add("report", NODE, {"n": n}) for n in range(3)]
    sent: list[int] = []
    refusals = [ApiUnavailable("connection refused")]

    def flaky(item: Any) -> None:
        if item.body["n"] == 1 and refusals:
            raise refusals.pop()
        sent.append(item.body["n"])

    first = spool.deliver(flaky)
    assert (first.delivered, first.pending, sent) == (1, 2, [0])
    assert [item.key for item in spool.pending()] == keys[1:]
    second = spool.deliver(flaky)
    assert (second.delivered, second.pending, sent) == (2, 0, [0, 1, 2])


def test_spooling_never_waits_for_a_delivery_under_way(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add("report", NODE, {"n": 0})
    during: list[Any] = []

    def slow_api(item: Any) -> None:
        # `opslab agent disable` while the agent is delivering: it spools at
        # once, and leaves the delivery to the one under way.
        during.append(spool.add("state", NODE, {"n": 1}))
        during.append(spool.deliver(lambda other: None))

    outer = spool.deliver(slow_api)

    assert outer.delivered == 1
    assert "another delivery is under way" in (during[1].error or "")
    assert [item.body for item in spool.pending()] == [{"n": 1}]


def test_a_report_the_api_refuses_is_set_aside_not_lost(fleet: Fleet, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    client = ApiClient(load(str(fleet.config_path)).enc)
    spool.add("report", NODE, {"status": "no such status", "exit_code": 0})
    spool.add("report", NODE, {"status": "unchanged", "exit_code": 0})

    delivery = spool.deliver(lambda item: client.post_report(item.certname, item.body, item.key))

    assert (delivery.delivered, delivery.rejected, delivery.pending) == (1, 1, 0)
    [kept] = [path for path in spool.rejected.iterdir() if not path.name.endswith(".reason.json")]
    assert json.loads(kept.read_text())["body"]["status"] == "no such status"
    reason = json.loads(next(spool.rejected.glob("*.reason.json")).read_text())["reason"]
    assert reason.startswith("HTTP 422: ")
    assert "no such status" in reason


def test_reports_refused_one_after_another_are_all_kept(fleet: Fleet, tmp_path: Path) -> None:
    """The spool is empty between the two: the second must not take the first one's name."""
    spool = Spool(tmp_path / "spool")
    client = ApiClient(load(str(fleet.config_path)).enc)
    statuses = ["not a status", "not a status either"]

    for status in statuses:
        spool.add("report", NODE, {"status": status, "exit_code": 0})
        delivery = spool.deliver(lambda item: client.post_report(item.certname, item.body,
                                                                 item.key))
        assert (delivery.delivered, delivery.rejected, delivery.pending) == (0, 1, 0)
        assert spool.pending() == []

    kept = sorted(path for path in spool.rejected.iterdir()
                  if not path.name.endswith(".reason.json"))
    assert [json.loads(path.read_text())["body"]["status"] for path in kept] == statuses
    for path in kept:
        note = json.loads(path.with_name(f"{path.stem}.reason.json").read_text())
        assert note["reason"].startswith("HTTP 422: ")
    assert len(list(spool.rejected.iterdir())) == 4


def test_a_rejected_item_never_replaces_one_set_aside_before(fleet: Fleet,
                                                             tmp_path: Path) -> None:
    """As an older agent left them: it restarted its numbering whenever its spool was empty."""
    spool = Spool(tmp_path / "spool")
    spool.rejected.mkdir(parents=True)
    (spool.rejected / "000000000001.json").write_text('{"set aside": "first"}')
    (spool.rejected / "000000000001.reason.json").write_text('{"reason": "first"}')
    envelope = {"key": "pending-from-an-older-agent", "kind": "report", "certname": NODE,
                "body": {"status": "not a status", "exit_code": 0}}
    (spool.directory / "000000000001.json").write_text(json.dumps(envelope))
    client = ApiClient(load(str(fleet.config_path)).enc)

    delivery = spool.deliver(lambda item: client.post_report(item.certname, item.body,
                                                             item.key))

    assert delivery.rejected == 1
    assert (spool.rejected / "000000000001.json").read_text() == '{"set aside": "first"}'
    assert (spool.rejected / "000000000001.reason.json").read_text() == '{"reason": "first"}'
    assert json.loads((spool.rejected / "000000000001-2.json").read_text()) == envelope
    reason = json.loads((spool.rejected / "000000000001-2.reason.json").read_text())["reason"]
    assert reason.startswith("HTTP 422: ")
    # And the next item is numbered after every name in use.
    spool.add("state", NODE, {"disabled": False})
    assert [item.path.name for item in spool.pending()] == ["000000000002.json"]


def a_report(failures: int, text: str, messages: int) -> dict[str, Any]:
    """A report as the branch runner makes it: ``failures`` failed resources, each with
    ``messages`` messages."""
    return {
        "certname": NODE, "started_at": "2030-01-01T00:00:00+00:00", "environment": "production",
        "branch": "production", "commit": "0123abcd" * 5, "status": "failed", "exit_code": 6,
        "meaning": "changes and failures", "success": False, "error": "puppet apply: " + text,
        "duration": 12.5, "output_tail": "Error: " + text * 3, "sync_error": text,
        "resources": {"total": failures, "changed": 0, "failed": failures, "out_of_sync": 0,
                      "skipped": 0},
        "failed_resources": [{"resource": f"File[/srv/{text}/{n}]", "file": f"/etc/{text}.pp",
                              "line": n, "messages": [text] * messages} for n in range(failures)],
        "changed_resources": [f"Exec[{text}{n}]" for n in range(failures)],
        "errors": [text] * failures, "warnings": [text] * failures, "puppet_status": "failed",
        "puppet_version": "7.23.0", "configuration_version": 1700000000,
        "agent_version": "0.1.0", "trigger": "change",
    }


@pytest.mark.parametrize("text", ["x" * 5000, "\u00e9" * 5000, "\U0001f525" * 5000,
                                  "\x00\n\"" * 3000])
def test_a_report_is_sent_within_the_apis_bounds_whatever_puppet_said(text: str) -> None:
    report = a_report(1000, text, 20)

    sent = bounded(report)

    assert len(json.dumps(sent).encode()) < MAX_BODY
    assert sent["truncated"] is True
    assert len(sent["failed_resources"]) <= 50
    assert all(len(item["resource"]) <= 500 and len(item["file"]) <= 1000
               and len(item["messages"]) <= 10
               and all(len(message) <= 2000 for message in item["messages"])
               for item in sent["failed_resources"])
    assert len(sent["changed_resources"]) <= 50
    assert all(len(item) <= 500 for item in sent["changed_resources"])
    for name in ("errors", "warnings"):
        assert len(sent[name]) <= 50
        assert all(len(message) <= 2000 for message in sent[name])
    assert len(sent["error"]) <= 2000
    assert len(sent["sync_error"]) <= 2000
    assert sent["output_tail"] == clean(report["output_tail"])[-len(sent["output_tail"]):]
    assert len(sent["output_tail"]) <= 4000
    # What says which run it was is never cut.
    for name in ("certname", "commit", "status", "exit_code", "resources", "trigger"):
        assert sent[name] == report[name]
    assert report["failed_resources"][0]["messages"] == [text] * 20  # the original is kept


def test_no_text_sent_holds_a_nul_or_a_lone_surrogate() -> None:
    """The API refuses any string holding one (422), and would set the report aside."""
    report = a_report(3, "step 1\x00done \ud800 \U0001f525", 2)
    report["resources"] = {"fail\x00ed": 3, "total": 3}
    report["failed_resources"][0]["extra\udcff"] = ["\x00", {"k\x00": "v\udfff"}]

    sent = bounded(report)

    # As the API reads it: UTF-8 (no lone surrogate could be encoded), and no NUL.
    assert b"\x00" not in json.dumps(sent, ensure_ascii=False).encode("utf-8")
    assert "\\u0000" not in json.dumps(sent)
    assert sent["error"] == "puppet apply: step 1\ufffddone \ufffd \U0001f525"
    assert sent["resources"] == {"fail\ufffded": 3, "total": 3}
    assert sent["failed_resources"][0]["extra\ufffd"] == ["\ufffd", {"k\ufffd": "v\ufffd"}]
    assert "truncated" not in sent  # replaced, not cut
    assert "\x00" in report["error"]  # the full report is kept as it was


SMALL_API_HOST = "small-api.web.example.org"


@pytest.fixture
def api_of_max_body(slapd: ThrowawaySlapd, people: None,
                    tmp_path: Path) -> Iterator[Callable[[int], ServedApi]]:
    """An API of the test's own, (re)started on its one database with the api.max_body
    asked for. At teardown its host goes (the session's directory is shared), then it
    stops."""
    work = tmp_path / "api"
    work.mkdir()
    served: list[ServedApi] = []

    def serve(max_body: int) -> ServedApi:
        if served:
            served.pop().stop()
        api = ServedApi(work, slapd, BASE, {"api": {"max_body": max_body}})
        api.start()
        served.append(api)
        return api

    yield serve
    for api in served:
        try:
            api.request("DELETE", f"/v1/hosts/{SMALL_API_HOST}", None, basic("carol"))
        finally:
            api.stop()


def test_a_report_the_apis_max_body_refuses_is_cut_until_it_is_taken(
        api_of_max_body: Callable[[int], ServedApi], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A site's api.max_body below the agent's bound (48 KiB): on each 413 the report is
    sent again at half the size, never set aside; one no cut makes small enough stays
    spooled, waiting for api.max_body to be raised."""
    api = api_of_max_body(16384)
    status, answer = api.request("POST", "/v1/projects/web/hosts",
                                 {"name": SMALL_API_HOST}, basic("carol"))
    assert status == 201, answer
    token = tmp_path / "host-token"
    token.write_text(json.loads(answer)["token"])
    caplog.set_level(logging.INFO, logger="opslab.agent")

    def agent_of(api: ServedApi) -> Agent:
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump({
            "enc": {"api_url": api.url, "api_token_file": str(token)},
            "apply": {"certname": SMALL_API_HOST, "state_dir": str(tmp_path / "state")},
            "agent": {"sudoers_file": None}}))
        return Agent(load(str(config)), "0.1.0-test")

    agent = agent_of(api)
    report = {**a_report(1000, "x" * 5000, 20), "certname": SMALL_API_HOST}
    sent = bounded(report)
    assert 16384 < len(json.dumps(sent)) < MAX_BODY  # what the API refuses (413)
    agent.spool.add("report", SMALL_API_HOST, sent, "cut-until-taken")

    delivery = agent.deliver()

    assert (delivery.delivered, delivery.rejected, delivery.pending) == (1, 0, 0), delivery
    [stored] = json.loads(api.request("GET", f"/v1/hosts/{SMALL_API_HOST}/reports", None,
                                      basic("carol"))[1])
    assert (stored["status"], stored["failed"], stored["truncated"]) == ("failed", 1000, True)
    assert 0 < len(stored["failures"]) < 50
    assert any("too large (HTTP 413); sending it cut to" in message
               for message in caplog.messages), caplog.messages

    # However far it is cut, a report is never this small. (The same API and
    # database, restarted with a lower api.max_body.)
    agent = agent_of(api_of_max_body(256))
    agent.spool.add("report", SMALL_API_HOST, bounded(report), "too-large-whatever-is-cut")
    delivery = agent.deliver()
    assert (delivery.delivered, delivery.rejected, delivery.pending) == (0, 0, 1), delivery
    assert "even cut to" in str(delivery.error)
    assert "raise its api.max_body" in str(delivery.error)


def test_a_report_within_bounds_is_sent_as_it_is() -> None:
    report = a_report(3, "a short message", 2)
    assert bounded(report) == report
    assert "truncated" not in bounded(report)


def test_only_the_newest_full_reports_are_kept(tmp_path: Path) -> None:
    for n in range(KEEP + 3):
        keep(tmp_path, f"key{n:02d}", {"n": n})
    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == [f"key{n:02d}.json" for n in range(3, KEEP + 3)]


def test_an_invalid_sudoers_file_is_never_installed(tmp_path: Path) -> None:
    target = tmp_path / "opslab-project"
    install(target, render(PROJECT, ["carol"]))
    good = target.read_text()

    with pytest.raises(SudoersError, match="visudo refused"):
        install(target, "carol ALL=(ALL:ALL NOPASSWD: ALL\n")

    assert target.read_text() == good
    assert sorted(path.name for path in tmp_path.iterdir()) == ["opslab-project"]


@pytest.mark.parametrize("user", ["root ALL=(ALL) ALL #", "carol,dave", "%admin", "", "Carol"])
def test_sudo_is_never_granted_to_a_name_that_is_not_a_login(user: str) -> None:
    with pytest.raises(SudoersError, match="refusing to grant sudo"):
        render(PROJECT, ["carol", user])


HOSTILE_PROJECTS = [f"{PROJECT}\nALL ALL=(ALL:ALL) NOPASSWD: ALL #",
                    f"{PROJECT}\rALL ALL=(ALL:ALL) NOPASSWD: ALL #", "", "Fleet", "fleet project",
                    "-fleet", "f" * 64, "fleet\x00"]


@pytest.mark.parametrize("project", HOSTILE_PROJECTS)
def test_a_project_name_is_checked_before_it_reaches_sudoers(tmp_path: Path,
                                                             project: str) -> None:
    """A line break in the comment's project name would be a rule visudo accepts."""
    target = tmp_path / "opslab-project"
    install(target, render(PROJECT, ["carol"]))
    good = target.read_text()

    with pytest.raises(SudoersError, match="is not a DNS label"):
        install(target, render(project, ["carol"]))

    assert target.read_text() == good
    assert sorted(path.name for path in tmp_path.iterdir()) == ["opslab-project"]


def test_a_line_break_in_a_project_name_grants_nothing_through_the_real_sudo(
        system_sudoers: Path) -> None:
    install(system_sudoers, render(PROJECT, ["carol"]))

    with pytest.raises(SudoersError, match="is not a DNS label"):
        install(system_sudoers, render(HOSTILE_PROJECTS[0], ["carol"]))

    assert "is not allowed to run sudo" in sudo_rights("nobody")


def _later(agent: Agent, seconds: float) -> float:
    """A moment ``seconds`` after the agent's last run."""
    state = json.loads((agent.directory / "state.json").read_text())
    return float(state["applied_at"]) + seconds
