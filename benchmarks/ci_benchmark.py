"""How fast does a reviewer's comment become a Jenkins build, and then a vote?

1. **Comment to queued** (``--part queue``). ``opslab ci dispatch`` as it runs (the
   dispatcher's service: the SSH stream, the webhook endpoint, the trigger, Jenkins
   through python-jenkins), fed by Gerrit's SSH stand-in and by webhooks, queueing builds
   in the Jenkins stand-in (a job of one ``true`` step). Each sample is a new change and a
   ``check infra`` comment, alternately streamed over SSH and POSTed as the webhooks
   plugin does; the clock runs from the moment the event is sent until Jenkins has
   answered ``buildWithParameters`` with its queue item (``Dispatcher.queued``). The
   commenter policy is a set of names: the directory's one round trip (the ENC
   benchmark's lookup) is not part of this figure. Target: under one second (median and
   90th percentile). The references cannot run here: Zuul waits 10 s by design before it
   enqueues, the Gerrit Trigger plugin 3 s (its ``buildScheduleDelay``), both before
   queueing anything; their figures are those delays, quoted, not measured.
2. **Comment to vote** (``--part vote``, root): the site of ``tests/site.py``, the
   dispatcher, the Jenkins stand-in running the shipped job (``opslab ci run`` for real),
   and a change to the site manifest, which clones both hosts of the web project on the
   local provider (real instances, cloud-init, bootstrap, Puppet, smoke tests). The
   clock runs from the comment until Gerrit has the vote; when the build was queued is
   printed beside it. Target: under three minutes, Puppet included.

Usage: ``python benchmarks/ci_benchmark.py [--part queue|vote|both] [--samples N]
[--rounds N] [--json FILE]``
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    REPO,
    BenchmarkError,
    percentile,
    print_environment,
    print_targets,
    run_script,
    write_results,
)

sys.path.append(str(REPO))
import paramiko

from opslab.ci.dispatcher import build_service
from opslab.config import CiSettings, Config
from tests.gerrit_ssh_standin import USER, GerritSshStandIn
from tests.gerrit_standin import GerritStandIn
from tests.jenkins_standin import JenkinsStandIn

QUEUE_TARGET = 1.0  # seconds, comment to queued
VOTE_TARGET = 180.0  # seconds, comment to vote for a two-host clone
SECRET = "benchmark-webhook-0123456789abcdef"  # noqa: S105 (a throwaway endpoint's)
PROJECT = "operations/puppet"
PARAMETERS = ("GERRIT_EVENT_TYPE", "GERRIT_EVENT_HASH", "GERRIT_CHANGE_NUMBER",
              "GERRIT_PATCHSET_NUMBER", "GERRIT_PATCHSET_REVISION", "GERRIT_PROJECT",
              "GERRIT_BRANCH", "GERRIT_EVENT_COMMENT_TEXT")
JOB = """<project><properties><hudson.model.ParametersDefinitionProperty><parameterDefinitions>
{parameters}
</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>
<concurrentBuild>true</concurrentBuild>
<builders><hudson.tasks.Shell><command>true</command></hudson.tasks.Shell></builders>
</project>""".format(parameters="\n".join(
    f"<hudson.model.StringParameterDefinition><name>{name}</name><defaultValue/>"
    "</hudson.model.StringParameterDefinition>" for name in PARAMETERS))
DEADLINE = 30.0  # for one sample of the queue part


def queue_part(samples: int) -> dict[str, Any]:
    """Comment to queued, ``samples`` times, half by SSH, half by webhook."""
    with tempfile.TemporaryDirectory(prefix="opslab-ci-bench-") as temporary:
        root = Path(temporary)
        gerrit = GerritStandIn(root / "gerrit")
        user_key = paramiko.ECDSAKey.generate()
        user_key.write_private_key_file(str(root / "key"))
        ssh = GerritSshStandIn(user_key)
        jenkins = JenkinsStandIn(root / "jenkins", executors=8)
        jenkins.add_job("opslab-ci", JOB)
        (root / "gerrit-password").write_text(gerrit.password)
        (root / "jenkins-token").write_text(jenkins.token)
        (root / "webhook-secret").write_text(SECRET)
        settings = CiSettings(
            projects=(PROJECT,), account="opslab-ci", gerrit_url=gerrit.url,
            gerrit_user=gerrit.user, gerrit_password_file=str(root / "gerrit-password"),
            gerrit_ssh_host="127.0.0.1", gerrit_ssh_port=ssh.port, gerrit_ssh_user=USER,
            ssh_key_file=str(root / "key"),
            known_hosts_file=str(ssh.write_known_hosts(root / "known_hosts")),
            webhook_listen="127.0.0.1:0", webhook_secret_file=str(root / "webhook-secret"),
            state_dir=str(root / "state"), jenkins_url=jenkins.url,
            jenkins_user=jenkins.user, jenkins_token_file=str(root / "jenkins-token"))
        service = build_service(Config(ci=settings), policy=lambda name: name == "rev")
        service.start()
        figures: dict[str, list[float]] = {"ssh": [], "webhook": []}
        try:
            ssh.wait_for_streams(1, timeout=10)
            assert service.listener is not None
            url = f"http://127.0.0.1:{service.listener.port}/gerrit-events/{SECRET}"
            for number in range(samples + 2):  # the first two warm the connections up
                path = "ssh" if number % 2 == 0 else "webhook"
                change = gerrit.add_change(PROJECT, "production", f"Change {number}")
                line = gerrit.add_comment(change.number, "check infra")
                sent = time.monotonic()
                if path == "ssh":
                    ssh.push(line)
                else:
                    body = json.dumps({**line, "project": {"name": PROJECT}}).encode()
                    request = urllib.request.Request(
                        url, data=body, method="POST",
                        headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                        answer.read()
                queued = _queued(service, change.number, sent)
                if number >= 2:
                    figures[path].append(queued - sent)
        finally:
            service.stop(10)
            ssh.stop()
            jenkins.stop()
            gerrit.stop()
    every = figures["ssh"] + figures["webhook"]
    result = {path: {"median": statistics.median(values), "p90": percentile(values, 90),
                     "max": max(values), "samples": len(values)}
              for path, values in (*figures.items(), ("all", every))}
    for path, figure in result.items():
        print(f"  {path:8} median {figure['median'] * 1000:6.1f} ms, 90th percentile "
              f"{figure['p90'] * 1000:6.1f} ms, max {figure['max'] * 1000:6.1f} ms "
              f"({figure['samples']} samples)")
    return result


def _queued(service: Any, change: int, sent: float) -> float:
    """When Jenkins answered the build of ``change`` (monotonic), waited for up to
    DEADLINE after the comment was sent (or now, if that is later)."""
    deadline = max(sent, time.monotonic()) + DEADLINE
    while time.monotonic() < deadline:
        for item in list(service.dispatcher.queued):
            if item.run.change == change:
                return float(item.queued)
        time.sleep(0.001)
    raise BenchmarkError(f"change {change}: no build queued within {DEADLINE:g} s")


def vote_part(rounds: int) -> dict[str, Any]:
    """Comment to vote, on the site, for a change that clones both web hosts."""
    if os.geteuid() != 0:
        raise BenchmarkError("local instances need root (run with --part queue otherwise)")
    from opslab.instances import image
    from tests.ci_site import OPERATOR, ci_site, review, review_loop, wait_for
    from tests.local_instances import IMAGE_CACHE

    built = image.build(IMAGE_CACHE)
    print(f"image {IMAGE_CACHE}" + (f" built in {built:.0f} s" if built else " (cached)"))
    manifest = (REPO / "examples/control-repo/manifests/site.pp").read_text()
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="opslab-ci-bench-") as temporary, \
            ci_site(Path(temporary), Path(IMAGE_CACHE)) as harness, \
            review_loop(harness) as chain:
        for number in range(rounds + 1):  # the first, untimed, fills the apt proxy
            change = harness.gerrit.add_change(
                "puppet", "production", f"Round {number}",
                {"manifests/site.pp": manifest + f"# round {number}\n"}).number
            line = harness.gerrit.add_comment(change, "check infra", author=OPERATOR)
            sent = time.monotonic()
            chain.ssh.push(line)
            wait_for(lambda change=change: [r for r in harness.gerrit.reviews
                                            if r.change == change], "the vote", 900, 0.2)
            voted = time.monotonic() - sent
            verdict = review(harness, change)
            if verdict["labels"] != {"Verified": 1} or "2 host(s)" not in verdict["message"]:
                raise BenchmarkError(f"round {number}: {verdict}")
            queued = _queued(chain.service, change, sent) - sent
            figures = {"queued": queued, "vote": voted}
            label = "untimed round" if number == 0 else f"round {number}"
            print(f"  {label}: comment to queued {queued:.2f} s, comment to vote "
                  f"{voted:.1f} s", flush=True)
            if number:
                samples.append(figures)
    return {"samples": samples,
            "medians": {key: statistics.median(sample[key] for sample in samples)
                        for key in samples[0]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", choices=("queue", "vote", "both"), default="both")
    parser.add_argument("--samples", type=int, default=40,
                        help="comments for the queue part (default 40)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed review loops for the vote part (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    arguments = parser.parse_args()
    print_environment()
    results: dict[str, Any] = {}
    targets: dict[str, tuple[bool, str]] = {}
    if arguments.part in ("queue", "both"):
        print(f"comment to queued, {arguments.samples} samples:")
        results["queue"] = queue_part(arguments.samples)
        every = results["queue"]["all"]
        targets[f"comment to queued under {QUEUE_TARGET:g} s (median and 90th percentile)"] = (
            every["p90"] < QUEUE_TARGET,
            f"median {every['median'] * 1000:.1f} ms, 90th percentile "
            f"{every['p90'] * 1000:.1f} ms (Zuul: 10 s, Gerrit Trigger: 3 s, by design)")
    if arguments.part in ("vote", "both"):
        print(f"comment to vote, two hosts cloned, {arguments.rounds} rounds:")
        results["vote"] = vote_part(arguments.rounds)
        vote = results["vote"]["medians"]["vote"]
        targets[f"comment to vote for two hosts under {VOTE_TARGET:g} s (median)"] = (
            vote < VOTE_TARGET, f"{vote:.1f} s")
    results["targets"] = print_targets(targets)
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "ci_benchmark")
