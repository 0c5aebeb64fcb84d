"""The opslab demo: directory, classification, branches as environments, a real puppet apply.

Run by ``make demo``. In a temporary directory it starts a private slapd
loaded with the example directory, makes a git repository of the example
control repository (branches ``production`` and the tools project's
``feature/Tools-MOTD``), and then does what an instance does: asks
``opslab-enc`` about itself (explained, then as Puppet sees it), deploys the
branches with ``opslab branch sync`` and runs ``opslab branch apply``, a
real ``puppet apply`` on the environment the directory names. Everything is
removed at the end (``--keep`` keeps it); nothing on the machine changes:
Puppet writes only below a scratch root.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from opslab.puppet import enc_command
from opslab.slapd import ThrowawaySlapd

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
BASE = "dc=example,dc=org"
NODE = "web1.web.example.org"


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(command: list[str], env: dict[str, str] | None = None) -> int:
    shown = [Path(command[0]).name, *command[1:]]
    print(f"$ {' '.join(shown)}")
    result = subprocess.run(command, text=True, capture_output=True, timeout=600, check=False,
                            env=env)
    sys.stdout.write(result.stdout)
    sys.stderr.write("".join(line + "\n" for line in result.stderr.splitlines()
                             if "Facter: Permission denied" not in line))
    return result.returncode


def make_repository(work: Path) -> Path:
    """A bare repository of the example control repository with two branches."""
    source = work / "control-repo"
    shutil.copytree(EXAMPLES / "control-repo", source)
    identity = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.org",
                "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.org"}
    for command in (["init", "--quiet", "-b", "production"], ["add", "--all"],
                    ["commit", "--quiet", "-m", "example control repository"],
                    ["branch", "feature/Tools-MOTD"],
                    ["clone", "--quiet", "--bare", ".", str(work / "puppet.git")]):
        subprocess.run(["git", *command], cwd=source, check=True, timeout=60,
                       env={**os.environ, **identity})
    return work / "puppet.git"


def demo(work: Path) -> int:
    step("starting a throwaway slapd with the puppet, openssh-lpk and opslab schemas")
    slapd = ThrowawaySlapd(BASE, sorted((REPO / "schema").glob("*.ldif")), workdir=work / "slapd")
    slapd.start()
    try:
        slapd.create_base()
        added = slapd.add_ldif((EXAMPLES / "directory.ldif").read_text(encoding="utf-8"))
        print(f"loaded {len(added)} example entries below {BASE}")

        step("a git repository of examples/control-repo: branches production, "
             "feature/Tools-MOTD")
        remote = make_repository(work)
        config = work / "opslab.yaml"
        config.write_text(yaml.safe_dump({
            "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
            "cache": {"dir": str(work / "enc-cache")},
            "branches": {"remote": str(remote), "environments": str(work / "environments"),
                         "cache": str(work / "git-cache")},
            "apply": {"certname": NODE, "state_dir": str(work / "state"),
                      "puppet_state_dir": str(work / "puppet")},
        }))
        enc = enc_command(str(config))
        opslab = [sys.executable, "-m", "opslab.cli", f"--config={config}"]

        step(f"what the directory says about {NODE}")
        if run([*enc, "--explain", NODE]) != 0 or run([*enc, NODE]) != 0:
            return 1

        step("every branch deployed as an environment")
        if run([*opslab, "branch", "sync"]) != 0:
            return 1

        step(f"{NODE} applies its environment (puppet apply, writing below a scratch root)")
        root = work / "root"
        root.mkdir()
        status = run([*opslab, "branch", "apply"],
                     env={**os.environ, "FACTER_opslab_root": str(root)})
        if status not in (0, 2):
            return 1

        step(f"what the directory made Puppet write in {root}")
        for path in sorted(root.iterdir()):
            print(f"--- {path.name}")
            print(path.read_text(), end="")
        return 0
    finally:
        slapd.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    keep = parser.parse_args().keep
    work = Path(tempfile.mkdtemp(prefix="opslab-demo-"))
    try:
        status = demo(work)
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\ndemo " + ("finished" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
