"""``opslab agent bootstrap``: turn a Debian instance into one the agent manages.

::

    opslab agent bootstrap --api-url URL --ldap-uri URI --ldap-base DN --remote GIT_URL
        [--ldap-starttls] [--ldap-ca-file FILE] [--insecure] [--certname FQDN]
        (--token-file FILE | --token-stdin) [--root DIR --no-start]

It writes the host token (``/etc/opslab/host-token``, 0600), the configuration
file (``/etc/opslab/opslab.yaml``), the agent's systemd units (into
``/etc/systemd/system``), nslcd's configuration and the directory's place in
nsswitch.conf and sshd's PAM stack (people as accounts: opslab.agent.nss) and
an sshd drop-in that asks ``opslab-ssh-keys`` for users' keys; then, unless
``--no-start``, reloads systemd, restarts nslcd and reloads sshd, runs the
agent once, enables and restarts ``opslab-agent.service``. ``--root DIR`` writes the
same files below DIR and touches nothing of the running system (tests, images).

Every value is checked, the configuration is parsed by ``opslab.config`` and
the unit files are read before the first write, so bad input changes nothing.
Each file is written atomically, and only when its content or mode differs: a
re-bootstrap with the same arguments changes nothing, one with new arguments
updates the files in place. The token is never taken from the command line
(every local user can read a process's arguments) and never printed.

The host token and the sudo list come from the API, and who may log in from
the directory: cleartext to either (``http://``, or ``ldap://`` without
StartTLS) is refused for any host but this one, unless ``--insecure`` says
so (opslab.config's rule, which a hand-written configuration meets too).

Exit status: 0 done; 1 a step failed (the message names it); 2 bad usage or input.
"""

import argparse
import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from opslab.config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    check_api_url,
    check_ldap_uri,
    parse,
)
from opslab.files import write_atomic
from opslab.names import (
    InvalidName,
    has_control_characters,
    project_label,
    this_certname,
    validate_certname,
)

from . import nss

log = logging.getLogger("opslab.agent.bootstrap")
EXIT_FAILED = 1
EXIT_USAGE = 2

TOKEN_PATH = "/etc/opslab/host-token"  # noqa: S105 (a path, not a token)
UNIT_DIRECTORY = "/etc/systemd/system"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/opslab.conf"
UNITS = ("opslab-agent.service", "opslab-agent-once.service", "opslab-agent.timer")
SERVICE = "opslab-agent.service"
# The unit files name the installation bootstrap.sh makes; the installed copies
# name the one bootstrap runs from, the same one the sshd drop-in names.
PACKAGED_BIN = "/opt/opslab/bin/"
# An instance deploys only its own environment, as opslab's own state, not
# into Puppet's shared codedir (the default of branches.environments). Every
# other path keeps its default (apply.state_dir, branches.cache, cache.dir).
INSTANCE_ENVIRONMENTS = "/var/lib/opslab/environments"
# A token is one HTTP header value: printable ASCII, no spaces.
_TOKEN = re.compile(r"[!-~]+")
MAX_TOKEN_LENGTH = 4096
# Paths that go into unit files and sshd_config unquoted: no whitespace, no
# quotes, no % (a specifier to both) and no $ (a variable to systemd).
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")
SYSTEMCTL_TIMEOUT = 120.0
# How opslab.config's checks name the settings: by the options that set them.
LDAP_OPTIONS = {"uri": "--ldap-uri", "starttls": "--ldap-starttls",
                "ca_file": "--ldap-ca-file FILE", "insecure": "--insecure"}
API_OPTIONS = {"url": "--api-url", "insecure": "--insecure"}
MAX_CA_FILE = 1 << 20


class _BadInput(Exception):
    """A value given to bootstrap is unusable (exit 2)."""


class _StepFailed(Exception):
    """A step of the bootstrap failed (exit 1); the message names the step."""


class _File(NamedTuple):
    """One file to install: where (without --root), what, with which mode."""

    path: str
    text: str
    mode: int


class _Plan(NamedTuple):
    """Everything bootstrap will write and run, worked out before the first write."""

    root: str | None
    files: list[_File]  # in writing order, the sshd drop-in last
    config_path: str
    bin_directory: str
    start: bool


class _NoTokenOnCommandLine(argparse.Action):
    """``--token``: refused without echoing its value, which argparse would do."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error("the host token is never taken from the command line (every local user "
                     "can read it there): use --token-file FILE or --token-stdin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``opslab agent bootstrap`` to ``parser``."""
    parser.add_argument("--api-url", required=True, metavar="URL",
                        help="the coordination API (https://; http:// only to this host, "
                        "or with --insecure)")
    parser.add_argument("--ldap-uri", required=True, metavar="URI",
                        help="the directory, for SSH keys (ldaps://, ldapi://; ldap:// with "
                        "--ldap-starttls, to this host, or with --insecure)")
    parser.add_argument("--ldap-base", required=True, metavar="DN", help="the directory's base DN")
    parser.add_argument("--ldap-starttls", action="store_true",
                        help="StartTLS on the ldap:// connection")
    parser.add_argument("--ldap-ca-file", metavar="FILE",
                        help="CA certificate(s) (PEM) for ldaps:// or StartTLS (default: the "
                        "system's); readable by everyone, as opslab-ssh-keys runs as nobody")
    parser.add_argument("--insecure", action="store_true",
                        help="accept cleartext http:// and ldap:// to other hosts: the host "
                        "token, who gets sudo and who may log in travel unprotected")
    parser.add_argument("--remote", required=True, metavar="GIT_URL",
                        help="git URL or path of the Puppet repository")
    parser.add_argument("--certname", metavar="FQDN",
                        help="this instance's certname (default: its FQDN at every run)")
    token = parser.add_mutually_exclusive_group(required=True)
    token.add_argument("--token-file", metavar="FILE",
                       help="read this host's API token from FILE")
    token.add_argument("--token-stdin", action="store_true",
                       help="read this host's API token from standard input")
    parser.add_argument("--token", nargs="?", action=_NoTokenOnCommandLine, help=argparse.SUPPRESS)
    parser.add_argument("--root", metavar="DIR",
                        help="write the files below DIR instead of / (needs --no-start)")
    parser.add_argument("--no-start", action="store_true",
                        help="write the files only: no systemctl, no first run, no sshd reload")


def run(arguments: argparse.Namespace, config_path: str | None) -> int:
    """Bootstrap this instance as ``arguments`` say; ``config_path`` is ``opslab --config``.

    Returns the exit status: 0, 1 (a step failed) or 2 (bad input, nothing changed).
    """
    try:
        plan = _plan(arguments, config_path)
    except _BadInput as error:
        log.error(f"{error}; nothing was changed")
        return EXIT_USAGE
    except _StepFailed as error:
        log.error(f"{error}; nothing was changed")
        return EXIT_FAILED
    try:
        for file in plan.files:
            _install(plan, file)
        if plan.start:
            return _start(plan)
    except _StepFailed as error:
        log.error("%s", error)
        return EXIT_FAILED
    print("bootstrapped; not started (--no-start)")
    return 0



def _plan(arguments: argparse.Namespace, config_path: str | None) -> _Plan:
    """Check every input and build every file, writing nothing."""
    if config_path not in (None, DEFAULT_PATH):
        # The installed units and the sshd drop-in name no configuration file, so
        # the agent and opslab-ssh-keys read the default one: bootstrap writes that.
        raise _BadInput(f"the agent and opslab-ssh-keys read {DEFAULT_PATH}, so bootstrap "
                        f"writes that file; it cannot write the configuration to {config_path}")
    if arguments.root is not None and not arguments.no_start:
        raise _BadInput("--root writes files for another root, so nothing can be started: "
                        "add --no-start")
    if arguments.root is not None and not os.path.isdir(arguments.root):
        raise _BadInput(f"--root {arguments.root} is not a directory")
    bin_directory = os.path.dirname(sys.executable)
    config_text = _config_text(arguments)
    token = _read_token(arguments)
    units = _units(bin_directory)
    files = [
        _File(TOKEN_PATH, token + "\n", 0o600),
        # World-readable: sshd runs opslab-ssh-keys as nobody, and it reads this.
        _File(DEFAULT_PATH, config_text, 0o644),
        *(_File(f"{UNIT_DIRECTORY}/{name}", text, 0o644) for name, text in units),
        *_accounts(arguments.root, parse(config_text, DEFAULT_PATH)),
        _File(SSHD_DROP_IN, _sshd_drop_in(bin_directory), 0o644),
    ]
    return _Plan(arguments.root, files, DEFAULT_PATH, bin_directory, not arguments.no_start)


def _config_text(arguments: argparse.Namespace) -> str:
    """The configuration file, checked by ``opslab.config.parse`` as the agent will read it."""
    import yaml

    try:
        api_url = check_api_url(arguments.api_url, arguments.insecure, API_OPTIONS)
        ldap_uri = check_ldap_uri(arguments.ldap_uri, arguments.ldap_starttls,
                                  arguments.insecure, LDAP_OPTIONS)
    except ConfigError as error:
        raise _BadInput(str(error)) from None
    ldap_base = _checked_ldap_base(arguments.ldap_base)
    remote = _checked_remote(arguments.remote)
    ldap: dict[str, str | bool] = {"uri": ldap_uri, "base": ldap_base}
    enc: dict[str, str | bool] = {"api_url": api_url, "api_token_file": TOKEN_PATH}
    if arguments.ldap_starttls:
        ldap["starttls"] = True
    if arguments.ldap_ca_file is not None:
        ldap["ca_file"] = _checked_ca_file(arguments.ldap_ca_file)
    if arguments.insecure:
        ldap["insecure"] = enc["api_insecure"] = True
    document: dict[str, dict[str, str | bool]] = {
        "ldap": ldap, "enc": enc,
        "branches": {"remote": remote, "environments": INSTANCE_ENVIRONMENTS},
    }
    if arguments.certname is not None:
        try:
            document["apply"] = {"certname": validate_certname(arguments.certname)}
        except InvalidName as error:
            raise _BadInput(f"--certname: {error}") from None
    text = ("# Written by `opslab agent bootstrap`; a re-bootstrap rewrites it. Keys not\n"
            "# named here have the defaults listed in opslab's docs/configuration.md.\n"
            + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    try:
        parse(text, "the generated configuration")
    except ConfigError as error:
        raise _BadInput(str(error)) from None
    return text


def _checked_ca_file(path: str) -> str:
    """``path`` if it is a PEM certificate file that ``nobody`` can read."""
    if not path.startswith("/") or has_control_characters(path):
        raise _BadInput(f"--ldap-ca-file {_shown(path)} is not an absolute path")
    try:
        with open(path, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise _BadInput(f"--ldap-ca-file {path} is not a regular file")
            text = stream.read(MAX_CA_FILE)
    except OSError as error:
        raise _BadInput(f"cannot read --ldap-ca-file {path}: {error.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise _BadInput(f"--ldap-ca-file {path} holds no PEM certificate "
                        "(-----BEGIN CERTIFICATE-----)")
    # sshd runs opslab-ssh-keys as nobody, which would otherwise see no CA,
    # fail every TLS handshake, and so let nobody log in.
    if not mode & stat.S_IROTH:
        raise _BadInput(f"--ldap-ca-file {path} is not readable by everyone (mode "
                        f"{stat.S_IMODE(mode):04o}), but opslab-ssh-keys runs as nobody and "
                        "reads it: chmod o+r it")
    for directory in Path(path).parents:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise _BadInput(f"--ldap-ca-file {path} is in {directory}, which not everyone may "
                            "enter, but opslab-ssh-keys runs as nobody and reads the file: "
                            "chmod o+x it, or put the file elsewhere")
    return path


def _checked_ldap_base(base: str) -> str:
    import ldap.dn

    if not base or has_control_characters(base) or not ldap.dn.is_dn(base):
        raise _BadInput(f"--ldap-base {_shown(base)} is not a distinguished name "
                        "(such as dc=example,dc=org)")
    return base


def _checked_remote(remote: str) -> str:
    from opslab.branchrunner.git import GitError, checked_remote

    try:
        return checked_remote(remote)
    except GitError as error:
        raise _BadInput(f"--remote: {error}") from None


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut short: input, not necessarily printable."""
    return repr(value[:200])


def _read_token(arguments: argparse.Namespace) -> str:
    """The host token from --token-file or stdin, checked; never put into a message."""
    source = "standard input" if arguments.token_stdin else f"--token-file {arguments.token_file}"
    try:
        if arguments.token_stdin:
            text = sys.stdin.read(MAX_TOKEN_LENGTH + 1)
        else:
            with open(arguments.token_file, encoding="utf-8") as stream:
                text = stream.read(MAX_TOKEN_LENGTH + 1)
    except OSError as error:
        raise _BadInput(f"cannot read {source}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise _BadInput(f"the host token from {source} is not text") from None
    # Checked before stripping: a cut-off token must never pass as a whole one.
    if len(text) > MAX_TOKEN_LENGTH:
        raise _BadInput(f"the host token from {source} is longer than {MAX_TOKEN_LENGTH} "
                        "characters")
    # Surrounding whitespace is taken off here, once: the file bootstrap writes holds
    # the token and a line break, which is all opslab.files.read_secret takes off.
    token = text.strip()
    if not token:
        raise _BadInput(f"the host token from {source} is empty")
    if not _TOKEN.fullmatch(token):
        raise _BadInput(f"the host token from {source} contains spaces, line breaks or "
                        "characters other than printable ASCII")
    return token


def _units(bin_directory: str) -> list[tuple[str, str]]:
    """The packaged unit files, naming the commands of this installation."""
    _check_command_directory(bin_directory)
    directory = Path(__file__).parent / "systemd"
    units = []
    for name in UNITS:
        try:
            text = (directory / name).read_text(encoding="utf-8")
        except OSError as error:
            raise _StepFailed(f"cannot read the packaged unit file {name}: "
                              f"{error.strerror}") from None
        units.append((name, text.replace(PACKAGED_BIN, f"{bin_directory}/")))
    return units


def _accounts(root: str | None, config: Config) -> list[_File]:
    """nslcd's configuration, and the directory in nsswitch.conf and sshd's PAM stack:
    people as accounts here (opslab.agent.nss)."""
    try:
        certname = this_certname(config.apply.certname)
    except InvalidName as error:
        raise _BadInput(f"this instance's certname: {error}") from None
    project = project_label(certname)
    if project is None:
        raise _BadInput(f"this instance's certname {certname} names no project "
                        "(NAME.PROJECT.DOMAIN): whose members may log in cannot be told")
    files = [_File(nss.NSLCD_CONF, nss.nslcd_conf(config, project), 0o600)]
    for path, edit in ((nss.NSSWITCH, nss.with_directory),
                       (nss.PAM_SSHD, lambda text: nss.with_logins(text,
                                                                   config.accounts.min_uid))):
        target = os.path.join(root, path.lstrip("/")) if root is not None else path
        current = _current(target)
        if current is None:
            raise _BadInput(f"{target} is missing: is this a Debian system with sshd "
                            "(bootstrap.sh installs it)?")
        files.append(_File(path, edit(current[0]), current[1]))
    return files


def _sshd_drop_in(bin_directory: str) -> str:
    # Keys only: people have directory passwords (for the API), and PAM through nslcd
    # would otherwise take them over SSH, where anyone may guess. sshd takes the first
    # value it reads, and Debian's sshd_config includes the drop-ins at its top.
    return ("# Written by `opslab agent bootstrap`: users' SSH keys come from the directory,\n"
            "# and SSH takes keys only, never a password.\n"
            f"AuthorizedKeysCommand {bin_directory}/opslab-ssh-keys %u\n"
            "AuthorizedKeysCommandUser nobody\n"
            "AuthenticationMethods publickey\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n")


def _check_command_directory(bin_directory: str) -> None:
    """The commands the units and sshd will run exist, under a path they can name."""
    if not _PLAIN_PATH.fullmatch(bin_directory):
        raise _StepFailed(f"opslab is installed in {bin_directory!r}, a path that systemd "
                          "units and sshd_config cannot name unquoted")
    for command in ("opslab", "opslab-ssh-keys"):
        if not os.access(f"{bin_directory}/{command}", os.X_OK):
            raise _StepFailed(f"{bin_directory}/{command} is missing: is opslab installed "
                              "in this Python's environment?")


def _target(plan: _Plan, path: str) -> str:
    """Where ``path`` of the instance is on this machine (below --root if given)."""
    return os.path.join(plan.root, path.lstrip("/")) if plan.root is not None else path


def _install(plan: _Plan, file: _File) -> None:
    """Write ``file`` if it differs; the sshd drop-in only if ``sshd -t`` accepts it."""
    target = _target(plan, file.path)
    previous = _current(target)
    changed = previous != (file.text, file.mode)
    try:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if changed:
            write_atomic(target, file.text, file.mode)
    except OSError as error:
        raise _StepFailed(f"writing {target} failed: {error.strerror}") from None
    print(f"{'wrote' if changed else 'unchanged'} {target}")
    if file.path == SSHD_DROP_IN and plan.root is None:
        _validate_sshd(target, changed, previous)


def _current(path: str) -> tuple[str, int] | None:
    """The text and mode of ``path``, or None if it does not exist or cannot be read."""
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read(), os.fstat(stream.fileno()).st_mode & 0o7777
    except (OSError, UnicodeDecodeError):
        return None


def _sshd() -> str | None:
    """The sshd binary, if this machine has one."""
    return shutil.which("sshd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _validate_sshd(target: str, changed: bool, previous: tuple[str, int] | None) -> None:
    """Run ``sshd -t`` if this machine has sshd; on failure put back what the drop-in replaced.

    ``previous`` is the replaced text and mode, None if there was no file.
    """
    sshd = _sshd()
    if sshd is None:
        return
    try:
        result = subprocess.run([sshd, "-t"], capture_output=True, text=True,
                                timeout=SYSTEMCTL_TIMEOUT, check=False)
        problem = result.stderr.strip() if result.returncode != 0 else None
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    if problem is None:
        return
    if not changed:
        raise _StepFailed(f"sshd -t rejects the configuration: {problem}")
    try:
        if previous is not None:
            write_atomic(target, *previous)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
    except OSError as error:
        raise _StepFailed(f"sshd -t rejects the configuration with {target} ({problem}), "
                          f"and putting back the old one failed: {error.strerror}") from None
    raise _StepFailed(f"sshd -t rejects the configuration with {target}, so it was put back "
                      f"as it was: {problem}")


def _start(plan: _Plan) -> int:
    """Reload systemd, nslcd and sshd, run the agent once, enable it; the exit status."""
    opslab = f"{plan.bin_directory}/opslab"
    _step("systemctl daemon-reload", ["systemctl", "daemon-reload"], SYSTEMCTL_TIMEOUT)
    # Before the first run: nslcd reads its configuration only when it starts, and until
    # then every account lookup the agent makes (who gets sudo must be the person's
    # account) waits on nslcd's old configuration; and members may log in while the
    # first Puppet run goes on.
    _step("restarting nslcd", ["systemctl", "restart", "nslcd"], SYSTEMCTL_TIMEOUT,
          fatal=False)
    if _sshd() is not None:
        _step("reloading sshd", ["systemctl", "reload", "ssh"], SYSTEMCTL_TIMEOUT)
    # No timeout of ours: the agent bounds its git calls and puppet apply itself.
    first_run = _step("the first run", [opslab, "--config", plan.config_path, "agent", "run",
                                        "--once"], None, fatal=False)
    _step(f"enabling {SERVICE}", ["systemctl", "enable", SERVICE], SYSTEMCTL_TIMEOUT)
    # Restarted, not only started: after an upgrade a running agent would go on
    # with the old code. Not waited for: stopping lets a Puppet run under way
    # finish (TimeoutStopSec), and systemd carries the job out without us.
    _step(f"restarting {SERVICE}", ["systemctl", "--no-block", "restart", SERVICE],
          SYSTEMCTL_TIMEOUT)
    if not first_run:
        # The service is enabled regardless: it retries, and the API may come later.
        log.error(f"the first run failed (see above); {SERVICE} is enabled and will retry")
        return EXIT_FAILED
    print(f"bootstrapped; {SERVICE} is enabled and (re)starting")
    return 0


def _step(name: str, command: Sequence[str], timeout: float | None, fatal: bool = True) -> bool:
    """Run one step, its output going to ours; raise _StepFailed if it fails and is fatal."""
    print(f"{name}: {' '.join(command)}", flush=True)
    try:
        status = subprocess.run(command, timeout=timeout, check=False).returncode
        problem = f"exit status {status}" if status != 0 else None
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    if problem is not None and fatal:
        raise _StepFailed(f"{name} failed: {problem}")
    if problem is not None:
        log.warning(f"{name} failed: {problem}")
    return problem is None
