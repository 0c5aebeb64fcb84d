"""The CI harness on the site of :mod:`tests.site`, for its end-to-end tests
(``tests/test_ci_story.py``) and its benchmark (``benchmarks/ci_benchmark.py``).

:func:`ci_site` is the site (nginx, gunicorn, slapd, apt-cacher-ng, the control
repository over git's dumb HTTP) with the Gerrit REST stand-in whose project is the
site's control repository, the CI's account (``cibot``, member of the project ``ci``)
and a host to clone (``app1.web``, a greeter, beside the directory's ``web1.web``).
:func:`review_loop` adds the dispatcher, fed by Gerrit's SSH stand-in and by webhooks,
and a Jenkins stand-in running the shipped job, whose shell step is ``opslab ci run``.
"""

import contextlib
import json
import os
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import paramiko
import yaml

from opslab.ci.dispatcher import Service, build_service
from opslab.config import InstanceSettings, load
from opslab.instances.local import LocalProvider
from tests.conftest import BASE
from tests.gerrit_ssh_standin import USER, GerritSshStandIn
from tests.gerrit_standin import GerritStandIn
from tests.jenkins_standin import Build, JenkinsStandIn
from tests.local_instances import TEST_ROOTS, remove_all
from tests.site import INSTALLATION, Person, Site, running_site

REPO = Path(__file__).resolve().parent.parent
PROJECT = "puppet"  # the control repository's name in Gerrit
# Who comments: olga, a member of operations (ci.trigger_project) in the site's directory.
OPERATOR = {"_account_id": 1000010, "name": "Olga", "email": "olga@example.org",
            "username": "olga"}


class Harness(NamedTuple):
    site: Site
    gerrit: GerritStandIn
    ci: Person
    config: Path  # the job's configuration (ci.yaml)
    work: Path
    local: LocalProvider


class Chain(NamedTuple):
    """The dispatcher serving Gerrit's stand-ins (SSH and webhooks) and a Jenkins stand-in
    that runs the shipped job, whose shell step is ``opslab ci run`` for real."""

    service: Service
    ssh: GerritSshStandIn
    jenkins: JenkinsStandIn
    secret: str  # the webhook's


@contextlib.contextmanager
def ci_site(work: Path, local_image: Path) -> Iterator[Harness]:
    """The site and Gerrit, ready for CI runs; every instance gone afterwards."""
    root = TEST_ROOTS / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    local = LocalProvider(InstanceSettings(installation=INSTALLATION), root=root,
                          image=local_image)
    try:
        with running_site(work, local_image, root) as site, \
                GerritStandIn(work / "gerrit") as gerrit:
            yield _prepare(site, gerrit, work, local)
    finally:
        remove_all(local)
        shutil.rmtree(root, ignore_errors=True)


def _prepare(site: Site, gerrit: GerritStandIn, work: Path, local: LocalProvider) -> Harness:
    assert site.remote is not None
    assert site.certificates is not None
    # Gerrit's project is the site's control repository: a change's parent is production
    # as the instances know it. Every push to it is served over dumb HTTP at once, as a
    # git server's post-update hook does, one push at a time (jobs push side by side, and
    # two mirror pushes at once would fight over the served repository's refs).
    gerrit.remotes[PROJECT] = site.remote
    hook = site.remote.bare / "hooks" / "post-update"
    served = site.files / "puppet.git"
    hook.write_text("#!/bin/sh\n"
                    f"exec flock '{served}.lock' sh -c \"git push --quiet --mirror '{served}' && "
                    f"git --git-dir='{served}' update-server-info\"\n")
    hook.chmod(0o755)
    ci = site.new_person("cibot", work)
    _requested(site, "POST", "/v1/projects", {
        "name": "ci", "description": "Throwaway clones of the CI harness"}, 201)
    _requested(site, "POST", "/v1/projects/ci/members", {"uid": "cibot"}, 200)
    # A greeter in the web project: no instance of its own, only its classification is
    # cloned.
    _requested(site, "POST", "/v1/projects/web/hosts", {
        "name": "app1", "classes": ["greeter"],
        "class_parameters": {"greeter": {"bind": "0.0.0.0",  # noqa: S104 (the clone's own)
                                         "greeting": "Hello from app1"}}}, 201, as_="carol")
    (work / "gerrit-password").write_text(gerrit.password)
    (work / "ci-password").write_text(ci.password)
    # Gerrit's Git URL per project ({project} in ci.git_url): the control repository.
    (work / "git").mkdir()
    (work / "git" / PROJECT).symlink_to(site.remote.bare)
    config = work / "ci.yaml"
    config.write_text(yaml.safe_dump({
        "ldap": {"uri": site.ldap_uri, "base": BASE, "starttls": True,
                 "ca_file": str(site.certificates.ca)},
        "ci": {"projects": [PROJECT], "account": gerrit.user, "gerrit_url": gerrit.url,
               "gerrit_password_file": str(work / "gerrit-password"),
               "git_url": f"{work}/git/{{project}}", "push_url": site.remote.url,
               "api_url": site.api_url, "api_user": "cibot",
               "api_password_file": str(work / "ci-password"),
               "clone_key_file": str(ci.key), "clone_projects": ["production:web"],
               "clone_timeout": 600.0, "apply_timeout": 300.0, "run_timeout": 1200.0},
    }))
    return Harness(site, gerrit, ci, config, work, local)


def _requested(site: Site, method: str, path: str, body: Any, expected: int,
               as_: str = "olga") -> None:
    status, answer = site.request(method, path, body, as_=as_)
    if status != expected:
        raise AssertionError(f"{method} {path}: {status} {answer}")


@contextlib.contextmanager
def review_loop(harness: Harness) -> Iterator[Chain]:
    """The dispatcher (the real commenter policy: the site's directory; the real API for
    its records) and a Jenkins stand-in with the shipped job."""
    work = harness.work / "chain"
    work.mkdir()
    assert harness.site.certificates is not None
    user_key = paramiko.ECDSAKey.generate()
    user_key.write_private_key_file(str(work / "gerrit-key"))
    ssh = GerritSshStandIn(user_key)
    jenkins = JenkinsStandIn(work / "jenkins", executors=4, environ={
        **os.environ, "OPSLAB_CONFIG": str(work / "opslab.yaml"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SSL_CERT_FILE": str(harness.site.certificates.ca)})
    jenkins.add_job("opslab-ci", REPO / "ci" / "jobs" / "opslab-ci.xml")
    (work / "jenkins-token").write_text(jenkins.token)
    secret = "webhook-" + secrets.token_hex(16)
    (work / "webhook-secret").write_text(secret)
    configured = yaml.safe_load(harness.config.read_text())
    configured["ci"].update({
        "gerrit_ssh_host": "127.0.0.1", "gerrit_ssh_port": ssh.port, "gerrit_ssh_user": USER,
        "ssh_key_file": str(work / "gerrit-key"),
        "known_hosts_file": str(ssh.write_known_hosts(work / "known_hosts")),
        "webhook_listen": "127.0.0.1:0", "webhook_secret_file": str(work / "webhook-secret"),
        "state_dir": str(work / "state"), "jenkins_url": jenkins.url,
        "jenkins_user": jenkins.user, "jenkins_token_file": str(work / "jenkins-token")})
    (work / "opslab.yaml").write_text(yaml.safe_dump(configured))
    # The dispatcher records runs in the API over TLS, checked against the system's trust
    # store, which on a CI machine would hold the site's CA: here, this process's.
    trusted = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(harness.site.certificates.ca)
    service = build_service(load(str(work / "opslab.yaml")), poll=0.2)
    service.start()
    try:
        ssh.wait_for_streams(1, timeout=30)
        yield Chain(service, ssh, jenkins, secret)
    finally:
        stopped = service.stop(30)
        ssh.stop()
        jenkins.stop()
        if trusted is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = trusted
        if not stopped:
            raise AssertionError("the dispatcher's threads did not end")


def webhook(chain: Chain, event: dict[str, Any]) -> int:
    """``event`` POSTed as the webhooks plugin does (the project as ``{"name": ...}``)."""
    assert chain.service.listener is not None
    body = {**event, "project": {"name": event["project"]}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{chain.service.listener.port}/gerrit-events/{chain.secret}",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def build_of(chain: Chain, number: int) -> Build | None:
    """The job's build for change ``number``, if one was started."""
    for (job, _), build in sorted(chain.jenkins.builds.items()):
        if job == "opslab-ci" and dict((name, value) for name, value, _ in build.parameters
                                       ).get("GERRIT_CHANGE_NUMBER") == str(number):
            return build
    return None


def review(harness: Harness, number: int) -> dict[str, Any]:
    """The one review Gerrit received on change ``number``."""
    [found] = [item for item in harness.gerrit.reviews if item.change == number]
    return {"labels": found.labels, "message": found.message, "revision": found.revision}


def clones_left(harness: Harness) -> list[str]:
    status, found = harness.site.request("GET", "/v1/hosts?project=ci", as_="olga")
    assert status == 200, found
    return [host["name"] for host in found]


def running_clone(harness: Harness, prefix: str) -> bool:
    """Whether a clone named ``prefix...`` has its instance running (the API launched it)."""
    for name in clones_left(harness):
        if name.startswith(prefix):
            status, host = harness.site.request("GET", f"/v1/hosts/{name}", as_="olga")
            return status == 200 and (host.get("instance") or {}).get("state") == "active"
    return False


def wait_for(condition: Callable[[], object], what: str, timeout: float,
             poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(poll)
