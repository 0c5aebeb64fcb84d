"""The opslab demo, third part: the review loop. A change is tested on a throwaway clone of
the hosts it affects because a reviewer asked for it in Gerrit, and the vote comes back.

Run by ``make demo`` after ``examples/instance_demo.py``, as root. Gerrit and Jenkins
cannot run here: their stand-ins from ``tests/`` speak their wire protocols (Gerrit's
REST API and ``stream-events`` over SSH, Jenkins' remote API, running the shipped job's
shell step for real). Everything else is opslab as deployed, on the site of
``tests/site.py``:

1. a change to the greeter is pushed for review (a patch set on ``refs/changes``);
2. olga (operations) comments ``check infra``; ``opslab ci dispatch`` reads it from
   the event stream and queues the Jenkins job with the Gerrit Trigger plugin's
   parameters;
3. the job, ``opslab ci run``, clones the host the change affects through the API (a
   real instance: cloud-init, bootstrap, the agent's first run on the target branch),
   applies the change twice over SSH, runs the smoke tests inside and outside, and votes;
4. the vote and its message appear in Gerrit, the run in the API and in the web
   project's Server Admin Log;
5. a broken change gets -1, with the resource that failed and Puppet's message;
6. the pages show it all: the URL is printed at the end, and ``--keep`` (``make demo
   KEEP=1``) keeps the site up until Ctrl-C so a person can look around.

Everything it started is stopped and everything it made is removed at the end.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # tests' stand-ins and site; opslab itself from the install
from opslab.instances import image  # noqa: E402
from tests.ci_site import (  # noqa: E402
    OPERATOR,
    PROJECT,
    Chain,
    Harness,
    build_of,
    ci_site,
    clones_left,
    review,
    review_loop,
    wait_for,
)
from tests.conftest import PASSWORDS  # noqa: E402
from tests.local_instances import IMAGE_CACHE  # noqa: E402

GREETER = "modules/greeter/manifests/init.pp"
VOTE_DEADLINE = 900.0
KEEP_DEADLINE = 8 * 3600.0  # seconds --keep keeps the site up at most


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def change_and_vote(harness: Harness, chain: Chain, subject: str,
                    files: dict[str, str]) -> int:
    """Push ``files`` for review, comment ``check infra``, print the vote; the vote."""
    change = harness.gerrit.add_change(PROJECT, "production", subject, files)
    revision = change.current.revision
    print(f"change {change.number}, patch set 1 ({revision[:12]}): {subject}")
    print(f"  refs/changes/{change.number % 100:02d}/{change.number}/1, "
          f"touching {', '.join(files)}")
    step(f"olga comments 'check infra' on change {change.number}")
    started = time.monotonic()
    chain.ssh.push(harness.gerrit.add_comment(change.number, "check infra", author=OPERATOR))
    wait_for(lambda: build_of(chain, change.number) is not None, "the build", 60, 0.05)
    build = build_of(chain, change.number)
    assert build is not None
    print(f"Jenkins build #{build.number} queued {time.monotonic() - started:.2f} s after "
          "the comment; the job clones, applies twice, runs the smoke tests...")
    wait_for(lambda: [item for item in harness.gerrit.reviews if item.change == change.number],
             "the vote", VOTE_DEADLINE, 1.0)
    voted = review(harness, change.number)
    print(f"\nGerrit, {time.monotonic() - started:.0f} s after the comment: Verified "
          f"{voted['labels'].get('Verified', 'none'):+} on {voted['revision'][:12]}\n")
    print("\n".join(f"    {line}" for line in voted["message"].splitlines()))
    return int(voted["labels"].get("Verified", 0))


def keep_up(url: str) -> None:
    """Wait until Ctrl-C, SIGTERM or KEEP_DEADLINE, with the site serving ``url``."""
    print(f"\nthe site stays up at {url} until Ctrl-C", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        time.sleep(KEEP_DEADLINE)
    except KeyboardInterrupt:
        print("\nstopping the site")


def demo(work: Path, keep: bool) -> int:
    step(f"the base image of local instances: {IMAGE_CACHE}")
    seconds = image.build(IMAGE_CACHE)
    print(f"built in {seconds:.0f} s" if seconds else "complete already")
    step("the site, Gerrit's and Jenkins' stand-ins, opslab ci dispatch")
    with ci_site(work, Path(IMAGE_CACHE)) as harness, review_loop(harness) as chain:
        print(f"API {harness.site.api_url}; Gerrit {harness.gerrit.url}; Jenkins "
              f"{chain.jenkins.url} with the job ci/jobs/opslab-ci.xml")
        source = (REPO / "examples" / "control-repo" / GREETER).read_text()
        step("a change to the greeter's page is pushed for review")
        good = change_and_vote(harness, chain, "greeter: a warmer greeting", {
            GREETER: source.replace('"${greeting}\\n"', '"${greeting}!\\n"')})
        step("a broken change is pushed for review")
        broken = change_and_vote(harness, chain, "greeter: check the page's directory", {
            GREETER: source.replace("  service { 'greeter':", "  exec { 'greeter-check':\n"
                                    "    command => '/usr/bin/test -d /nonexistent',\n  }\n"
                                    "  service { 'greeter':", 1)})
        step("the runs, as the API keeps them (GET /v1/ci/runs)")
        _, runs = harness.site.request("GET", "/v1/ci/runs", as_="olga")
        for run in runs:
            print(f"  run {run['id']}: change {run['change']},{run['patchset']} "
                  f"'{run['trigger']}' by {run['requested_by']}: {run['state']}, vote "
                  f"{run['vote']}, {len(run['hosts'])} clone(s), build {run['build_url']}")
        _, log = harness.site.request("GET", "/v1/projects/web/log", as_="olga")
        print("the web project's Server Admin Log:")
        for entry in log[:2]:
            print(f"  {entry['author']}: {entry['message']}")
        left = clones_left(harness)
        print(f"clones left: {len(left)}")
        step("the pages")
        print(f"open {harness.site.api_url}/ and log in as olga, password "
              f"{PASSWORDS['olga']!r} (the demo's own directory): the projects, the web "
              "host's runs, Recent Changes, the Server Admin Log, the CI runs")
        if keep:
            keep_up(f"{harness.site.api_url}/")
        return 0 if (good, broken) == (1, -1) and not left else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the site and its pages up until Ctrl-C")
    keep = parser.parse_args().keep
    if os.geteuid() != 0:
        print("the review demo needs root (systemd-nspawn, ip netns): skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="opslab-review-demo-"))
    started = time.monotonic()
    status = 1
    try:
        status = demo(work, keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nreview demo {'finished' if status == 0 else 'FAILED'} "
          f"in {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
