"""opslab-ssh-keys as sshd runs it: keys for members only, nothing on any doubt.

Against the real slapd, with entries of this module's own (people ``sk-*``,
projects and hosts named ``sshkeys*``); the tests that stop or freeze the
directory, or load a module into it, get a server of their own. As root, a
real sshd on a loopback port asks the installed command, as on an instance.
"""

import base64
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import ldap
import pytest

from opslab.agent.ssh_keys import main
from opslab.config import LdapSettings
from opslab.directory import Directory, Search
from opslab.slapd import ThrowawaySlapd, free_port
from tests.conftest import BASE, PEOPLE, PROJECTS, host_ldif, project_ldif, write_config
from tests.local_accounts import free_uids, local_account, require_root

COMMAND = Path(sys.executable).with_name("opslab-ssh-keys")

PROJECT = "sshkeys"
GLOBAL_PROJECT = "sshkeys-global"
MEMBER_HOST = "member.sshkeys.example.org"  # in PROJECT
GLOBAL_HOST = "shared.sshkeys.example.org"  # in GLOBAL_PROJECT
LOOSE_HOST = "loose.sshkeys.example.org"  # names no project: its name says sshkeys
STRAY_HOST = "stray.sshkeys-none.example.org"  # names none, its name one without an entry
SHORT_HOST = "sshkeys-short.example"  # names none, and its name has no project label
ORPHAN_HOST = "orphan.sshkeys.example.org"  # names a project without an entry
WILD_HOST = "wild.sshkeys.example.org"  # names "sshkey*": a wildcard, were it not escaped
NO_HOST = "absent.sshkeys.example.org"  # has no entry at all


def key(owner: str) -> str:
    token = base64.b64encode(owner.encode()).decode()
    return f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{token} {owner}@example"


MEMBER_KEYS = [key("sk-member-laptop"), f'from="192.0.2.0/24" {key("sk-member-desktop")}']
# Stored between the good ones: values that must never reach sshd.
UNUSABLE_KEYS = ["", "   ", f'{key("sk-member-a")}\ncommand="/bin/sh" {key("sk-member-b")}',
                 f"{key('sk-member-c')}\r{key('sk-member-d')}"]
OUTSIDER_KEYS = [key("sk-outsider")]
ALICE_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGUta2V5LWZvci1hbGljZS1vbmx5 "
             "alice@example")  # examples/directory.ldif


def person_ldif(uid: str, keys: Sequence[str], *lines: str) -> str:
    """LDIF for a person with SSH keys (base64, so any value survives LDIF)."""
    values = "".join(f"sshPublicKey:: {base64.b64encode(k.encode()).decode()}\n" for k in keys)
    extra = "".join(f"{line}\n" for line in lines)
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: ldapPublicKey\n"
            f"uid: {uid}\ncn: {uid}\nsn: {uid}\n{values}{extra}")


def posix(uid_number: int) -> list[str]:
    """The lines that give a person a uidNumber (posixAccount)."""
    return ["objectClass: posixAccount", f"uidNumber: {uid_number}",
            f"gidNumber: {uid_number}", "homeDirectory: /"]


def add_member(server: ThrowawaySlapd, project: str, uid: str) -> None:
    connection = server.connect()
    connection.modify_s(f"cn={project},{PROJECTS}",
                        [(ldap.MOD_ADD, "member", [f"uid={uid},{PEOPLE}".encode()])])
    connection.unbind_s()


def populate(server: ThrowawaySlapd) -> ThrowawaySlapd:
    """This module's people, projects and hosts."""
    server.add_ldif("\n".join([
        person_ldif("sk-member", [MEMBER_KEYS[0], *UNUSABLE_KEYS, MEMBER_KEYS[1]]),
        person_ldif("sk-outsider", OUTSIDER_KEYS),
        person_ldif("sk-keyless", []),
        # A member who added more uid values to their own entry.
        person_ldif("sk-rooter", [key("sk-rooter")], "uid: root", "uid: sk-ghost"),
        person_ldif("sk-lowuid", [key("sk-lowuid")], *posix(999)),
        person_ldif("sk-highuid", [key("sk-highuid")], *posix(65534)),  # nobody's uid
        project_ldif(PROJECT, f"member: uid=sk-member,{PEOPLE}",
                     f"member: uid=sk-keyless,{PEOPLE}", f"member: uid=sk-rooter,{PEOPLE}",
                     f"member: uid=sk-lowuid,{PEOPLE}", f"member: uid=sk-highuid,{PEOPLE}"),
        project_ldif(GLOBAL_PROJECT, "opslabGlobal: TRUE"),
        host_ldif(MEMBER_HOST, f"opslabProject: {PROJECT}"),
        host_ldif(GLOBAL_HOST, f"opslabProject: {GLOBAL_PROJECT}"),
        host_ldif(LOOSE_HOST),
        host_ldif(STRAY_HOST),
        host_ldif(SHORT_HOST),
        host_ldif(ORPHAN_HOST, "opslabProject: sshkeys-vanished"),
        host_ldif(WILD_HOST, "opslabProject: sshkey*"),
    ]))
    return server


@pytest.fixture(scope="module")
def directory(slapd: ThrowawaySlapd) -> ThrowawaySlapd:
    """The session's slapd with this module's entries."""
    return populate(slapd)


ConfigFor = Callable[..., Path]


@pytest.fixture
def config_for(tmp_path: Path, directory: ThrowawaySlapd) -> ConfigFor:
    """A configuration file for the instance ``certname``; keywords add sections."""

    def write(certname: str, **sections: dict[str, object]) -> Path:
        merged: dict[str, dict[str, object]] = {"apply": {"certname": certname}, **sections}
        return write_config(tmp_path / "opslab.yaml", directory, **merged)

    return write


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[object, str, str]:
    """main() in this process: (exit status, stdout, stderr)."""
    try:
        status: object = main(list(arguments))
    except SystemExit as exit:  # argparse refusing the command line
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_installed(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The installed command, with an environment as bare as the one sshd gives it."""
    assert COMMAND.exists(), "opslab-ssh-keys is not installed: pip install -e ."
    return subprocess.run([str(COMMAND), *arguments], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.defpath}, check=False)


def lines(keys: Sequence[str]) -> str:
    return "".join(f"{k}\n" for k in keys)


# Who gets keys where.


def test_member_gets_their_keys_from_the_installed_command(config_for: ConfigFor) -> None:
    result = run_installed("--config", str(config_for(MEMBER_HOST)), "sk-member")
    assert (result.returncode, result.stderr) == (0, "")
    # As stored, in order; empty values and values with line breaks left out.
    assert result.stdout == lines(MEMBER_KEYS)


@pytest.mark.parametrize(
    ("user", "host", "keys"),
    [("sk-member", MEMBER_HOST, MEMBER_KEYS),
     ("sk-member", GLOBAL_HOST, MEMBER_KEYS),  # a global project lets every person in
     ("sk-outsider", GLOBAL_HOST, OUTSIDER_KEYS),
     # No opslabProject: the project its name says, as the ENC finds it.
     ("sk-member", LOOSE_HOST, MEMBER_KEYS),
     ("alice", "web1.web.example.org", [ALICE_KEY])],
)
def test_granted(config_for: ConfigFor, capsys: pytest.CaptureFixture[str],
                 user: str, host: str, keys: list[str]) -> None:
    assert run(capsys, "--config", str(config_for(host)), user) == (0, lines(keys), "")


@pytest.mark.parametrize(
    ("user", "host", "reason"),
    [("sk-outsider", MEMBER_HOST, f"is not a member of project '{PROJECT}', and it is not global"),
     ("sk-nobody", MEMBER_HOST, f"no person uid=sk-nobody,{PEOPLE}"),
     ("sk-nobody", GLOBAL_HOST, f"no person uid=sk-nobody,{PEOPLE}"),  # global: people only
     # Found at uid=NAME,PEOPLE only, never by another uid value of a member's entry.
     ("sk-ghost", MEMBER_HOST, f"no person uid=sk-ghost,{PEOPLE}"),
     ("sk-ghost", GLOBAL_HOST, f"no person uid=sk-ghost,{PEOPLE}"),
     ("root", MEMBER_HOST, "'root' is a system account"),
     ("root", GLOBAL_HOST, "'root' is a system account"),
     ("sk-lowuid", MEMBER_HOST, "its uidNumber 999 is below accounts.min_uid (1000)"),
     ("sk-highuid", MEMBER_HOST, "its uidNumber 65534 is above accounts.max_uid (60000)"),
     ("sk-keyless", MEMBER_HOST, "has no usable sshPublicKey"),
     ("sk-member", NO_HOST, f"no host entry for this instance ({NO_HOST})"),
     ("sk-member", STRAY_HOST,
      "is not a member of project 'sshkeys-none' (from this instance's name)"),
     ("sk-member", SHORT_HOST, f"names no opslabProject, and {SHORT_HOST} has no project label"),
     ("alice", "builder.example.org", "is not a member of project 'tools'"),
     ("sk-member", ORPHAN_HOST, "is not a member of project 'sshkeys-vanished'"),
     ("sk-member", WILD_HOST, "is not a member of project 'sshkey*'")],
)
def test_not_granted(config_for: ConfigFor, capsys: pytest.CaptureFixture[str],
                     user: str, host: str, reason: str) -> None:
    status, out, err = run(capsys, "--config", str(config_for(host)), user)
    assert (status, out) == (1, "")
    assert reason in err
    assert err.count("\n") == 1


def test_certname_defaults_to_the_lowercased_fqdn(
    tmp_path: Path, directory: ThrowawaySlapd, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: MEMBER_HOST.upper())
    config = write_config(tmp_path / "opslab.yaml", directory)
    assert run(capsys, "--config", str(config), "sk-member") == (0, lines(MEMBER_KEYS), "")


def test_one_round_trip_then_a_membership_check_for_cn_only(
    config_for: ConfigFor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds: list[list[Search]] = []
    search = Directory.search

    def recording(self: Directory, searches: Sequence[Search]) -> object:
        rounds.append(list(searches))
        return search(self, searches)

    monkeypatch.setattr(Directory, "search", recording)
    assert run(capsys, "--config", str(config_for(MEMBER_HOST)), "sk-member")[0] == 0
    assert [len(searches) for searches in rounds] == [2, 1]
    assert rounds[1][0].attributes == ["cn"]
    assert rounds[1][0].filter == (f"(&(objectClass=groupOfNames)(cn={PROJECT})"
                                   f"(|(member=uid=sk-member,{PEOPLE})(opslabGlobal=TRUE)))")

    rounds.clear()  # denied before the membership check: one round trip in all
    assert run(capsys, "--config", str(config_for(MEMBER_HOST)), "sk-nobody")[0] == 1
    assert [len(searches) for searches in rounds] == [2]


# Locked accounts.


@pytest.mark.parametrize(
    ("label", "days_from_today", "granted"),
    [("long-ago", -400, False), ("yesterday", -1, False), ("today", 0, False),
     ("tomorrow", 1, True), ("next-decade", 3650, True), ("never", None, True)],
)
def test_shadow_expire(directory: ThrowawaySlapd, config_for: ConfigFor,
                       capsys: pytest.CaptureFixture[str],
                       label: str, days_from_today: int | None, granted: bool) -> None:
    today = int(time.time() // 86400)
    expire = -1 if days_from_today is None else today + days_from_today  # -1: never, as in shadow
    uid = f"sk-expire-{label}"
    directory.add_ldif(person_ldif(uid, [key(uid)], "objectClass: shadowAccount",
                                   f"shadowExpire: {expire}"))
    add_member(directory, PROJECT, uid)
    status, out, err = run(capsys, "--config", str(config_for(MEMBER_HOST)), uid)
    if granted:
        assert (status, out, err) == (0, lines([key(uid)]), "")
    else:
        assert (status, out) == (1, "")
        assert f"is locked: shadowExpire is day {expire}" in err


def test_password_policy_lock(tmp_path: Path, private_slapd: ThrowawaySlapd,
                              capsys: pytest.CaptureFixture[str]) -> None:
    server = populate(private_slapd)
    # Loading ppolicy is enough for slapd to know pwdAccountLockedTime.
    admin = ldap.initialize(server.ldapi_uri)
    admin.sasl_external_bind_s()
    admin.modify_s("cn=module{0},cn=config", [(ldap.MOD_ADD, "olcModuleLoad", [b"ppolicy"])])
    admin.unbind_s()
    config = write_config(tmp_path / "opslab.yaml", server, apply={"certname": MEMBER_HOST})
    assert run(capsys, "--config", str(config), "sk-member")[0] == 0

    dn = f"uid=sk-member,{PEOPLE}"
    connection = server.connect()
    connection.modify_s(dn, [(ldap.MOD_ADD, "pwdAccountLockedTime", [b"000001010000Z"])])
    # Operational: left out unless asked for by name.
    assert "pwdAccountLockedTime" not in connection.search_s(dn, ldap.SCOPE_BASE)[0][1]
    connection.unbind_s()
    status, out, err = run(capsys, "--config", str(config), "sk-member")
    assert (status, out) == (1, "")
    assert "is locked: pwdAccountLockedTime is set" in err


# System accounts: never a person's login.


def test_the_uid_range_is_accounts_min_uid_to_max_uid(config_for: ConfigFor,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(MEMBER_HOST, accounts={"min_uid": 500, "max_uid": 65534})
    assert run(capsys, "--config", str(config), "sk-lowuid") == (0, lines([key("sk-lowuid")]), "")
    assert run(capsys, "--config", str(config), "sk-highuid") == (
        0, lines([key("sk-highuid")]), "")


@pytest.mark.parametrize(("name", "number"), [("backup", None), ("nobody", 7777)])
def test_a_person_named_like_a_local_system_account_gets_no_keys(
    tmp_path: Path, private_slapd: ThrowawaySlapd, name: str, number: int | None,
) -> None:
    """sshd would log them in to the local account of that name, not to a person's:
    ``backup`` (Debian's base-passwd: uid 34), ``nobody`` (65534, and sshd's
    AuthorizedKeysCommandUser), whatever uidNumber the directory gives them."""
    local = pwd.getpwnam(name).pw_uid
    server = populate(private_slapd)
    server.add_ldif(person_ldif(name, [key(name)], *(posix(number) if number else [])))
    add_member(server, PROJECT, name)
    config = write_config(tmp_path / "opslab.yaml", server, apply={"certname": MEMBER_HOST})

    result = run_installed("--config", str(config), name)

    assert (result.returncode, result.stdout) == (1, "")
    bound = ("below accounts.min_uid (1000)" if local < 1000 else
             "above accounts.max_uid (60000)")
    assert f"the local account {name!r} has uid {local}, which is {bound}" in result.stderr


def test_a_person_named_like_someone_elses_local_account_gets_no_keys(
    directory: ThrowawaySlapd, config_for: ConfigFor,
) -> None:
    """The local account of their name is not theirs (another uid): sshd would log them in
    to it. Their own account (the uid is their uidNumber) lets them in."""
    require_root()
    name = "sk-impostor"
    local_uid, their_uid = free_uids(2)
    directory.add_ldif(person_ldif(name, [key(name)], *posix(their_uid)))
    add_member(directory, PROJECT, name)
    config = config_for(MEMBER_HOST)

    with local_account(name, local_uid):
        refused = run_installed("--config", str(config), name)
    with local_account(name, their_uid):
        granted = run_installed("--config", str(config), name)

    assert (refused.returncode, refused.stdout) == (1, "")
    assert (f"the local account {name!r} has uid {local_uid}, not the person's uidNumber "
            f"{their_uid}") in refused.stderr
    assert (granted.returncode, granted.stdout, granted.stderr) == (0, lines([key(name)]), "")


def test_a_person_without_a_uid_number_gets_no_keys_for_a_local_account_of_their_name(
    directory: ThrowawaySlapd, config_for: ConfigFor,
) -> None:
    """Nothing shows the account is theirs. With no local account of that name, there is
    nothing to take over: the keys are theirs (sshd needs an account to log in to)."""
    require_root()
    name = "sk-numberless"
    directory.add_ldif(person_ldif(name, [key(name)]))
    add_member(directory, PROJECT, name)
    config = config_for(MEMBER_HOST)
    [local_uid] = free_uids(1)

    with local_account(name, local_uid):
        refused = run_installed("--config", str(config), name)
    granted = run_installed("--config", str(config), name)

    assert (refused.returncode, refused.stdout) == (1, "")
    assert (f"a local account {name!r} (uid {local_uid}) exists, and the directory gives this "
            "person no uidNumber") in refused.stderr
    assert (granted.returncode, granted.stdout) == (0, lines([key(name)]))


# Names that must never reach the directory.


@pytest.fixture
def unreachable_config(tmp_path: Path) -> Path:
    """A configuration whose directory nobody serves: any query would exit 3."""
    path = tmp_path / "opslab.yaml"
    path.write_text(f"ldap:\n  uri: ldap://127.0.0.1:{free_port()}\n  base: {BASE}\n"
                    f"apply:\n  certname: {MEMBER_HOST}\n", encoding="utf-8")
    return path


def test_a_valid_name_with_the_unreachable_config_does_query(
    unreachable_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "--config", str(unreachable_config), "sk-member")
    assert (status, out) == (3, "")
    assert "the directory could not be asked" in err


@pytest.mark.parametrize(
    "name",
    ["*", "alice)(uid=*", "../etc/passwd", "alice\n", "Alice", "-o", "", "a" * 40,
     "alice bob", "al\u00efce", "alice\x00", "\\2a"],
)
def test_hostile_names_are_refused_before_any_query(
    unreachable_config: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    status, out, err = run(capsys, "--config", str(unreachable_config), name)
    assert (status, out) == (2, "")
    assert "error" in err
    assert "directory" not in err


def test_hostile_name_refused_by_the_installed_command(unreachable_config: Path) -> None:
    result = run_installed("--config", str(unreachable_config), "alice)(uid=*")
    assert (result.returncode, result.stdout) == (2, "")
    assert "is not a login name" in result.stderr


# The directory cannot be asked: access denied.


@pytest.mark.parametrize(
    ("settings", "reason"),
    [({"ldap": {"base": "dc=nowhere,dc=org"}}, "does not exist"),
     ({"ldap": {"base": ""}}, "ldap.base is not set"),
     ({"apply": {"certname": "Member.sshkeys.example.org"}}, "not a lowercase DNS name"),
     ({"ldap": {"tiemout": 1}}, "unknown keys: ldap.tiemout")],
)
def test_misconfiguration_denies(config_for: ConfigFor, capsys: pytest.CaptureFixture[str],
                                 settings: dict[str, dict[str, object]], reason: str) -> None:
    status, out, err = run(capsys, "--config", str(config_for(MEMBER_HOST, **settings)),
                           "sk-member")
    assert (status, out) == (3, "")
    assert reason in err


def test_missing_config_file_denies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--config", str(tmp_path / "absent.yaml"), "sk-member")
    assert (status, out) == (3, "")
    assert "cannot read configuration file" in err


def test_refused_bind_denies_without_showing_the_password(
    tmp_path: Path, directory: ThrowawaySlapd, config_for: ConfigFor,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "bind.secret"
    secret.write_text(directory.root_password)
    ldap_settings = {"uri": directory.ldap_uri, "bind_dn": directory.root_dn,
                     "bind_password_file": str(secret)}
    config = config_for(MEMBER_HOST, ldap=ldap_settings)
    assert run(capsys, "--config", str(config), "sk-member")[0] == 0

    secret.write_text("wrong-password-value")
    status, out, err = run(capsys, "--config", str(config), "sk-member")
    assert (status, out) == (3, "")
    assert "invalid credentials" in err
    assert "wrong-password-value" not in err


def test_stopped_directory_denies(tmp_path: Path, private_slapd: ThrowawaySlapd,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "opslab.yaml", populate(private_slapd),
                          apply={"certname": MEMBER_HOST})
    assert run(capsys, "--config", str(config), "sk-member")[0] == 0
    private_slapd.stop()
    status, out, err = run(capsys, "--config", str(config), "sk-member")
    assert (status, out) == (3, "")
    assert "the directory could not be asked" in err


BUDGET = 2  # agent.ssh_keys_timeout in the frozen tests
MARGIN = 8  # process start-up on a busy machine; far below the uncapped ldap.* timeouts


@pytest.mark.parametrize("transport", ["ldapi", "tcp with bind"])
def test_frozen_directory_denies_within_the_deadline(
    tmp_path: Path, private_slapd: ThrowawaySlapd, capsys: pytest.CaptureFixture[str],
    transport: str,
) -> None:
    """A frozen slapd accepts connections but never answers: the capped timeouts must fire."""
    # ldap.* alone would wait 30 s per operation: only the cap keeps sshd's wait short.
    ldap_settings: dict[str, object] = {"connect_timeout": 30, "timeout": 30, "deadline": 60}
    if transport == "tcp with bind":
        secret = tmp_path / "bind.secret"
        secret.write_text(private_slapd.root_password)
        ldap_settings |= {"uri": private_slapd.ldap_uri, "bind_dn": private_slapd.root_dn,
                          "bind_password_file": str(secret)}
    config = write_config(tmp_path / "opslab.yaml", populate(private_slapd),
                          ldap=ldap_settings, apply={"certname": MEMBER_HOST},
                          agent={"ssh_keys_timeout": BUDGET})
    assert run(capsys, "--config", str(config), "sk-member")[0] == 0

    os.kill(private_slapd.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_installed("--config", str(config), "sk-member")
        elapsed = time.monotonic() - started
    finally:
        os.kill(private_slapd.pid, signal.SIGCONT)
    assert (result.returncode, result.stdout) == (3, "")
    assert "the directory could not be asked" in result.stderr
    assert elapsed < BUDGET + MARGIN


def test_every_ldap_timeout_is_capped_to_the_ssh_keys_timeout(
    config_for: ConfigFor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[LdapSettings] = []
    search = Directory.search

    def recording(self: Directory, searches: Sequence[Search]) -> object:
        used.append(self.settings)
        return search(self, searches)

    monkeypatch.setattr(Directory, "search", recording)
    config = config_for(MEMBER_HOST, ldap={"connect_timeout": 0.5, "timeout": 30, "deadline": 60},
                        agent={"ssh_keys_timeout": 1.5})
    assert run(capsys, "--config", str(config), "sk-member")[0] == 0
    # The shorter connect timeout stays; the longer ones come down to the budget.
    assert {(s.connect_timeout, s.timeout, s.deadline) for s in used} == {(0.5, 1.5, 1.5)}


def test_internal_error_is_not_mistaken_for_a_denial(
    config_for: ConfigFor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Directory, searches: Sequence[Search]) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(Directory, "search", broken)
    status, out, err = run(capsys, "--config", str(config_for(MEMBER_HOST)), "sk-member")
    assert (status, out) == (70, "")
    assert "internal error" in err
    assert "KeyError: 'a bug'" in err


# A real sshd asking the installed command, as on an instance.

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin:/bin")
LOGIN_USER = "sk-sshd-login"  # a local account (useradd) and a member in the directory
ROOTER = "sk-rooter"  # a member whose entry carries a second "uid: root" (populate)
SSHD_START_DEADLINE = 15.0


class Sshd(NamedTuple):
    """A running sshd, the private keys of this module's people, and its log."""

    port: int
    keys: dict[str, Path]
    command: Path
    log: Path


def _ssh_keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True, timeout=60)
    return path.with_suffix(".pub").read_text().strip()


def _wait_for_port(port: int, server: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + SSHD_START_DEADLINE
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test's sshd did not start (see its log)") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def sshd(directory: ThrowawaySlapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """sshd on a free loopback port whose AuthorizedKeysCommand is the installed command."""
    if os.geteuid() != 0:
        pytest.skip("a real sshd needs root (it runs its AuthorizedKeysCommand as a user)")
    if SSHD is None:
        pytest.skip("sshd is not installed (Debian package openssh-server)")
    assert COMMAND.exists(), "opslab-ssh-keys is not installed: pip install -e ."
    work = tmp_path_factory.mktemp("sshd")
    keys = {name: work / name for name in (LOGIN_USER, ROOTER)}
    public = {name: _ssh_keygen(path, f"{name}@test") for name, path in keys.items()}
    _ssh_keygen(work / "host_key", "host")
    # The member's local account is their own: the uid is their uidNumber.
    [login_uid] = free_uids(1)
    directory.add_ldif(person_ldif(LOGIN_USER, [public[LOGIN_USER]], *posix(login_uid)))
    add_member(directory, PROJECT, LOGIN_USER)
    connection = directory.connect()
    connection.modify_s(f"uid={ROOTER},{PEOPLE}",
                        [(ldap.MOD_ADD, "sshPublicKey", [public[ROOTER].encode()])])
    connection.unbind_s()
    config = write_config(work / "opslab.yaml", directory, apply={"certname": MEMBER_HOST})

    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                    "--uid", str(login_uid), "--comment", "opslab test", LOGIN_USER],
                   check=True, capture_output=True, timeout=60)
    # sshd runs the command only if it and every directory above it are root's
    # and writable by nobody else: not so below /tmp.
    commands = Path(tempfile.mkdtemp(prefix="opslab-test-sshd-", dir="/run"))
    privsep = Path("/run/sshd")  # made by Debian's ssh.service, which may never have run
    made_privsep = not privsep.exists()
    server: subprocess.Popen[bytes] | None = None
    try:
        command = commands / "opslab-ssh-keys"
        command.write_text(f"#!/bin/sh\nexec {shlex.quote(str(COMMAND))} "
                           f"--config {shlex.quote(str(config))} \"$@\"\n")
        command.chmod(0o755)
        if made_privsep:
            privsep.mkdir(mode=0o755)
        port = free_port()
        settings = work / "sshd_config"
        settings.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {work / 'host_key'}",
            "PidFile none", "AuthorizedKeysFile none",
            f"AuthorizedKeysCommand {command} %u", "AuthorizedKeysCommandUser root",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # sshd's own default: so only opslab-ssh-keys stands between a key and root.
            "PermitRootLogin prohibit-password",
            # PAM skips sshd's check of a locked password ("!" in /etc/shadow),
            # which would refuse root before the command is ever asked.
            "UsePAM yes", "LogLevel VERBOSE", ""]))
        log = work / "sshd.log"
        with log.open("wb") as stream:
            server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(settings)],
                                      stdin=subprocess.DEVNULL, stdout=stream, stderr=stream)
        _wait_for_port(port, server)
        yield Sshd(port, keys, command, log)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        subprocess.run(["userdel", LOGIN_USER], check=False, capture_output=True, timeout=60)
        shutil.rmtree(commands, ignore_errors=True)
        if made_privsep:
            shutil.rmtree(privsep, ignore_errors=True)


def ssh(server: Sshd, key: Path, login: str) -> subprocess.CompletedProcess[str]:
    """``ssh -i KEY LOGIN@127.0.0.1 id -un`` to the test's sshd, nothing else tried."""
    environment = {name: value for name, value in os.environ.items() if name != "SSH_AUTH_SOCK"}
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(server.port), "-i", str(key),
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
         f"{login}@127.0.0.1", "id -un"],
        capture_output=True, text=True, timeout=60, env=environment, check=False)


def test_sshd_lets_a_member_in_with_their_key(sshd: Sshd) -> None:
    result = ssh(sshd, sshd.keys[LOGIN_USER], LOGIN_USER)
    assert (result.returncode, result.stdout) == (0, f"{LOGIN_USER}\n"), result.stderr


def test_sshd_refuses_root_to_a_member_whose_entry_says_uid_root(sshd: Sshd) -> None:
    result = ssh(sshd, sshd.keys[ROOTER], "root")

    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert result.stdout == ""
    # Refused by opslab-ssh-keys (exit 1, not granted), not by anything else of sshd's.
    assert f"AuthorizedKeysCommand {sshd.command} root failed, status 1" in sshd.log.read_text()


def test_sshd_refuses_a_person_whose_name_is_someone_elses_local_account(
    sshd: Sshd, directory: ThrowawaySlapd, tmp_path: Path,
) -> None:
    """As ``nobody`` or the image's default user would be: a local account that is not the
    person's (another uid). The member with their own account gets in (above)."""
    name = "sk-sshd-impostor"
    public = _ssh_keygen(tmp_path / name, f"{name}@test")
    local_uid, their_uid = free_uids(2)
    directory.add_ldif(person_ldif(name, [public], *posix(their_uid)))
    add_member(directory, PROJECT, name)

    with local_account(name, local_uid, login_shell="/bin/sh"):
        result = ssh(sshd, tmp_path / name, name)

    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert result.stdout == ""
    assert f"AuthorizedKeysCommand {sshd.command} {name} failed, status 1" in sshd.log.read_text()
