"""``opslab agent bootstrap``, the systemd units, bootstrap.sh and the cloud-init template.

Bootstrap runs with ``--root tmp_path --no-start``: the files it writes are
real, the running system is never touched. bootstrap.sh runs with stand-ins
for apt-get, python3 and pip first in its PATH, so nothing is installed.
"""

import argparse
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from opslab import log
from opslab.agent.bootstrap import add_arguments, run
from opslab.config import ApplySettings, load
from tests.debian_files import DEBIAN_NSSWITCH, DEBIAN_PAM_SSHD, debian_root

AGENT = Path(__file__).resolve().parent.parent / "instance-agent"
UNITS = ("opslab-agent.service", "opslab-agent-once.service", "opslab-agent.timer")
BIN = os.path.dirname(sys.executable)
TOKEN = "Tok3n-only.seen_by~root"
SETTINGS = [
    "--api-url", "https://api.example.org",
    "--ldap-uri", "ldaps://ldap.example.org",
    "--ldap-base", "dc=example,dc=org",
    "--remote", "https://git.example.org/puppet.git",
    "--certname", "web1.tools.example.org",
]


class Outcome(NamedTuple):
    """What one bootstrap did: exit status and what it printed."""

    status: int
    out: str
    err: str


Bootstrap = Callable[..., Outcome]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The directory bootstrap writes below: a Debian system's nsswitch.conf and sshd PAM
    stack, as the files bootstrap edits."""
    return debian_root(tmp_path / "root")




@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file as cloud-init writes it, with a trailing newline."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def bootstrap(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bootstrap]:
    """Run bootstrap as the agent CLI will: logging set up, ``add_arguments``,
    parse, ``run``."""

    def invoke(*argv: str, stdin: str = "", config_path: str | None = None) -> Outcome:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        parser = argparse.ArgumentParser(prog="opslab agent bootstrap")
        add_arguments(parser)
        try:
            status = run(parser.parse_args(argv), config_path)
        except SystemExit as usage:  # argparse's own refusals
            status = int(usage.code or 0)
        out, err = capsys.readouterr()
        return Outcome(status, out, err)

    log.setup()  # whatever an earlier test left configured
    yield invoke
    root_logger = logging.getLogger(log.ROOT)
    for handler in list(root_logger.handlers):
        root_logger.removeHandler(handler)


def untouched(root: Path) -> bool:
    """Whether ``root`` holds just what the fixture put there, as it put it."""
    return {path: text for path, (text, _, _) in tree(root).items()} == {
        "etc/nsswitch.conf": DEBIAN_NSSWITCH, "etc/pam.d/sshd": DEBIAN_PAM_SSHD}


def tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file below ``root``: its text, mode and mtime, by relative path."""
    return {
        str(path.relative_to(root)): (path.read_text(), path.stat().st_mode & 0o7777,
                                      path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_writes_every_file_with_its_mode_and_content(
    bootstrap: Bootstrap, root: Path, token_file: Path
) -> None:
    result = bootstrap(*SETTINGS, "--token-file", str(token_file), "--root", str(root),
                       "--no-start")
    assert result.status == 0, result.err

    files = tree(root)
    assert set(files) == {
        "etc/opslab/host-token", "etc/opslab/opslab.yaml",
        "etc/ssh/sshd_config.d/opslab.conf", "etc/nslcd.conf", "etc/nsswitch.conf",
        "etc/pam.d/sshd", *(f"etc/systemd/system/{name}" for name in UNITS),
    }  # and no temp file left behind
    assert files["etc/opslab/host-token"][:2] == (TOKEN + "\n", 0o600)
    assert files["etc/opslab/opslab.yaml"][1] == 0o644  # sshd's nobody reads it
    assert (root / "etc/opslab").stat().st_mode & 0o777 == 0o755

    config = load(str(root / "etc/opslab/opslab.yaml"))
    assert config.enc.api_token_file == "/etc/opslab/host-token"
    assert config.enc.api_url == "https://api.example.org"
    assert (config.ldap.uri, config.ldap.base) == ("ldaps://ldap.example.org",
                                                   "dc=example,dc=org")
    assert config.branches.remote == "https://git.example.org/puppet.git"
    assert config.branches.environments == "/var/lib/opslab/environments"
    assert config.branches.cache == "/var/cache/opslab/branches"
    assert config.cache.dir == "/var/cache/opslab/enc"
    assert config.apply.state_dir == "/var/lib/opslab"
    assert config.apply.certname == "web1.tools.example.org"

    for name in UNITS:
        text, mode, _ = files[f"etc/systemd/system/{name}"]
        packaged = (AGENT / "systemd" / name).read_text()
        assert (text, mode) == (packaged.replace("/opt/opslab/bin/", f"{BIN}/"), 0o644)
    assert f"ExecStart={BIN}/opslab agent run\n" in files[
        "etc/systemd/system/opslab-agent.service"][0]

    # People are accounts here: users and groups from the directory, logins for the
    # members of this instance's project (tools), a home at the first login.
    nslcd, mode, _ = files["etc/nslcd.conf"]
    assert mode == 0o600
    assert "uri ldaps://ldap.example.org\n" in nslcd
    assert "base passwd ou=people,dc=example,dc=org\n" in nslcd
    assert ("pam_authz_search (&(objectClass=groupOfNames)(cn=tools)(|(member=$dn)"
            "(opslabGlobal=TRUE)))\n") in nslcd
    nsswitch = files["etc/nsswitch.conf"][0].splitlines()
    assert nsswitch[:3] == ["passwd:         files systemd ldap",
                            "group:          files systemd ldap", "shadow:         files"]
    pam = files["etc/pam.d/sshd"][0].splitlines()
    account = pam.index("@include common-account")
    assert "authinfo_unavail=bad" in pam[account - 1]
    assert pam[account - 1].endswith("pam_ldap.so minimum_uid=1000")
    assert pam[pam.index("@include common-session") + 2].startswith(
        "session optional pam_mkhomedir.so")

    drop_in, mode, _ = files["etc/ssh/sshd_config.d/opslab.conf"]
    assert mode == 0o644
    directives = [line for line in drop_in.splitlines() if not line.startswith("#")]
    assert directives == [f"AuthorizedKeysCommand {BIN}/opslab-ssh-keys %u",
                          "AuthorizedKeysCommandUser nobody", "AuthenticationMethods publickey",
                          "PasswordAuthentication no", "KbdInteractiveAuthentication no"]

    assert TOKEN not in result.out + result.err
    assert all(TOKEN not in text for path, (text, _, _) in files.items()
               if path != "etc/opslab/host-token")


def test_token_from_stdin(bootstrap: Bootstrap, root: Path) -> None:
    result = bootstrap(*SETTINGS, "--token-stdin", "--root", str(root), "--no-start",
                       stdin=f"  {TOKEN}\r\n")
    assert result.status == 0, result.err
    assert (root / "etc/opslab/host-token").read_text() == TOKEN + "\n"
    assert TOKEN not in result.out + result.err


def test_rerun_changes_nothing_and_new_settings_update_in_place(
    bootstrap: Bootstrap, root: Path, token_file: Path
) -> None:
    arguments = [*SETTINGS, "--token-file", str(token_file), "--root", str(root), "--no-start"]
    assert bootstrap(*arguments).status == 0
    before = tree(root)

    again = bootstrap(*arguments)
    assert again.status == 0, again.err
    assert tree(root) == before  # mtimes included: nothing was rewritten
    assert "wrote" not in again.out
    assert again.out.count("unchanged ") == len(before)

    (root / "etc/opslab/host-token").chmod(0o644)
    moved = bootstrap(*arguments[:1], "https://api2.example.org:8443", *arguments[2:])
    assert moved.status == 0, moved.err
    after = tree(root)
    assert load(str(root / "etc/opslab/opslab.yaml")).enc.api_url == (
        "https://api2.example.org:8443")
    assert after["etc/opslab/host-token"][1] == 0o600  # a wrong mode is put right
    changed = {path for path in after if after[path] != before[path]}
    assert changed == {"etc/opslab/opslab.yaml", "etc/opslab/host-token"}


def test_token_from_the_file_it_is_installed_as(bootstrap: Bootstrap, root: Path) -> None:
    # cloud-init writes /etc/opslab/host-token and bootstrap reads it from there.
    installed = root / "etc/opslab/host-token"
    installed.parent.mkdir(parents=True)
    installed.write_text(TOKEN)
    installed.chmod(0o600)
    result = bootstrap(*SETTINGS, "--token-file", str(installed), "--root", str(root),
                       "--no-start")
    assert result.status == 0, result.err
    assert installed.read_text() == TOKEN + "\n"


def with_setting(option: str, value: str) -> list[str]:
    """SETTINGS with ``option``'s value replaced."""
    settings = list(SETTINGS)
    settings[settings.index(option) + 1] = value
    return settings


@pytest.mark.parametrize(("argv", "token", "complaint"), [
    (with_setting("--api-url", "ftp://api.example.org"), TOKEN, "--api-url"),
    (with_setting("--api-url", "https://"), TOKEN, "--api-url"),
    (with_setting("--api-url", "https://api.example.org/v1 x"), TOKEN, "--api-url"),
    (with_setting("--api-url", "https://me:pw@api.example.org"), TOKEN, "user or password"),
    (with_setting("--certname", "Web1.tools.example.org"), TOKEN, "--certname"),
    (with_setting("--certname", "web1..example.org"), TOKEN, "--certname"),
    (with_setting("--ldap-uri", "http://ldap.example.org"), TOKEN, "--ldap-uri"),
    # Cleartext to another host: the token, the sudo list and who may log in.
    (with_setting("--api-url", "http://api.example.org"), TOKEN,
     "--api-url 'http://api.example.org' is cleartext to api.example.org"),
    (with_setting("--api-url", "http://192.0.2.10:8150"), TOKEN, "Use https://, or --insecure"),
    (with_setting("--ldap-uri", "ldap://ldap.example.org"), TOKEN,
     "--ldap-uri 'ldap://ldap.example.org' is cleartext to ldap.example.org"),
    (with_setting("--ldap-uri", "ldap://192.0.2.10"), TOKEN,
     "Use ldaps://, or --ldap-starttls (with --ldap-ca-file FILE), or --insecure"),
    ([*SETTINGS, "--ldap-starttls"], TOKEN, "--ldap-starttls is for ldap:// URIs"),
    # libldap would fall back along a list, to cleartext too.
    (with_setting("--ldap-uri", "ldaps://ldap.example.org,ldap://192.0.2.10"), TOKEN,
     "--ldap-uri 'ldaps://ldap.example.org,ldap://192.0.2.10' is a list of URIs"),
    (with_setting("--ldap-uri", "ldapi:///,ldap://192.0.2.10"), TOKEN, "is a list of URIs"),
    (with_setting("--ldap-uri", "ldaps://ldap.example.org ldap://192.0.2.10"), TOKEN,
     "is a list of URIs"),
    (with_setting("--ldap-base", "example.org"), TOKEN, "--ldap-base"),
    (with_setting("--remote", "--upload-pack=touch pwned"), TOKEN, "--remote"),
    (SETTINGS, "", "empty"),
    (SETTINGS, " \n", "empty"),
    (SETTINGS, "two words-" + TOKEN, "spaces"),
    (SETTINGS, "x" * 5000, "longer"),
    (SETTINGS, "   " + "x" * 4096, "longer"),  # never cut off to fit
])
def test_bad_input_is_refused_before_anything_is_written(
    bootstrap: Bootstrap, root: Path, tmp_path: Path, argv: list[str], token: str,
    complaint: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    result = bootstrap(*argv, "--token-file", str(token_file), "--root", str(root),
                       "--no-start")
    assert result.status == 2
    assert complaint in result.err
    assert "nothing was changed" in result.err
    assert untouched(root)
    assert TOKEN not in result.out + result.err


def test_insecure_accepts_cleartext_and_says_so_in_the_configuration(
    bootstrap: Bootstrap, root: Path, token_file: Path
) -> None:
    settings = with_setting("--api-url", "http://api.example.org")
    settings[settings.index("--ldap-uri") + 1] = "ldap://ldap.example.org"
    result = bootstrap(*settings, "--insecure", "--token-file", str(token_file),
                       "--root", str(root), "--no-start")
    assert result.status == 0, result.err
    config = load(str(root / "etc/opslab/opslab.yaml"))
    assert (config.enc.api_url, config.enc.api_insecure) == ("http://api.example.org", True)
    assert (config.ldap.uri, config.ldap.insecure, config.ldap.starttls) == (
        "ldap://ldap.example.org", True, False)


def test_loopback_needs_no_insecure(bootstrap: Bootstrap, root: Path, token_file: Path) -> None:
    settings = with_setting("--api-url", "http://127.0.0.1:8150")
    settings[settings.index("--ldap-uri") + 1] = "ldap://localhost:389"
    result = bootstrap(*settings, "--token-file", str(token_file), "--root", str(root),
                       "--no-start")
    assert result.status == 0, result.err
    config = load(str(root / "etc/opslab/opslab.yaml"))
    assert (config.enc.api_insecure, config.ldap.insecure) == (False, False)


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def ca_directory() -> Iterator[Path]:
    """A directory everyone may enter (unlike pytest's tmp_path), as /etc/ssl/certs is."""
    directory = Path(tempfile.mkdtemp(prefix="opslab-ca-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_starttls_with_a_ca_file(bootstrap: Bootstrap, root: Path, token_file: Path,
                                 ca_directory: Path) -> None:
    ca_file = ca_directory / "ca.pem"
    ca_file.write_text(PEM)
    ca_file.chmod(0o644)
    settings = with_setting("--ldap-uri", "ldap://ldap.example.org")
    result = bootstrap(*settings, "--ldap-starttls", "--ldap-ca-file", str(ca_file),
                       "--token-file", str(token_file), "--root", str(root), "--no-start")
    assert result.status == 0, result.err
    config = load(str(root / "etc/opslab/opslab.yaml"))
    assert (config.ldap.uri, config.ldap.starttls, config.ldap.ca_file, config.ldap.insecure) == (
        "ldap://ldap.example.org", True, str(ca_file), False)


@pytest.mark.parametrize(("name", "text", "file_mode", "directory_mode", "complaint"), [
    ("absent.pem", None, 0o644, 0o755, "cannot read --ldap-ca-file"),
    ("ca.pem", "not a certificate\n", 0o644, 0o755, "holds no PEM certificate"),
    ("ca.pem", PEM, 0o600, 0o755, "is not readable by everyone (mode 0600), but "
                                  "opslab-ssh-keys runs as nobody"),
    ("ca.pem", PEM, 0o644, 0o700, "which not everyone may enter"),
])
def test_a_ca_file_nobody_could_use_is_refused(
    bootstrap: Bootstrap, root: Path, token_file: Path, ca_directory: Path, name: str,
    text: str | None, file_mode: int, directory_mode: int, complaint: str
) -> None:
    ca_file = ca_directory / name
    if text is not None:
        ca_file.write_text(text)
        ca_file.chmod(file_mode)
    ca_directory.chmod(directory_mode)
    result = bootstrap(*SETTINGS, "--ldap-ca-file", str(ca_file), "--token-file",
                       str(token_file), "--root", str(root), "--no-start")
    assert result.status == 2
    assert complaint in result.err
    assert untouched(root)


def test_a_relative_ca_file_is_refused(bootstrap: Bootstrap, root: Path,
                                       token_file: Path) -> None:
    result = bootstrap(*SETTINGS, "--ldap-ca-file", "ca.pem", "--token-file", str(token_file),
                       "--root", str(root), "--no-start")
    assert result.status == 2
    assert "--ldap-ca-file 'ca.pem' is not an absolute path" in result.err


@pytest.mark.parametrize(("extra", "complaint"), [
    ([], "one of the arguments --token-file --token-stdin is required"),
    (["--token-file", "/nonexistent/token"], "cannot read --token-file"),
    (["--token-stdin"], "from standard input is empty"),
    (["--token-stdin", "--unknown"], "unrecognized arguments: --unknown"),
    (["--token-stdin", "--token", TOKEN], "never taken from the command line"),
    ([f"--token={TOKEN}"], "never taken from the command line"),
])
def test_bad_usage_is_refused_before_anything_is_written(
    bootstrap: Bootstrap, root: Path, extra: list[str], complaint: str
) -> None:
    result = bootstrap(*SETTINGS, *extra, "--root", str(root), "--no-start")
    assert result.status == 2
    assert complaint in result.err
    assert untouched(root)
    assert TOKEN not in result.out + result.err


def test_root_needs_no_start_and_the_default_config_path(
    bootstrap: Bootstrap, root: Path, token_file: Path
) -> None:
    common = [*SETTINGS, "--token-file", str(token_file), "--root", str(root)]
    without_no_start = bootstrap(*common)
    assert without_no_start.status == 2
    assert "add --no-start" in without_no_start.err

    elsewhere = bootstrap(*common, "--no-start", config_path="/etc/other.yaml")
    assert elsewhere.status == 2
    assert "/etc/other.yaml" in elsewhere.err
    assert untouched(root)

    missing = bootstrap(*SETTINGS, "--token-file", str(token_file), "--root",
                        str(root / "missing"), "--no-start")
    assert missing.status == 2
    assert "is not a directory" in missing.err


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's ``Key=value`` lines by section; a key may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return sections


def seconds(span: str) -> float:
    """A systemd time span such as ``32min`` or ``30s``, in seconds."""
    match = re.fullmatch(r"(\d+)(min|s)", span)
    assert match, span
    return int(match[1]) * {"min": 60, "s": 1}[match[2]]


def test_units_say_what_the_agent_needs() -> None:
    service = unit_settings((AGENT / "systemd/opslab-agent.service").read_text())
    once = unit_settings((AGENT / "systemd/opslab-agent-once.service").read_text())
    timer = unit_settings((AGENT / "systemd/opslab-agent.timer").read_text())

    assert service["Service"]["ExecStart"] == ["/opt/opslab/bin/opslab agent run"]
    assert service["Service"]["Restart"] == ["on-failure"]
    assert "RestartSec" in service["Service"]
    assert service["Service"]["KillMode"] == ["mixed"]
    # Long enough for a puppet apply that runs into apply.timeout to finish.
    assert seconds(service["Service"]["TimeoutStopSec"][0]) > ApplySettings().timeout
    assert "network-online.target" in service["Unit"]["After"]
    assert "network-online.target" in service["Unit"]["Wants"]
    assert {"User", "ProtectSystem"}.isdisjoint(service["Service"])  # root, unconfined
    assert service["Install"]["WantedBy"] == ["multi-user.target"]

    assert once["Service"]["Type"] == ["oneshot"]
    assert once["Service"]["ExecStart"] == ["/opt/opslab/bin/opslab agent run --once"]
    assert seconds(once["Service"]["TimeoutStartSec"][0]) > ApplySettings().timeout

    assert timer["Timer"]["Unit"] == ["opslab-agent-once.service"]
    assert timer["Timer"]["OnUnitActiveSec"] == ["1min"]
    assert {"OnBootSec", "RandomizedDelaySec", "AccuracySec"} <= set(timer["Timer"])
    assert timer["Install"]["WantedBy"] == ["timers.target"]

    # The two modes are exclusive.
    assert {"opslab-agent.timer", "opslab-agent-once.service"} <= set(
        " ".join(service["Unit"]["Conflicts"]).split())
    assert once["Unit"]["Conflicts"] == ["opslab-agent.service"]
    assert timer["Unit"]["Conflicts"] == ["opslab-agent.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_units_pass_systemd_analyze_verify(
    bootstrap: Bootstrap, root: Path, token_file: Path
) -> None:
    # systemd-analyze verify fails when ExecStart's binary does not exist, and
    # the packaged units name /opt/opslab/bin/opslab. The copies bootstrap
    # installs name the opslab next to this test's Python, which exists, so
    # verifying them checks the packaged files and bootstrap's rewrite at once.
    assert bootstrap(*SETTINGS, "--token-file", str(token_file), "--root", str(root),
                     "--no-start").status == 0
    units = [str(root / "etc/systemd/system" / name) for name in UNITS]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units],
                            capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys and bad values, only warning: both must be clean.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


SCRIPT = AGENT / "bootstrap.sh"


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A directory of stand-ins for apt-get and python3 that log their arguments.

    ``python3 -m venv DIR`` puts into DIR/bin a pip that logs too and an
    opslab that writes its arguments, one a line, to ``opslab.args``.
    ``dpkg-query`` says a package is installed when its name is a line of
    ``installed`` (none at first).
    """
    log = tmp_path / "calls.log"
    (tmp_path / "installed").write_text("")
    scripts = {
        "bin/apt-get": f'echo "apt-get $*" >> {log}\n',
        "bin/dpkg-query": (f'grep -qxF "$3" {tmp_path}/installed '
                           '&& echo "install ok installed" || exit 1\n'),
        "bin/python3": (f'echo "python3 $*" >> {log}\n'
                        f'mkdir -p "$3/bin" && cp {tmp_path}/venv/pip {tmp_path}/venv/opslab '
                        '"$3/bin/"\n'),
        "venv/pip": f'echo "pip $*" >> {log}\n',
        "venv/opslab": f'printf "%s\\n" "$@" > {tmp_path}/opslab.args\n',
    }
    for name, body in scripts.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return tmp_path / "bin"


def run_script(arguments: list[str], path: Path, tmp_path: Path,
               as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """bootstrap.sh fed to ``sh -s`` on stdin, as ``curl ... | sh -s -- ARGS`` runs it."""
    command = ["sh", "-s", "--", *arguments]
    if as_nobody:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    with SCRIPT.open() as script:
        return subprocess.run(
            command, stdin=script, capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": f"{path}:/usr/sbin:/usr/bin:/sbin:/bin",
                 "OPSLAB_PREFIX": str(tmp_path / "prefix")})


def test_bootstrap_sh_parses() -> None:
    result = subprocess.run(["sh", "-n", str(SCRIPT)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")


def test_bootstrap_sh_refuses_without_package(stand_ins: Path, tmp_path: Path) -> None:
    result = run_script(["--api-url", "https://api.example.org"], stand_ins, tmp_path)
    assert result.returncode == 2
    assert "--package SPEC is required" in result.stderr
    assert not (tmp_path / "calls.log").exists()  # refused before installing anything


def test_bootstrap_sh_refuses_without_root(stand_ins: Path, tmp_path: Path) -> None:
    # As root, drop to nobody (who cannot reach the stand-ins in tmp_path: were
    # the check missing, the real apt-get would run as nobody and be refused).
    result = run_script(["--package", "opslab"], stand_ins, tmp_path,
                        as_nobody=os.geteuid() == 0)
    assert result.returncode == 1
    assert "run this as root" in result.stderr
    assert not (tmp_path / "calls.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap.sh goes past its root check only as root")
def test_bootstrap_sh_installs_then_hands_over_the_other_arguments(
    stand_ins: Path, tmp_path: Path
) -> None:
    arguments = ["--api-url", "https://api.example.org", "--package",
                 "git+https://git.example.org/opslab.git@v1", "--ldap-base",
                 "dc=example, dc=org", "--token-file", "/run/token file"]
    result = run_script(arguments, stand_ins, tmp_path)
    assert result.returncode == 0, result.stderr
    prefix = tmp_path / "prefix"
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "apt-get update -q"
    assert calls[1].startswith("apt-get install -y -q --no-install-recommends ")
    assert {"puppet", "git", "sudo", "python3-venv", "python3-dev", "libldap2-dev",
            "libsasl2-dev", "gcc", "ca-certificates"} <= set(calls[1].split())
    assert calls[2:] == [f"python3 -m venv {prefix}",
                         "pip install -q --upgrade git+https://git.example.org/opslab.git@v1"]
    handed = (tmp_path / "opslab.args").read_text().splitlines()
    assert handed == ["agent", "bootstrap", "--api-url", "https://api.example.org",
                      "--ldap-base", "dc=example, dc=org", "--token-file", "/run/token file"]
    assert "==> installing opslab" in result.stdout

    again = run_script(["--package=/srv/opslab.whl", "--no-start"], stand_ins, tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "calls.log").read_text().splitlines()[-1] == (
        "pip install -q --upgrade /srv/opslab.whl")
    assert (tmp_path / "opslab.args").read_text().splitlines() == [
        "agent", "bootstrap", "--no-start"]


@pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap.sh goes past its root check only as root")
def test_bootstrap_sh_asks_apt_only_for_what_is_missing(stand_ins: Path, tmp_path: Path) -> None:
    packages = re.search(r'^PACKAGES="([^"]*)"', SCRIPT.read_text(), re.MULTILINE)
    assert packages is not None
    every = packages[1].replace("\\\n", " ").split()
    (tmp_path / "installed").write_text("\n".join(name for name in every if name != "nslcd"))
    assert run_script(["--package", "opslab"], stand_ins, tmp_path).returncode == 0
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[:2] == ["apt-get update -q",
                         "apt-get install -y -q --no-install-recommends nslcd"]

    (tmp_path / "installed").write_text("\n".join(every))  # an image that has them all
    (tmp_path / "calls.log").unlink()
    result = run_script(["--package", "opslab"], stand_ins, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not any(call.startswith("apt-get") for call in
                   (tmp_path / "calls.log").read_text().splitlines())
    assert "all of them are installed already" in result.stdout


CLOUD_INIT = AGENT / "cloud-init.yaml"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def header_and_body() -> tuple[str, str]:
    """The cloud-init template's leading comment block and the rest."""
    lines = CLOUD_INIT.read_text().splitlines(keepends=True)
    end = next(index for index, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[:end]), "".join(lines[end:])


def test_cloud_init_template_is_cloud_config_with_a_root_only_token() -> None:
    text = CLOUD_INIT.read_text()
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    (token,) = (entry for entry in document["write_files"]
                if entry["path"] == "/etc/opslab/host-token")
    assert (token["permissions"], token["owner"]) == ("0600", "root:root")
    assert token["content"].strip() == "@HOST_TOKEN@"


def test_cloud_init_placeholders_are_all_listed() -> None:
    header, body = header_and_body()
    listed = set(PLACEHOLDER.findall(header))
    used = set(PLACEHOLDER.findall(body))
    assert used == listed
    assert "@HOST_TOKEN@" in used


def test_cloud_init_runs_bootstrap_sh_with_arguments_bootstrap_accepts() -> None:
    (command,) = yaml.safe_load(CLOUD_INIT.read_text())["runcmd"]
    shell, dash_c, script, _name, url, *arguments = command
    assert (shell, dash_c, url) == ("sh", "-c", "@BOOTSTRAP_URL@")
    assert script.startswith("set -e; command -v curl >/dev/null || { apt-get update -q && "
                             "apt-get install -y -q curl ca-certificates; }; curl -fsSL "
                             "--proto =https -o /run/opslab-bootstrap.sh ")
    assert script.endswith('; shift; sh /run/opslab-bootstrap.sh "$@"')
    syntax = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)
    assert (syntax.returncode, syntax.stderr) == (0, "")

    # bootstrap.sh takes --package; the rest must be what opslab agent bootstrap takes.
    package = arguments.index("--package")
    assert arguments[package + 1] == "@PACKAGE@"
    del arguments[package:package + 2]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parsed = parser.parse_args(arguments)
    assert parsed.token_file == "/etc/opslab/host-token"
    assert (parsed.api_url, parsed.certname) == ("@API_URL@", "@CERTNAME@")
