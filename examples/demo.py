"""The opslab demo: a throwaway directory, a classification, a real puppet apply.

Run by ``make demo``. It starts a private slapd loaded with the example
directory, asks ``opslab-enc`` (explained, then as Puppet sees it) about
``web1.web.example.org``, and runs ``puppet apply`` on the example control
repository classified by it. Everything lives in a temporary directory that
is removed at the end (``--keep`` keeps it); nothing on the machine changes.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from opslab.puppet import EXIT_MEANINGS, apply_command, enc_command
from opslab.slapd import ThrowawaySlapd

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
BASE = "dc=example,dc=org"
NODE = "web1.web.example.org"


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(command: list[str], env: dict[str, str] | None = None) -> int:
    result = subprocess.run(command, text=True, capture_output=True, timeout=600, check=False,
                            env=env)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def demo(work: Path) -> int:
    step("starting a throwaway slapd with the puppet, openssh-lpk and opslab schemas")
    slapd = ThrowawaySlapd(BASE, sorted((REPO / "schema").glob("*.ldif")), workdir=work / "slapd")
    slapd.start()
    try:
        slapd.create_base()
        added = slapd.add_ldif((EXAMPLES / "directory.ldif").read_text(encoding="utf-8"))
        print(f"loaded {len(added)} example entries below {BASE} ({slapd.ldapi_uri})")

        config = work / "opslab.yaml"
        config.write_text(yaml.safe_dump({
            "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
            "cache": {"dir": str(work / "enc-cache")},
        }))
        enc = enc_command(str(config))

        step(f"opslab-enc --explain {NODE}")
        if run([*enc, "--explain", NODE]) != 0:
            return 1
        step(f"opslab-enc {NODE}  (what Puppet reads)")
        if run([*enc, NODE]) != 0:
            return 1

        step("puppet apply with node_terminus=exec, writing only below a scratch root")
        environments = work / "environments"
        shutil.copytree(EXAMPLES / "control-repo", environments / "production")
        root = work / "root"
        root.mkdir()
        command = apply_command(
            manifest=environments / "production" / "manifests" / "site.pp",
            certname=NODE, environmentpath=environments, enc=enc, state_dir=work / "puppet",
        )
        status = run(command, env={**os.environ, "FACTER_opslab_root": str(root)})
        print(f"puppet apply exited {status} ({EXIT_MEANINGS.get(status, 'unknown')})")
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
