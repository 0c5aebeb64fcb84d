"""``opslab branch apply``: real git, the real directory, real ``puppet apply``.

Every run is a real Puppet run (seconds each), so the scenarios share one
control repository, one configuration and one environments directory, and
each scenario makes and undoes its own change to them.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ldap
import pytest
import yaml

from opslab.branchrunner.apply import Apply
from opslab.branchrunner.deployment import Deployment
from opslab.config import load
from opslab.lock import FileLock
from opslab.names import applied_branch
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, CONTROL_REPO, HOSTS, host_ldif
from tests.remote import Remote

NODE = "agent1.tools.example.org"
HOST_DN = f"dc={NODE},{HOSTS}"


class Agent:
    """One host's view: its configuration, its scratch root, and how to run apply."""

    def __init__(self, work: Path, slapd: ThrowawaySlapd, remote: Remote) -> None:
        self.work = work
        self.slapd = slapd
        self.remote = remote
        self.root = work / "root"
        self.root.mkdir()
        self.config = self.write_config()

    def write_config(self, name: str = "opslab.yaml", environments: str = "environments",
                     **apply: object) -> Path:
        """A configuration; ``environments`` names its environments directory (and mirror)."""
        path = self.work / name
        path.write_text(yaml.safe_dump({
            "ldap": {"uri": self.slapd.ldapi_uri, "base": BASE},
            "cache": {"dir": str(self.work / "enc-cache")},
            "branches": {"remote": self.remote.url,
                         "environments": str(self.work / environments),
                         "cache": str(self.work / f"git-cache-{environments}")},
            "apply": {"certname": NODE, "state_dir": str(self.work / "state"),
                      "puppet_state_dir": str(self.work / "puppet"), **apply},
        }))
        return path

    def opslab(
        self, *arguments: str, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opslab.cli", f"--config={config or self.config}", "branch",
             *arguments],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "FACTER_opslab_root": str(self.root)},
        )

    def apply(self, config: Path | None = None, *arguments: str) -> tuple[int, dict[str, Any]]:
        result = self.opslab("apply", "--json", *arguments, config=config)
        return result.returncode, json.loads(result.stdout)

    def set_host(self, attribute: str, values: list[str]) -> None:
        connection = self.slapd.connect()
        connection.modify_s(HOST_DN, [(ldap.MOD_REPLACE, attribute,
                                       [value.encode() for value in values] or None)])
        connection.unbind_s()


@pytest.fixture(scope="module")
def agent(slapd: ThrowawaySlapd, tmp_path_factory: pytest.TempPathFactory) -> Agent:
    work = tmp_path_factory.mktemp("agent")
    remote = Remote(work / "repository")
    shutil.copytree(CONTROL_REPO, remote.work, dirs_exist_ok=True)
    remote.commit("production", {}, "the example control repository")
    remote.commit("feature/Tools-MOTD", {}, "the tools project's branch", base="production")
    slapd.add_ldif(host_ldif(NODE, "puppetClass: role::web",
                             "puppetVar: site_name=agent.example.org"))
    return Agent(work, slapd, remote)


def test_apply_follows_the_projects_branch(agent: Agent) -> None:
    # What an earlier test of this module applied is taken away, so this run has
    # changes to make whichever test ran first.
    for path in agent.root.iterdir():
        path.unlink()
    status, result = agent.apply()

    assert status == 2, json.dumps(result, indent=1)
    assert (result["status"], result["success"], result["meaning"]) == (
        "changed", True, "changes applied")
    assert result["environment"] == "feature_tools_motd"
    assert result["branch"] == "feature/Tools-MOTD"
    assert result["commit"] == agent.remote.head("feature/Tools-MOTD")
    assert result["resources"]["changed"] >= 3
    assert result["resources"]["failed"] == 0
    assert result["failed_resources"] == []
    # Each changed resource by name, as many as the count says.
    assert len(result["changed_resources"]) == result["resources"]["changed"]
    assert {f"File[{agent.root}/base.conf]", f"File[{agent.root}/motd]"} <= set(
        result["changed_resources"]), result["changed_resources"]
    assert result["puppet_version"].startswith("7.")
    assert (agent.root / "base.conf").read_text().startswith("environment=feature_tools_motd\n")
    assert (agent.root / "motd").read_text() == "Tools project, feature branch\n"
    saved = json.loads((agent.work / "state/last_apply.json").read_text())
    assert saved["commit"] == result["commit"]


def test_new_commit_on_the_branch_is_applied_next_run(agent: Agent) -> None:
    commit = agent.remote.commit("feature/Tools-MOTD", {
        "modules/role/manifests/web.pp": (CONTROL_REPO / "modules/role/manifests/web.pp")
        .read_text().replace("in ${::cluster}", "in ${::cluster}, version 2"),
    })

    status, result = agent.apply()

    assert status == 2, result
    assert result["commit"] == commit
    assert (agent.root / "site").read_text() == "agent.example.org in unassigned, version 2\n"
    assert result["changed_resources"] == [f"File[{agent.root}/site]"]
    again_status, again = agent.apply()
    assert (again_status, again["changed_resources"]) == (0, []), again


def test_changing_the_branch_in_the_directory_moves_the_host(agent: Agent) -> None:
    """... also with a Production pushed beside production: the branch the classification
    names (the agent's target's, here --branch) keeps deploying, and the run says nothing
    is wrong. Named by nobody on a host where the environment is not deployed yet, no
    branch is chosen by its name alone."""
    agent.remote.commit("Production", {"usurper": "1\n"}, base="production")
    commit = agent.remote.commit("production", {"news": "1\n"})
    agent.set_host("environment", ["production"])
    try:
        unnamed_status, unnamed = agent.apply()
        status, result = agent.apply(None, "--branch", "production")
    finally:
        agent.set_host("environment", [])
        agent.remote.delete("Production")
    assert (unnamed_status, unnamed["status"], unnamed["commit"]) == (1, "failed", None), unnamed
    assert "several branches map to environment 'production'" in unnamed["sync_error"]
    assert status == 2, result
    assert (result["environment"], result["branch"], result["commit"]) == (
        "production", "production", commit)
    assert "sync_error" not in result, result
    assert "warnings" not in result, result
    assert (agent.root / "base.conf").read_text().startswith("environment=production\n")


def test_failed_resources_are_reported_with_their_messages(agent: Agent) -> None:
    agent.remote.commit("broken", {
        "modules/broken/manifests/init.pp":
            "class broken {\n  exec { 'fails': command => '/bin/false' }\n}\n",
    }, base="production")
    agent.set_host("environment", ["broken"])
    agent.set_host("puppetClass", ["role::web", "broken"])
    try:
        status, result = agent.apply()
    finally:
        agent.set_host("environment", [])
        agent.set_host("puppetClass", ["role::web"])
    assert status in (4, 6), result
    assert (result["status"], result["success"]) == ("failed", False)
    assert result["resources"]["failed"] == 1
    [failed] = result["failed_resources"]
    assert failed["resource"] == "Exec[fails]"
    assert "Exec[fails]" not in result["changed_resources"]
    assert "'/bin/false' returned 1 instead of one of [0]" in failed["messages"][0]


def test_a_run_that_fails_to_compile_is_exit_1_with_its_errors(agent: Agent) -> None:
    agent.set_host("puppetClass", ["role::web", "no_such_class"])
    try:
        status, result = agent.apply()
    finally:
        agent.set_host("puppetClass", ["role::web"])
    assert status == 1, result
    assert (result["status"], result["meaning"]) == ("failed", "run failed")
    assert any("no_such_class" in error for error in result["errors"]), json.dumps(result, indent=1)


def test_disabled_host_does_not_run_and_says_why(agent: Agent) -> None:
    assert agent.opslab("disable", "kernel upgrade in progress").returncode == 0
    try:
        status, result = agent.apply()
    finally:
        assert agent.opslab("enable").returncode == 0
    assert (status, result["status"], result["success"]) == (1, "disabled", False)
    assert "kernel upgrade in progress" in result["error"]
    assert result["commit"] is None  # nothing was even looked up


def test_a_second_apply_does_not_run_alongside(agent: Agent) -> None:
    (agent.work / "state").mkdir(exist_ok=True)
    with FileLock(str(agent.work / "state/apply.lock"), "a long puppet run"):
        status, result = agent.apply()
    assert (status, result["status"]) == (1, "locked")
    assert "a long puppet run" in result["error"]


def test_a_run_past_its_timeout_is_stopped(agent: Agent) -> None:
    config = agent.write_config("short.yaml", timeout=0.5)
    status, result = agent.apply(config)
    assert (status, result["status"], result["success"]) == (1, "timeout", False)
    assert "apply.timeout (0.5 s)" in result["error"]


# Another project pushes a branch named exactly like the environment tools' branch maps
# to. On a shared server deploying every branch, the exact name takes an environment
# nothing is deployed in yet (opslab.names.environment_holders); on an instance, whose
# environments are its own, it must never take the instance's.
SQUATTER = "feature_tools_motd"
SQUATTED = "squatted"  # what the squatter's code leaves below opslab_root, run as root


def test_a_branch_named_like_the_environment_never_takes_it_on_an_instance(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = (CONTROL_REPO / "manifests/site.pp").read_text()
    agent.remote.commit(SQUATTER, {"manifests/site.pp": site + (
        "file { \"${facts['opslab_root']}/" + SQUATTED + "\": ensure => file }\n")},
        "another project's branch", base="production")
    tools = agent.remote.head("feature/Tools-MOTD")
    fresh = agent.write_config("fresh.yaml", environments="fresh-environments")
    taken = agent.write_config("taken.yaml", environments="taken-environments")
    try:
        # By hand on an instance that has deployed nothing: no branch is chosen by its name.
        status, result = agent.apply(fresh)
        assert (status, result["status"], result["commit"]) == (1, "failed", None), result
        assert ("several branches map to environment 'feature_tools_motd' "
                "('feature/Tools-MOTD', 'feature_tools_motd') and none is deployed there: "
                "name the one to apply with --branch BRANCH") in result["sync_error"]
        assert "is not deployed" in result["error"]
        assert not (agent.root / SQUATTED).exists()

        # Named, as the agent names the branch of its target: it takes the environment...
        status, result = agent.apply(fresh, "--branch", "feature/Tools-MOTD")
        assert status in (0, 2), result
        assert (result["environment"], result["branch"], result["commit"]) == (
            "feature_tools_motd", "feature/Tools-MOTD", tools)
        assert "sync_error" not in result, result
        # ...and, deployed there, is the one a run without --branch keeps.
        status, result = agent.apply(fresh)
        assert status in (0, 2), result
        assert (result["branch"], result["commit"]) == ("feature/Tools-MOTD", tools)
        assert "sync_error" not in result, result
        assert not (agent.root / SQUATTED).exists()

        # The agent (Apply with its target's branch) where the squatter was deployed
        # already, by a sync or by an apply before this rule: the branch takes it back.
        squatted = load(str(taken)).branches
        [outcome] = Deployment(squatted).sync([SQUATTER])
        assert (outcome.result, outcome.environment) == ("deployed", "feature_tools_motd")
        monkeypatch.setenv("FACTER_opslab_root", str(agent.root))
        result = Apply(load(str(taken)), NODE, branch="feature/Tools-MOTD").run()
        assert result["exit_code"] in (0, 2), result
        assert (result["branch"], result["commit"]) == ("feature/Tools-MOTD", tools)
        assert Deployment(squatted).environments.deployed_from(
            "feature_tools_motd") == "feature/Tools-MOTD"
        assert not (agent.root / SQUATTED).exists()
        assert (agent.root / "motd").read_text() == "Tools project, feature branch\n"
    finally:
        agent.remote.delete(SQUATTER)
        (agent.root / SQUATTED).unlink(missing_ok=True)


def test_a_branch_given_by_hand_must_be_a_branch_name(agent: Agent) -> None:
    result = agent.opslab("apply", "--branch", "--upload-pack=touch pwned")
    assert result.returncode == 2
    assert "branch name '--upload-pack=touch pwned' is refused" in result.stderr


@pytest.mark.parametrize(("branches", "deployed", "chosen"), [
    (["production", "feature/Tools-MOTD"], None, "feature/Tools-MOTD"),  # the only one
    (["feature/Tools-MOTD", SQUATTER], "feature/Tools-MOTD", "feature/Tools-MOTD"),
    (["feature/Tools-MOTD", SQUATTER], SQUATTER, SQUATTER),  # deployed there: the instance's
    (["feature/Tools-MOTD", SQUATTER], None, None),  # never by its exact name
    (["feature/Tools-MOTD", SQUATTER], "feature/tools-motd", None),  # deployed, but gone
    (["production"], None, None),
])
def test_a_hand_run_apply_never_picks_a_branch_by_its_name(
    branches: list[str], deployed: str | None, chosen: str | None
) -> None:
    branch, problem = applied_branch("feature_tools_motd", branches, deployed)
    assert branch == chosen
    assert bool(problem) == (chosen is None)
