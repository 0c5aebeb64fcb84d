"""The opslab demo: a project's instance converging on its own to what its members change.

Run by ``make demo``. In a temporary directory it starts a throwaway slapd
loaded with the example directory and the coordination API (gunicorn, SQLite,
otherwise the embedded defaults), and makes a git repository of the example
control repository. Then, as people and an instance would:

1. olga (operations) creates the project ``demo`` and adds vera to it;
2. vera creates the host ``app1.demo.example.org`` with the classes ``motd``
   and ``greeter`` (a small web service on a loopback port), and gets its token;
3. the host's agent (``opslab agent run --once``) applies its branch: a real
   ``puppet apply`` that writes below a scratch root and starts the service,
   then runs the smoke tests of its classes (``modules/*/checks.yaml``);
4. vera changes a class parameter through the API; the agent converges;
5. a new commit lands on the project's branch; the agent converges;
6. a commit that Puppet applies cleanly but that breaks the greeter's page:
   its smoke check fails, and the run report and the host view say so;
   the commit is reverted and the instance converges;
7. the run reports and the audit log, as the API has them.

Everything it started is stopped and everything it wrote is removed at the
end (``--keep`` keeps the files); nothing outside the temporary directory
changes.
"""

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from opslab.slapd import ThrowawaySlapd, free_port

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
# The one way to serve the API on loopback, shared with the tests and the benchmarks.
# Appended, not prepended: the checkout's opslab/ folder must not shadow the package.
sys.path.append(str(REPO / "tests"))
from served_api import ServedApi  # noqa: E402

BASE = "dc=example,dc=org"
PROJECT = "demo"
NODE = f"app1.{PROJECT}.example.org"
PEOPLE = {"olga": "operations", "vera": "a volunteer"}
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "vera", "GIT_AUTHOR_EMAIL": "vera@example.org",
                "GIT_COMMITTER_NAME": "vera", "GIT_COMMITTER_EMAIL": "vera@example.org"}


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


class Demo:
    """The demo's servers, files and people, all below ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.root = work / "root"  # where the instance's Puppet writes
        self.passwords = {uid: base64.b32encode(os.urandom(10)).decode() for uid in PEOPLE}
        self.slapd = ThrowawaySlapd(BASE, sorted((REPO / "schema").glob("*.ldif")),
                                    workdir=work / "slapd")
        self.api: ServedApi | None = None
        self.greeter_port = free_port()

    # -- the servers ----------------------------------------------------

    def start_directory(self) -> None:
        step("a throwaway slapd with the puppet, openssh-lpk and opslab schemas")
        self.slapd.start()
        self.slapd.create_base()
        added = self.slapd.add_ldif((EXAMPLES / "directory.ldif").read_text(encoding="utf-8"))
        for uid, who in PEOPLE.items():
            self.slapd.add_ldif(f"dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\n"
                                f"uid: {uid}\ncn: {uid}\nsn: {who}\n"
                                f"userPassword: {self.passwords[uid]}\n")
        self.slapd.add_ldif(f"dn: cn=operations,ou=projects,{BASE}\nobjectClass: groupOfNames\n"
                            f"cn: operations\nmember: uid=olga,ou=people,{BASE}\n")
        print(f"loaded {len(added)} example entries, and people olga (operations) and vera")

    def start_api(self) -> None:
        # Production lists the branches every 30 s; the demo wants a push seen by the
        # very next check.
        self.api = ServedApi(self.work, self.slapd, BASE, {
            "branches": {"remote": str(self.work / "puppet.git")}, "api": {"heads_ttl": 0}})
        step(f"the coordination API on {self.api.url} (gunicorn, SQLite)")
        self.api.start()

    @property
    def api_url(self) -> str:
        if self.api is None:
            raise RuntimeError("the API is not running")
        return self.api.url

    def stop(self) -> None:
        """Stop everything the demo started: the greeter service, the API, slapd."""
        pid_file = self.root / "greeter" / "pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        if self.api is not None:
            self.api.stop()
        self.slapd.stop()

    # -- the control repository ------------------------------------------

    def make_repository(self) -> None:
        step("a git repository of examples/control-repo (branch production)")
        self.clone = self.work / "control-repo"
        shutil.copytree(EXAMPLES / "control-repo", self.clone)
        self.git("init", "--quiet", "-b", "production")
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", "example control repository")
        self.git("clone", "--quiet", "--bare", ".", str(self.work / "puppet.git"))
        self.git("remote", "add", "origin", str(self.work / "puppet.git"))
        print(f"production is at {self.git('rev-parse', '--short', 'HEAD')}")

    def git(self, *arguments: str) -> str:
        result = subprocess.run(["git", *arguments], cwd=self.clone, capture_output=True,
                                text=True, timeout=60, check=True,
                                env={**os.environ, **GIT_IDENTITY})
        return result.stdout.strip()

    # -- people and the instance -----------------------------------------

    def call(self, method: str, path: str, uid: str, body: Any = None) -> Any:
        """One API request as ``uid``; prints it like a terminal session would."""
        print(f"{uid}: {method} {path}" + (f" {json.dumps(body)}" if body is not None else ""))
        credentials = base64.b64encode(f"{uid}:{self.passwords[uid]}".encode()).decode()
        request = urllib.request.Request(
            f"{self.api_url}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Basic {credentials}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: HTTP {error.code}: "
                               f"{error.read().decode(errors='replace')}") from None

    def create_project_and_host(self) -> None:
        step(f"olga creates the project {PROJECT!r} and adds vera; vera creates {NODE}")
        self.call("POST", "/v1/projects", "olga",
                  {"name": PROJECT, "description": "the demo", "branch": "production"})
        self.call("POST", f"/v1/projects/{PROJECT}/members", "olga", {"uid": "vera"})
        created = self.call("POST", f"/v1/projects/{PROJECT}/hosts", "vera", {
            "name": NODE, "classes": ["motd", "greeter"],
            "class_parameters": {
                "motd": {"message": f"{NODE}, a host of project {PROJECT}"},
                "greeter": {"greeting": "Hello from the first run", "port": self.greeter_port},
            }})
        token = self.work / "host-token"
        token.write_text(created["token"])
        token.chmod(0o600)
        print(f"the host's token is in {token.name} (shown once by the API, never stored)")
        self.root.mkdir()
        self.agent_config = self.work / "agent.yaml"
        self.agent_config.write_text(yaml.safe_dump({
            "enc": {"api_url": self.api_url, "api_token_file": str(token)},
            "cache": {"dir": str(self.work / "enc-cache")},
            "branches": {"remote": str(self.work / "puppet.git"),
                         "environments": str(self.work / "environments"),
                         "cache": str(self.work / "git-cache")},
            "apply": {"certname": NODE, "state_dir": str(self.work / "state"),
                      "puppet_state_dir": str(self.work / "puppet")},
            "agent": {"sudoers_file": str(self.work / "sudoers.d-opslab-project")},
        }))

    def agent_run(self) -> int:
        """``opslab agent run --once`` on the instance; returns its exit status."""
        print("$ opslab agent run --once")
        result = subprocess.run(
            [sys.executable, "-m", "opslab.cli", f"--config={self.agent_config}", "agent", "run",
             "--once"], capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "FACTER_opslab_root": str(self.root)})
        for line in result.stderr.splitlines():
            # "LEVEL LOGGER: message key=value ...": the demo shows the message.
            level, _, said = line.partition(" ")
            if level in ("info", "warning", "error") and ": " in said:
                message = said.partition(": ")[2]
                print("  " + " ".join(word for word in message.split(" ")
                                      if not word.startswith("certname=")))
        return result.returncode

    def show_instance(self) -> None:
        """What the instance now serves and says."""
        url = f"http://127.0.0.1:{self.greeter_port}/"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode().strip()
        except OSError as error:
            page = f"(not answering: {error})"
        print(f"the greeter on {url} says: {page}")
        print(f"motd: {(self.root / 'motd').read_text().strip()}")

    def change_parameter(self) -> None:
        step("vera changes the greeter's greeting through the API; the instance converges")
        self.call("PATCH", f"/v1/hosts/{NODE}", "vera", {"class_parameters": {
            "motd": {"message": f"{NODE}, a host of project {PROJECT}"},
            "greeter": {"greeting": "Hello, changed through the API",
                        "port": self.greeter_port}}})

    def change_branch(self) -> None:
        step("a new commit on the project's branch; the instance converges")
        manifest = self.clone / "modules/greeter/manifests/init.pp"
        manifest.write_text(manifest.read_text().replace(
            'content => "${greeting}\\n"', 'content => "${greeting} (served by opslab)\\n"'))
        self.git("commit", "--quiet", "-am", "greeter: say who serves the page")
        self.git("push", "--quiet", "origin", "production")
        print(f"pushed production at {self.git('rev-parse', '--short', 'HEAD')}")

    def break_greeter(self) -> None:
        step("a change that Puppet applies without a failure, but breaks the greeter's page; "
             "its smoke check (modules/greeter/checks.yaml) fails")
        manifest = self.clone / "modules/greeter/manifests/init.pp"
        manifest.write_text(manifest.read_text().replace(
            'content => "${greeting} (served by opslab)\\n"',
            'content => "Under maintenance\\n"'))
        self.git("commit", "--quiet", "-am", "greeter: a maintenance page (broken)")
        self.git("push", "--quiet", "origin", "production")
        print(f"pushed production at {self.git('rev-parse', '--short', 'HEAD')}")

    def show_failing(self) -> None:
        host = self.call("GET", f"/v1/hosts/{NODE}", "vera")
        run = host["last_run"]
        print(f"the API: failing={host['failing']}; last run {run['status']}, smoke tests "
              f"{run['smoke']['passed']} passed, {run['smoke']['failed']} failed:")
        for failure in run["smoke"]["failures"]:
            print(f"  {failure['class']}: {failure['check']}: {failure['message']}")

    def revert(self) -> None:
        step("the broken change is reverted; the instance converges and its checks pass")
        self.git("revert", "--quiet", "--no-edit", "HEAD")
        self.git("push", "--quiet", "origin", "production")
        print(f"pushed production at {self.git('rev-parse', '--short', 'HEAD')}")

    def print_history(self) -> None:
        step(f"the run reports of {NODE}, as the API has them")
        for report in reversed(self.call("GET", f"/v1/hosts/{NODE}/reports", "vera")):
            smoke = report["smoke"] or {"passed": 0, "failed": 0}
            print(f"  {report['started_at']}  {report['trigger']:<7} {report['status']:<9} "
                  f"commit {(report['commit'] or '')[:8]}  changed {report['changed']}  "
                  f"failed {report['failed']}  {report['duration']:.1f} s  "
                  f"checks {smoke['passed']} passed, {smoke['failed']} failed")
        step(f"the audit log of project {PROJECT!r}")
        for change in reversed(self.call("GET", f"/v1/changes?project={PROJECT}", "vera")):
            print(f"  {change['at']}  {change['actor']:<12} {change['action']:<20} "
                  f"{change['target']}")


def demo(work: Path) -> int:
    demo = Demo(work)
    try:
        demo.start_directory()
        demo.make_repository()
        demo.start_api()
        demo.create_project_and_host()
        step(f"{NODE}'s agent: the first run (puppet apply below a scratch root)")
        if demo.agent_run() != 0:
            return 1
        demo.show_instance()
        demo.change_parameter()
        if demo.agent_run() != 0:
            return 1
        demo.show_instance()
        demo.change_branch()
        if demo.agent_run() != 0:
            return 1
        demo.show_instance()
        demo.break_greeter()
        if demo.agent_run() != 1:  # Puppet's run succeeded; a smoke check did not
            return 1
        demo.show_failing()
        demo.revert()
        if demo.agent_run() != 0:
            return 1
        demo.show_instance()
        step("one more check: nothing changed, so nothing runs")
        if demo.agent_run() != 0:
            return 1
        demo.print_history()
        return 0
    finally:
        demo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    keep = parser.parse_args().keep
    work = Path(tempfile.mkdtemp(prefix="opslab-demo-"))
    started = time.monotonic()
    try:
        status = demo(work)
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ndemo {'finished' if status == 0 else 'FAILED'} "
          f"in {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
