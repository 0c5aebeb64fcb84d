"""The base install, as bootstrap.sh makes it on an instance.

The wheel is built from this checkout and installed without extras into a
fresh virtualenv, its dependencies from the index pip uses here. The API's,
CI's and the cloud's libraries must not be there, and what an instance runs
must run from it: ``opslab-enc`` against the real slapd, ``opslab-ssh-keys``,
and a real ``opslab agent run --once`` (its Puppet run classified by the
base install's own ``opslab-enc``) against the API served from the test
environment. Every command runs with the test environment's ``bin`` off its
PATH, so nothing of the test environment stands in for the base install.

Building and installing take most of this module's time, so the one
virtualenv is shared by its tests.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

import opslab
from opslab import process
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, CONTROL_REPO, REPO, EncRunner, basic, write_config
from tests.remote import Remote
from tests.served_api import ServedApi

pytestmark = pytest.mark.install

# What the base install holds besides pip: opslab, python-ldap with the pyasn1
# modules it requires, and PyYAML (names as importlib.metadata normalises them).
BASE_DISTRIBUTIONS = {"opslab", "python-ldap", "pyasn1", "pyasn1-modules", "pyyaml"}
# The extras' libraries (with Flask's own Werkzeug), none of which an instance needs.
EXTRAS_LIBRARIES = {"flask", "werkzeug", "sqlalchemy", "alembic", "gunicorn", "jsonschema",
                    "openstacksdk", "python-jenkins", "pygerrit2", "gitpython", "paramiko"}
# A python-ldap without a wheel for this Python is compiled: minutes on a cold cache.
BUILD_TIMEOUT = 600.0
INSTALL_TIMEOUT = 900.0
COMMAND_TIMEOUT = 60.0

HOST = "baseinstall.web.example.org"  # created in the example project web, deleted after
ALICE_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGUta2V5LWZvci1hbGljZS1vbmx5 "
             "alice@example")  # examples/directory.ldif


class BaseInstall(NamedTuple):
    """The fresh virtualenv holding the base install, and the wheel it came from."""

    venv: Path
    wheel: Path

    def run(self, command: str, *arguments: str,
            env: dict[str, str] | None = None,
            timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``command`` of the virtualenv's bin, bounded, its process group stopped at
        ``timeout``, with the test environment's own bin off the PATH."""
        return process.run([str(self.venv / "bin" / command), *arguments], timeout,
                           env={**outside_the_test_environment(), **(env or {})}, text=True)


def outside_the_test_environment() -> dict[str, str]:
    """This process's environment less the test virtualenv: off the PATH, not VIRTUAL_ENV."""
    test_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep)
                           if entry and os.path.realpath(entry) != os.path.realpath(test_bin))
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return {**environment, "PATH": path}


def source_tree(destination: Path) -> Path:
    """What the wheel is built from: pyproject.toml, the readme and the component folders.

    A copy, so the build writes no build/ or egg-info into the checkout, and a
    stale build/lib there can never slip a removed module into the wheel.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    destination.mkdir()
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy2(REPO / name, destination / name)
    for folder in sorted(folders):
        shutil.copytree(REPO / folder, destination / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def completed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``result``, which must have exited 0."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> BaseInstall:
    work = tmp_path_factory.mktemp("install")
    wheels = work / "wheels"
    completed(process.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(wheels), str(source_tree(work / "source"))], BUILD_TIMEOUT,
                          text=True))
    [wheel] = wheels.glob("opslab-*.whl")
    venv = work / "venv"
    completed(process.run([sys.executable, "-m", "venv", str(venv)], COMMAND_TIMEOUT,
                          env=outside_the_test_environment(), text=True))
    install = BaseInstall(venv, wheel)
    completed(install.run("python", "-m", "pip", "install", "-q", str(wheel),
                          timeout=INSTALL_TIMEOUT))
    return install


def test_the_base_install_holds_only_what_an_instance_needs(base_install: BaseInstall) -> None:
    # -I: the metadata of the virtualenv's own site-packages, whatever the directory.
    listed = completed(base_install.run("python", "-I", "-c", (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
        "for d in m.distributions()})))")))
    installed = set(json.loads(listed.stdout)) - {"pip", "setuptools", "wheel"}

    assert not installed & EXTRAS_LIBRARIES
    assert installed == BASE_DISTRIBUTIONS
    assert base_install.wheel.name.startswith(f"opslab-{opslab.__version__}-")


def test_every_command_says_its_version(base_install: BaseInstall) -> None:
    for command in ("opslab", "opslab-enc", "opslab-ssh-keys"):
        result = completed(base_install.run(command, "--version"))
        assert (result.stdout, result.stderr) == (f"opslab {opslab.__version__}\n", ""), command


# The packages whose every module an instance may run.
INSTANCE_PACKAGES = ("opslab", "opslab.enc", "opslab.branchrunner", "opslab.agent")
IMPORT_ALL = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for module in pkgutil.iter_modules(package.__path__, name + "."):
        if not module.ispkg and not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
            print(module.name)
"""


def test_every_module_an_instance_runs_imports_from_the_base_install(
        base_install: BaseInstall) -> None:
    """Nothing of theirs imports the API's libraries, not even in a module no test runs."""
    imported = completed(base_install.run("python", "-I", "-c", IMPORT_ALL,
                                          *INSTANCE_PACKAGES)).stdout.split()

    assert {"opslab.enc.cli", "opslab.branchrunner.cli", "opslab.agent.cli",
            "opslab.agent.ssh_keys", "opslab.cli"} <= set(imported)
    for component in ("branch", "agent"):
        assert completed(base_install.run("opslab", component, "--help")).stdout.startswith(
            f"usage: opslab {component} ")


def test_opslab_enc_classifies_from_the_base_install(
        base_install: BaseInstall, config_file: Path, run_enc: EncRunner) -> None:
    result = completed(base_install.run("opslab-enc", f"--config={config_file}",
                                        "web1.web.example.org"))

    classification = yaml.safe_load(result.stdout)
    assert set(classification["classes"]) == {"base", "motd", "role::web"}
    assert classification["parameters"]["cluster"] == "codfw"
    # Exactly what the test environment's opslab-enc answers.
    assert result.stdout == completed(run_enc(f"--config={config_file}",
                                              "web1.web.example.org")).stdout


def test_opslab_ssh_keys_answers_from_the_base_install(
        base_install: BaseInstall, slapd: ThrowawaySlapd, tmp_path: Path) -> None:
    config = write_config(tmp_path / "opslab.yaml", slapd,
                          apply={"certname": "web1.web.example.org"})
    try:
        local = pwd.getpwnam("alice").pw_uid
    except KeyError:
        local = None
    if local not in (None, 5001):
        pytest.skip("this machine has a local account alice that is not the example's alice")

    granted = base_install.run("opslab-ssh-keys", f"--config={config}", "alice")
    refused = base_install.run("opslab-ssh-keys", f"--config={config}", "nosuchperson")

    assert (granted.returncode, granted.stdout) == (0, f"{ALICE_KEY}\n"), granted.stderr
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr


def test_opslab_api_without_its_extra_says_to_install_it(base_install: BaseInstall,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text(yaml.safe_dump({"api": {"database": f"sqlite:///{tmp_path / 'db'}"}}))

    result = base_install.run("opslab", f"--config={config}", "api", "migrate")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "install opslab[api]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "db").exists()


@pytest.fixture
def served_api(slapd: ThrowawaySlapd, people: None, tmp_path: Path) -> Iterator[
        tuple[ServedApi, Remote]]:
    """The API (the test environment's, under gunicorn) and its control repository."""
    remote = Remote(tmp_path / "repository")
    shutil.copytree(CONTROL_REPO, remote.work, dirs_exist_ok=True)
    remote.commit("production", {}, "the example control repository")
    (tmp_path / "api").mkdir()
    api = ServedApi(tmp_path / "api", slapd, BASE, {"branches": {"remote": remote.url},
                                                    "api": {"heads_ttl": 0}})
    api.start()
    try:
        yield api, remote
    finally:
        # The session's directory is shared: the host goes, whatever happened.
        api.request("DELETE", f"/v1/hosts/{HOST}", None, basic("carol"))
        api.stop()


def test_the_agent_runs_from_the_base_install(
        base_install: BaseInstall, served_api: tuple[ServedApi, Remote], tmp_path: Path) -> None:
    api, remote = served_api
    status, answer = api.request("POST", "/v1/projects/web/hosts",
                                 {"name": HOST, "classes": ["motd"]}, basic("carol"))
    assert status == 201, answer
    token = tmp_path / "host-token"
    token.write_text(json.loads(answer)["token"])
    token.chmod(0o600)
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "sudoers.d").mkdir()
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "enc": {"api_url": api.url, "api_token_file": str(token), "api_timeout": 5},
        "cache": {"dir": str(tmp_path / "enc-cache")},
        "branches": {"remote": remote.url, "environments": str(tmp_path / "environments"),
                     "cache": str(tmp_path / "git-cache")},
        "apply": {"certname": HOST, "state_dir": str(tmp_path / "state"),
                  "puppet_state_dir": str(tmp_path / "puppet")},
        "agent": {"sudoers_file": str(tmp_path / "sudoers.d" / "opslab-project")},
    }))
    # Puppet writes below this fact's directory (examples/control-repo).
    facts = {"FACTER_opslab_root": str(root)}

    first = base_install.run("opslab", f"--config={config}", "agent", "run", "--once",
                             env=facts, timeout=600)
    again = base_install.run("opslab", f"--config={config}", "agent", "run", "--once",
                             env=facts)
    shown = completed(base_install.run("opslab", f"--config={config}", "agent", "status",
                                       "--json"))

    assert first.returncode == 0, first.stderr
    assert any(line.startswith("info opslab.agent.agent: applying ") and "trigger=first" in line
               for line in first.stderr.splitlines()), first.stderr
    # The project web's classes and message, and the default entry's base class.
    assert (root / "motd").read_text() == "Welcome to the web project\n"
    assert (root / "base.conf").exists()
    reports: list[dict[str, Any]] = json.loads(api.request(
        "GET", f"/v1/hosts/{HOST}/reports", None, basic("carol"))[1])
    [report] = reports
    assert (report["status"], report["trigger"], report["agent_version"]) == (
        "changed", "first", opslab.__version__)
    assert report["commit"] == remote.head("production")
    assert "carol ALL=(ALL:ALL) NOPASSWD: ALL" in (
        tmp_path / "sudoers.d" / "opslab-project").read_text()
    assert (again.returncode, again.stderr.endswith("check: unchanged\n")) == (0, True), (
        again.stderr)
    status = json.loads(shown.stdout)
    assert (status["certname"], status["spooled"], status["disabled"]) == (HOST, 0, None)
    assert status["target"]["commit"] == remote.head("production")
