"""The command-line client for members (client/, ``opslab projects|hosts|log|changes|runs|
keys``): the real ``opslab`` command in a process of its own, against the API served by
gunicorn and the real slapd, as carol (member of web), dave (member of nothing) and
olga (operations). One served API for the module."""

import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest

from opslab.slapd import ThrowawaySlapd, free_port
from tests.conftest import BASE, PASSWORDS, PEOPLE, PROJECTS, basic
from tests.http_stubs import Recorder, redirecting_to
from tests.served_api import ServedApi

BOT = "clibot"
BOT_PASSWORD = "clibot-account-secret"
REVISION = "89abcdef0123456789abcdef0123456789abcdef"
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\r\nfake: line"
# What a terminal must never get from a table: control characters but the line ends,
# C1 (CSI) and the right-to-left override.
FORBIDDEN = [chr(code) for code in range(32) if chr(code) != "\n"] + \
    [chr(code) for code in range(0x7F, 0xA0)] + ["\u202e"]


def field(text: str, name: str) -> str:
    """The value of the line ``name: value`` of ``text`` (as the client aligns it)."""
    [value] = [line.partition(":")[2].strip() for line in text.splitlines()
               if line.partition(":")[0] == name]
    return value


class Cli:
    """Runs ``opslab`` as a person, with the credentials in the environment."""

    def __init__(self, api: ServedApi, work: Path) -> None:
        self.api = api
        self.work = work
        self.home = work / "home"
        self.home.mkdir()
        self.outputs: list[str] = []  # every output and error, checked for passwords
        for uid, password in {**PASSWORDS, BOT: BOT_PASSWORD}.items():
            path = work / f"{uid}.password"
            path.write_text(password + "\n")
            path.chmod(0o600)

    def environment(self, user: str | None) -> dict[str, str]:
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("OPSLAB_") and key != "XDG_CONFIG_HOME"}
        environ["HOME"] = str(self.home)
        if user is not None:
            environ.update(OPSLAB_API_URL=self.api.url, OPSLAB_USER=user,
                           OPSLAB_PASSWORD_FILE=str(self.work / f"{user}.password"))
        return environ

    def __call__(self, *arguments: str, user: str | None = "carol",
                 env: dict[str, str] | None = None,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "opslab.cli", *arguments], capture_output=True, text=True,
            env={**self.environment(user), **(env or {})}, input=stdin, timeout=60,
            # Not the checkout: python -m puts its working directory first on sys.path.
            cwd=self.work, check=False)
        self.outputs += [result.stdout, result.stderr]
        return result

    def ok(self, *arguments: str, user: str | None = "carol") -> str:
        result = self(*arguments, user=user)
        assert result.returncode == 0, (arguments, result.stdout, result.stderr)
        return result.stdout

    def json(self, *arguments: str, user: str | None = "carol") -> Any:
        return json.loads(self.ok(*arguments, "--json", user=user))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, slapd: ThrowawaySlapd,
        people: None) -> Iterator[ServedApi]:
    """The API under gunicorn, with clibot (a member of the CI's project ci)."""
    with contextlib.suppress(ldap.ALREADY_EXISTS):
        slapd.add_ldif(f"dn: uid={BOT},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {BOT}\n"
                       f"cn: {BOT}\nsn: {BOT}\nuserPassword: {BOT_PASSWORD}\n")
    try:
        slapd.add_ldif(f"dn: cn=ci,{PROJECTS}\nobjectClass: groupOfNames\ncn: ci\n"
                       f"member: uid={BOT},{PEOPLE}\n")
    except ldap.ALREADY_EXISTS:
        connection = slapd.connect()
        with contextlib.suppress(ldap.TYPE_OR_VALUE_EXISTS):
            connection.modify_s(f"cn=ci,{PROJECTS}", [(ldap.MOD_ADD, "member",
                                                      [f"uid={BOT},{PEOPLE}".encode()])])
        connection.unbind_s()
    served = ServedApi(tmp_path_factory.mktemp("client-api"), slapd, BASE)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def cli(api: ServedApi, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(api, tmp_path_factory.mktemp("client"))


@pytest.fixture(autouse=True)
def _no_password_shown(cli: Cli) -> Iterator[None]:
    yield
    for text in cli.outputs:
        for password in (*PASSWORDS.values(), BOT_PASSWORD):
            assert password not in text
    cli.outputs.clear()


def test_projects_are_listed_shown_created_joined_left_and_branched(cli: Cli) -> None:
    created = cli.ok("projects", "create", "cliproj", "--description", "Client tests",
                     user="olga")
    assert field(created, "project") == "cliproj"
    assert field(created, "description") == "Client tests"
    listed = cli.ok("projects", "list")
    assert listed.splitlines()[0].split() == ["PROJECT", "BRANCH", "DESCRIPTION"]
    assert any(line.split()[:3] == ["cliproj", "production", "Client"]
               for line in listed.splitlines())
    assert {"name": "cliproj", "description": "Client tests", "branch": "production"} in \
        cli.json("projects", "list")

    joined = cli.json("projects", "members", "add", "cliproj", "carol", user="olga")
    assert "carol" in joined["members"]
    assert "carol" not in joined["owners"]
    assert field(cli.ok("projects", "show", "cliproj"), "owners") == "olga"
    assert cli.json("projects", "branch", "cliproj", "feature/cli")["branch"] == "feature/cli"
    assert cli.json("projects", "show", "cliproj")["branch"] == "feature/cli"
    left = cli.ok("projects", "members", "remove", "cliproj", "carol")
    assert field(left, "members") == "olga"
    # dave is no member: the API's words, exit 1.
    refused = cli("projects", "branch", "cliproj", "main", user="dave")
    assert refused.returncode == 1
    assert refused.stderr.startswith("opslab: HTTP 403: ")


def test_hosts_are_created_classified_shown_and_deleted(cli: Cli) -> None:
    token_file = cli.work / "cli1.token"
    created = cli.ok("hosts", "create", "web", "cli1", "--class", "motd",
                     "--param", "motd.port=8080", "--var", "colour=blue",
                     "--token-file", str(token_file))
    assert field(created, "host") == "cli1.web.example.org"
    assert f"the host's token is in {token_file} (mode 0600)" in created
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text().strip()) > 20
    assert token_file.read_text().strip() not in created

    host = cli.json("hosts", "set", "cli1.web.example.org", "--class", "greeter",
                    "--param", "greeter.names=[a, b]", "--param", "greeter.enabled=true",
                    "--param", "greeter.since=2024-01-01", "--var", "size=large",
                    "--remove-var", "colour", "--branch", "feature")
    assert host["classes"] == ["motd", "greeter"]
    assert host["class_parameters"] == {"motd": {"port": 8080}, "greeter": {
        "names": ["a", "b"], "enabled": True, "since": "2024-01-01"}}
    assert host["variables"] == {"size": "large"}
    assert host["branch"] == "feature"
    shown = cli.ok("hosts", "show", "cli1.web.example.org")
    assert field(shown, "parameter greeter.names") == '["a", "b"]'
    assert field(shown, "classes") == "motd, greeter"
    assert "cli1.web.example.org" in [h["name"] for h in
                                      cli.json("hosts", "list", "--project", "web",
                                               "--class", "greeter")]
    again = cli.json("hosts", "set", "cli1.web.example.org", "--remove-class", "greeter",
                     "--remove-param", "greeter.names", "--project-branch")
    assert again["classes"] == ["motd"]
    assert again["branch"] is None
    assert again["class_parameters"]["greeter"] == {"enabled": True, "since": "2024-01-01"}

    # The audit log has each change, with its diff.
    changes = cli.json("changes", "--target", "cli1.web.example.org", "--limit", "5")
    assert [change["action"] for change in changes] == ["host.update", "host.update",
                                                        "host.create"]
    table = cli.ok("changes", "--target", "cli1.web.example.org")
    assert table.splitlines()[0].split() == ["ID", "WHEN", "WHO", "ACTION", "TARGET",
                                             "PROJECT", "STATE"]
    diff = cli.ok("changes", str(changes[-2]["id"]))
    assert '+    "size": "large"' in diff
    assert '-    "colour": "blue"' in diff

    unasked = cli("hosts", "delete", "cli1.web.example.org")
    assert unasked.returncode == 2
    assert "give --yes" in unasked.stderr
    assert cli.ok("hosts", "delete", "cli1.web.example.org", "--yes") == \
        "deleted cli1.web.example.org\n"
    gone = cli("hosts", "show", "cli1.web.example.org")
    assert gone.returncode == 1
    assert gone.stderr.startswith("opslab: HTTP 404: ")


def test_a_refusal_is_the_apis_own_words_and_exit_1(cli: Cli, api: ServedApi) -> None:
    before = cli.json("hosts", "show", "web1.web.example.org", user="dave")
    refused = cli("hosts", "set", "web1.web.example.org", "--var", "owner=dave", user="dave")
    status, body = api.request("PATCH", "/v1/hosts/web1.web.example.org",
                               {"variables": {"owner": "dave"}}, basic("dave"))
    assert status == 403
    assert refused.returncode == 1
    assert refused.stderr == f"opslab: HTTP 403: {json.loads(body)['error']}\n"
    assert refused.stdout == ""
    assert cli.json("hosts", "show", "web1.web.example.org") == before


def test_the_server_admin_log_is_written_and_read(cli: Cli) -> None:
    said = cli.ok("log", "web", "restarted", "the cli's test service")
    assert said.startswith("logged as entry ")
    assert said.endswith(" of web by carol\n")
    [latest] = cli.json("log", "web", "--limit", "1", user="dave")  # anyone reads
    assert (latest["author"], latest["message"]) == ("carol", "restarted the cli's test service")
    table = cli.ok("log", "--limit", "3")
    assert table.splitlines()[0].split() == ["WHEN", "PROJECT", "WHO", "MESSAGE"]
    assert "restarted the cli's test service" in table
    refused = cli("log", "web", "I was here", user="dave")
    assert refused.returncode == 1
    assert refused.stderr.startswith("opslab: HTTP 403: ")


def test_ci_runs_are_listed_filtered_and_shown(cli: Cli, api: ServedApi) -> None:
    bot = {"Authorization": "Basic " + base64.b64encode(
        f"{BOT}:{BOT_PASSWORD}".encode()).decode()}
    run = {"event_key": "client test 4242,1", "project": "operations/puppet", "change": 4242,
           "patchset": 1, "revision": REVISION, "branch": "production",
           "subject": "motd: a new greeting", "trigger": "check infra",
           "requested_by": "carol"}
    status, body = api.request("POST", "/v1/ci/runs", run, bot)
    assert status == 201, body
    run_id = json.loads(body)["id"]
    runs = cli.json("runs", "--change", "4242")
    assert [(r["id"], r["state"], r["subject"]) for r in runs] == \
        [(run_id, "queued", run["subject"])]
    assert cli.json("runs", "--change", "4242", "--state", "passed") == []
    table = cli.ok("runs", "--change", "4242")
    assert table.splitlines()[0].split() == ["ID", "CHANGE", "STATE", "VOTE", "PROJECT",
                                             "ASKED", "BY", "SUBJECT"]
    assert "4242,1  queued" in table
    assert "motd: a new greeting" in table
    one = cli.ok("runs", str(run_id))
    assert field(one, "state") == "queued"
    assert field(one, "asked") == "check infra by carol"
    assert cli.json("runs", str(run_id))["message"] is None
    bad = cli("runs", "--state", "nonsense")
    assert bad.returncode == 2


def test_keys_are_added_listed_and_removed_and_private_keys_never_sent(cli: Cli) -> None:
    key = cli.work / "id_cli"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "carol cli",
                    "-f", str(key)], check=True, timeout=30)
    before = cli.json("keys", "list")
    added = cli.json("keys", "add", f"{key}.pub")
    fingerprint = added["fingerprint"]
    assert fingerprint.startswith("SHA256:")
    assert added["comment"] == "carol cli"
    assert fingerprint in [k["fingerprint"] for k in cli.json("keys", "list")]
    assert fingerprint in cli.ok("keys", "list", "carol", user="dave")
    again = cli("keys", "add", "-", stdin=(key.parent / "id_cli.pub").read_text())
    assert again.returncode == 1
    assert again.stderr.startswith("opslab: HTTP 409: ")

    private = cli("keys", "add", str(key))
    assert private.returncode == 2
    assert "is a private key: it was not sent" in private.stderr
    assert "PRIVATE" not in private.stderr + private.stdout
    assert cli.json("keys", "list") == [*before, added]

    foreign = cli("keys", "remove", fingerprint, "--person", "carol", user="dave")
    assert foreign.returncode == 1
    assert foreign.stderr == \
        "opslab: HTTP 403: only carol and operations may change carol's keys\n"
    assert cli.ok("keys", "remove", fingerprint) == f"removed {fingerprint} from carol's keys\n"
    assert cli.json("keys", "list") == before


def test_a_hostile_description_is_shown_inert(cli: Cli, slapd: ThrowawaySlapd) -> None:
    cli.ok("projects", "create", "clievil", "--description", "harmless", user="olga")
    # The API refuses C0 controls in a description; an entry written by hand has any.
    connection = slapd.connect()
    connection.modify_s(f"cn=clievil,{PROJECTS}",
                        [(ldap.MOD_REPLACE, "description", [HOSTILE.encode()])])
    connection.unbind_s()
    listed = cli.ok("projects", "list")
    shown = cli.ok("projects", "show", "clievil")
    for text in (listed, shown):
        assert not [char for char in FORBIDDEN if char in text]
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\r\\nfake: line" in text
    [line] = [line for line in listed.splitlines() if line.startswith("clievil ")]
    assert line.endswith("evil\\r\\nfake: line")
    assert cli.json("projects", "show", "clievil")["description"] == HOSTILE
    raw = cli.ok("projects", "show", "clievil", "--json")
    assert not [char for char in FORBIDDEN if char in raw]


def write_credentials(cli: Cli, text: str, mode: int) -> Path:
    path = cli.home / ".config" / "opslab" / "credentials"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_come_from_a_file_readable_by_its_owner_alone(cli: Cli) -> None:
    password = PASSWORDS["carol"]
    path = write_credentials(cli, f"url: {cli.api.url}\nuser: carol\npassword: {password}\n",
                             0o644)
    refused = cli("projects", "list", user=None)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == (
        f"opslab: the credentials file {path} has mode 0644: others may read or change it, "
        f"so it is not used (and the password in it should be changed if anyone did). "
        f"Run: chmod 600 {path}\n")
    path.chmod(0o600)
    assert "web" in [p["name"] for p in cli.json("projects", "list", user=None)]
    write_credentials(cli, f"[opslab]\nurl = {cli.api.url}\nuser = olga\n"
                           f"password = {PASSWORDS['olga']}\n", 0o600)
    assert "olga" in cli.json("projects", "show", "operations", user=None)["members"]
    # The environment's user and password file come first: dave, whom web refuses.
    refused = cli("log", "web", "who am I", user="dave")
    assert refused.returncode == 1
    assert refused.stderr.startswith("opslab: HTTP 403: ")

    # A file that does not parse is named by its line, never quoted.
    write_credentials(cli, f"url: {cli.api.url}\nuser: carol\npassword: [{password}\n", 0o600)
    broken = cli("projects", "list", user=None)
    assert broken.returncode == 2
    assert "is not valid YAML (line " in broken.stderr
    write_credentials(cli, f"[opslab]\nurl = {cli.api.url}\n{password}\n", 0o600)
    broken = cli("projects", "list", user=None)
    assert broken.returncode == 2
    assert "is not valid INI (line 3)" in broken.stderr
    write_credentials(cli, f"url: {cli.api.url}\nuser: carol\npasswd: {password}\n", 0o600)
    unknown = cli("projects", "list", user=None)
    assert unknown.returncode == 2
    assert "unknown keys passwd" in unknown.stderr

    # A wrong password: the API's words.
    write_credentials(cli, f"url: {cli.api.url}\nuser: carol\npassword: not-{password}\n",
                      0o600)
    wrong = cli("projects", "list", user=None)
    assert (wrong.returncode, wrong.stderr) == \
        (1, "opslab: HTTP 401: invalid user name or password\n")
    os.unlink(path)

    nothing = cli("projects", "list", user=None)
    assert nothing.returncode == 2
    assert "no credentials: set OPSLAB_API_URL" in nothing.stderr
    loose = cli.work / "loose.password"
    loose.write_text(password)
    loose.chmod(0o640)
    refused = cli("projects", "list", env={"OPSLAB_PASSWORD_FILE": str(loose)})
    assert refused.returncode == 2
    assert "has mode 0640" in refused.stderr
    cleartext = cli("projects", "list", env={"OPSLAB_API_URL": "http://opslab.example.org"})
    assert cleartext.returncode == 2
    assert "your password would travel readable" in \
        cleartext.stderr
    # There is no password option.
    option = cli("projects", "list", "--password", password)
    assert option.returncode == 2
    assert "unrecognized arguments" in option.stderr
    cli.outputs.remove(option.stderr)  # argparse repeats what it was given


def test_an_api_that_does_not_answer_is_exit_3_within_the_timeout(
        cli: Cli, hanging_server: int) -> None:
    closed = cli("projects", "list", env={"OPSLAB_API_URL": f"http://127.0.0.1:{free_port()}"})
    assert closed.returncode == 3
    assert closed.stdout == ""
    assert closed.stderr.startswith("opslab: the API is unavailable: http://127.0.0.1:")
    started = time.monotonic()
    hanging = cli("hosts", "list", "--timeout", "1",
                  env={"OPSLAB_API_URL": f"http://127.0.0.1:{hanging_server}"})
    assert time.monotonic() - started < 10
    assert hanging.returncode == 3
    assert hanging.stderr.endswith("no complete answer within 1 s\n")


def test_bad_usage_is_exit_2(cli: Cli) -> None:
    nothing = cli("hosts", "set", "web1.web.example.org")
    assert nothing.returncode == 2
    assert "nothing to change" in nothing.stderr
    for arguments in (["--param", "motd"], ["--param", "motd=1"], ["--var", "novalue"],
                      ["--param", "motd.x=[unclosed"]):
        bad = cli("hosts", "set", "web1.web.example.org", *arguments)
        assert bad.returncode == 2, (arguments, bad.stderr)
    assert cli("changes", "--limit", "0").returncode == 2
    assert cli("projects").returncode == 2


def test_the_client_needs_only_the_base_install(cli: Cli) -> None:
    """The API's libraries (and python-ldap) out of reach: the client still works."""
    blocked = ("ldap", "flask", "sqlalchemy", "alembic", "gunicorn", "jsonschema")
    program = (f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
               "from opslab.cli import main\n"
               "status = main(['projects', 'list', '--json'])\n"
               f"assert not set({blocked!r}) & {{n for n, m in sys.modules.items() if m}}\n"
               "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=cli.environment("carol"), cwd=cli.work, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "web" in [project["name"] for project in json.loads(result.stdout)]


def test_a_redirect_or_an_answer_that_is_not_the_apis_is_exit_3(cli: Cli) -> None:
    with redirecting_to("https://elsewhere.example.org") as redirecting:
        moved = cli("projects", "list", env={"OPSLAB_API_URL": redirecting.url})
    assert len(redirecting.requests) == 1  # asked once, never followed
    assert moved.returncode == 3
    assert moved.stderr == (f"opslab: the API is unavailable: {redirecting.url} answered with "
                            "a redirect, which the client never follows (your password would "
                            "go along): set OPSLAB_API_URL, or url in the credentials file, "
                            "to the API's own URL\n")
    with Recorder(200, b"<html>\x1b[2Jnot the API</html>") as other:
        wrong = cli("projects", "list", env={"OPSLAB_API_URL": other.url})
    assert wrong.returncode == 3
    assert wrong.stderr == (f"opslab: the API is unavailable: {other.url}: the answer to GET "
                            "/v1/projects is not JSON: is this the API's URL?\n")
    with Recorder(200, b'{"projects": []}') as another:
        shaped = cli("projects", "list", env={"OPSLAB_API_URL": another.url})
    assert shaped.returncode == 3
    assert "answered JSON that is not what this client expects" in shaped.stderr
