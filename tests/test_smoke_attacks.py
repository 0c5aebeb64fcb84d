"""Attacks on the smoke tests, as the project's guide demands: a hostile project's check
files and parameters, hostile servers and commands, an agent whose checks break or take
for ever, an API with a small body limit. Real processes, sockets, files and the API
under gunicorn; each test fails on the hole it was written against.
"""

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from opslab.agent import agent as agent_module
from opslab.agent.agent import Agent
from opslab.branchrunner.environments import EnvironmentsDirectory
from opslab.config import load
from opslab.slapd import ThrowawaySlapd
from opslab.smoketests import results, runner, spec
from opslab.smoketests.runner import Result
from opslab.smoketests.spec import CheckFileError
from tests.checkfiles import CERTNAME, CLASS, one, run, run_one, values, write
from tests.checkfiles import load as load_checks
from tests.conftest import BASE, basic
from tests.http_stubs import Recorder, Trickler
from tests.processes import settle
from tests.served_api import ServedApi

SOURCE = "modules/smoke/checks.yaml"
OPSLAB = str(Path(sys.executable).parent / "opslab")


def refusal(tree: Path) -> list[str]:
    with pytest.raises(CheckFileError) as refused:
        spec.checks_for(str(tree), [CLASS])
    return refused.value.problems


def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real ``opslab`` command, as a person or Jenkins runs it."""
    return subprocess.run([OPSLAB, *argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def cli_measured(*argv: str, timeout: float = 60) -> tuple[int, str, str, int]:
    """The real ``opslab`` command: exit status, stdout, stderr and its peak memory (KiB)."""
    started = time.monotonic()
    command = subprocess.Popen([OPSLAB, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    out, err = [], []
    readers = [threading.Thread(target=lambda s=stream, k=kept: k.append(s.read()), daemon=True)
               for stream, kept in ((command.stdout, out), (command.stderr, err))]
    for reader in readers:
        reader.start()
    while True:
        pid, status, usage = os.wait4(command.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            command.kill()
            os.wait4(command.pid, 0)
            raise AssertionError(f"opslab {' '.join(argv)} still ran after {timeout} s")
        time.sleep(0.05)
    command.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(10)
    return (command.returncode, b"".join(out).decode(errors="replace"),
            b"".join(err).decode(errors="replace"), usage.ru_maxrss)


class Repo:
    """A control repository with one class's checks, and a classification for it."""

    def __init__(self, folder: Path, checks: list[dict[str, Any]],
                 params: dict[str, Any] | None = None) -> None:
        self.tree = folder / "tree"
        write(self.tree, {CLASS: checks})
        self.classification = folder / "classification.yaml"
        self.classification.write_text(yaml.safe_dump({"classes": {CLASS: params or {}},
                                                       "parameters": {}}))

    def run(self, *options: str) -> list[str]:
        return ["smoke", "run", "--tree", str(self.tree), "--classification",
                str(self.classification), "--certname", CERTNAME, *options]


# -- hostile check files --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [21, 500, 60000])
def test_deeply_nested_yaml_is_refused_not_a_crash(tmp_path: Path, depth: int) -> None:
    # PyYAML composes recursively: a few hundred "[" were a RecursionError, not a refusal.
    write(tmp_path, "smoke:\n  - name: c\n    command: {run: 'true', stdout: "
          + "[" * depth + "]" * depth + "}\n")

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: not valid YAML: nested deeper than 20 levels")


def test_validate_refuses_a_deep_file_with_status_2(tmp_path: Path) -> None:
    write(tmp_path, "smoke: " + "[" * 5000 + "]" * 5000 + "\n")

    validated = cli("smoke", "validate", str(tmp_path))

    assert validated.returncode == 2, validated.stderr
    assert "Traceback" not in validated.stderr
    assert "nested deeper than 20 levels" in validated.stderr


def test_two_hundred_checks_with_strings_just_under_the_limits_are_read_quickly(
        tmp_path: Path) -> None:
    checks = [{"name": f"{n:03d}" + "n" * 196,
               "command": {"run": "true " + "x" * 1000, "stdout_absent": "y" * 10}}
              for n in range(spec.MAX_CHECKS)]
    path = write(tmp_path, {CLASS: checks})
    assert spec.MAX_FILE - 20000 < path.stat().st_size <= spec.MAX_FILE
    started = time.monotonic()

    found = spec.checks_for(str(tmp_path), [CLASS])

    assert len(found) == spec.MAX_CHECKS
    assert time.monotonic() - started < 3
    write(tmp_path, {CLASS: [{"name": f"c{n}", "command": {"run": "true"}} for n in range(201)]})
    assert refusal(tmp_path) == [f"{SOURCE}: class smoke: has 201 checks, more than 200"]


@pytest.mark.parametrize("name", ["nul \x00 in it", "two\nlines", "escape \x1b]0;owned\x07",
                                  "right-to-left \u202etxt.exe", "isolate \u2066x\u2069",
                                  "line \u2028 separator"])
def test_a_name_with_control_or_formatting_characters_is_refused(tmp_path: Path,
                                                                 name: str) -> None:
    write(tmp_path, {CLASS: [{"name": name, "command": {"run": "true"}}]})

    (problem,) = refusal(tmp_path)
    assert problem.endswith("name: must be a text of 1 to 200 characters, without control "
                            "or formatting characters")
    assert name not in problem  # shown escaped (repr), never as it is


def test_what_validate_prints_of_a_hostile_file_is_shown_not_obeyed(tmp_path: Path) -> None:
    # An unknown key and a YAML error that quotes its line, both holding terminal escapes.
    write(tmp_path, {CLASS: [{"name": "c", "command": {"run": "true"},
                              "\x1b]0;owned\x07\x1b[2J": 1}]})
    write(tmp_path, "other:\n  - {name: \"\x1b[31mred\", : :\n", "other")

    validated = cli("smoke", "validate", str(tmp_path))

    assert validated.returncode == 2
    assert "\x1b" not in validated.stderr
    assert "\x07" not in validated.stderr
    assert "\\x1b]0;owned\\x07\\x1b[2J: unknown key(s)" in validated.stderr
    assert "modules/other/checks.yaml: not valid YAML" in validated.stderr


def test_references_in_keys_and_keys_that_are_not_texts(tmp_path: Path) -> None:
    write(tmp_path, {CLASS: [{"name": "c", "command": {"run": "true"}, 7: "x",
                              None: "y"}]})
    problems = refusal(tmp_path)
    assert problems == [f"{SOURCE}: class smoke: check 'c': 7, None: unknown key(s); a check "
                        f"takes name, timeout, wait, outside and one of port, http, service, "
                        f"process, file, command, package, user, group"]
    write(tmp_path, "smoke:\n  - {name: c, command: {run: 'true', 3: x}}\n")
    assert refusal(tmp_path)[0].startswith(f"{SOURCE}: class smoke: check 'c': command: 3: "
                                           f"unknown field")
    write(tmp_path, "1: []\nnull: []\n")
    assert len(refusal(tmp_path)) == 2

    # A reference in a header's name is not one: it is never filled, so it reads nothing.
    with Recorder(200, b"ok", {"X-${param.secret}": "v"}) as site:
        result = run_one(tmp_path, "http", {"url": site.url + "/",
                                            "headers": {"X-${param.secret}": "v"}},
                         params={"secret": "filled"})
    assert result.status == "passed", result.message


# -- regular expressions that never end ------------------------------------------------------


def test_a_pattern_that_crashes_the_compiler_is_refused_when_read(tmp_path: Path) -> None:
    for pattern in ("(" * 5000 + ")" * 5000, "a{4294967296}"):
        write(tmp_path, {CLASS: [{"name": "c", "file": {"path": "/etc/hostname",
                                                        "matches": pattern}}]})
        (problem,) = refusal(tmp_path)
        assert ": file: matches is not a regular expression: " in problem


def test_a_pattern_filled_in_that_cannot_compile_fails_saying_so(tmp_path: Path) -> None:
    result = run_one(tmp_path, "file", {"path": "/etc/hostname", "matches": "${param.p}"},
                     params={"p": "(" * 5000 + ")" * 5000})

    assert result.status == "failed"
    assert result.message.startswith("matches could not be tried: RecursionError")


def test_a_pattern_that_matches_or_not_as_before(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("name = x\nport = 8181\n")
    found = run_one(tmp_path, "file", {"path": str(conf), "matches": "^port = [0-9]+$"})
    missing = run_one(tmp_path, "file", {"path": str(conf), "matches": "^host = "})

    assert found.status == "passed", found.message
    assert (missing.status, missing.message) == (
        "failed", f"no line of {conf} matches '^host = '")


def test_a_regex_bomb_is_stopped_at_its_timeout_and_the_command_exits(tmp_path: Path) -> None:
    """(a+)+$ against a line of a's that ends otherwise takes years; in-process it held the
    interpreter's lock, so neither the runner's deadline nor anything else could run, and
    `opslab smoke run` (and the agent, holding its lock) hung for ever."""
    big = tmp_path / "big.log"
    big.write_text(("a" * 40 + "!\n") * 20000)
    marker = f"zz{os.getpid()}x{time.monotonic_ns()}"
    repo = Repo(tmp_path, [
        {"name": "bomb", "file": {"path": str(big), "matches": f"^(?:{marker})?(a+)+$"},
         "timeout": 1},
        {"name": "quick", "command": {"run": "true"}}])
    started = time.monotonic()

    status, out, err, _ = cli_measured(*repo.run("--json"), timeout=30)

    assert time.monotonic() - started < 10
    assert status == 1, err
    bomb, quick = json.loads(out)["results"]
    assert bomb["status"] == "failed"
    assert bomb["message"].startswith(f"matching '^(?:{marker})?(a+)+$' against {big} took "
                                      f"longer than 1 s and was stopped")
    assert quick["status"] == "passed"
    assert settle(marker) == []  # the child trying the pattern is gone too


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["x; touch {p}", "$(touch {p})", "`touch {p}`",
                                  "x' && touch {p} && echo '", "x\ntouch {p}", "-n"])
def test_a_parameter_cannot_add_a_command_to_a_shell_line(tmp_path: Path, word: str) -> None:
    pwned = tmp_path / "pwned"
    value = word.format(p=pwned)

    result = run_one(tmp_path, "command", {"run": "echo ${param.word} ${fact.nothing}end",
                                           "stdout": value},
                     params={"word": value})

    assert not pwned.exists()
    assert result.status == "failed"  # ${fact.nothing} has no value: nothing ran at all
    result = run_one(tmp_path, "command", {"run": "printf '%s\\n' ${param.word}",
                                           "stdout": value + "\n"}, params={"word": value})
    assert not pwned.exists()
    assert result.status == "passed", (result.message, result.output)


@pytest.mark.parametrize("line", ['echo "${param.word}"', "echo '${param.word}'",
                                  "echo \"a ${param.word} b\"", "echo 'x'\"${param.word}\""])
def test_a_reference_inside_quotes_in_a_shell_line_is_refused(tmp_path: Path, line: str) -> None:
    write(tmp_path, {CLASS: [{"name": "c", "command": {"run": line}}]})

    (problem,) = refusal(tmp_path)
    assert problem.endswith("${param.word} stands inside quotes: in a shell line a value is "
                            "filled in quoted for the shell already; write it unquoted")


def test_references_outside_quotes_and_in_argument_lists_are_fine(tmp_path: Path) -> None:
    checks = load_checks(tmp_path, [
        {"name": "unquoted", "command": {"run": "echo 'say:' ${param.word} \\\"x\\\"",
                                         "stdout": "say: two words \"x\""}},
        {"name": "a list", "command": {"run": ["echo", "${param.word}"],
                                       "stdout": "two words"}},
        {"name": "a literal", "command": {"run": "echo '$${param.word}'",
                                          "stdout": "$${param.word}"}}])

    found = run(checks, filled=values(params={"word": "two words"}))

    assert [result.status for result in found] == ["passed"] * 3, found


def test_a_huge_parameter_filled_in_fails_the_check_with_a_short_message(tmp_path: Path) -> None:
    result = run_one(tmp_path, "http", {"url": "http://127.0.0.1:1/${param.path}"},
                     params={"path": "p" * 20000})

    assert result.status == "failed"
    assert result.message == ("url: must be a text without NUL of at most 10000 characters "
                              "(after filling in its references)")


def test_a_catalog_nested_too_deep_is_refused_not_a_crash(tmp_path: Path) -> None:
    repo = Repo(tmp_path, [{"name": "c", "command": {"run": "true"}}])
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"resources": [{"type": "Class", "title": "smoke", "parameters": '
                       '{"deep": ' + "[" * 100000 + "]" * 100000 + "}}]}")
    classification = tmp_path / "deep.yaml"
    classification.write_text("classes: {smoke: {p: " + "[" * 5000 + "]" * 5000 + "}}\n")

    from_catalog = cli(*repo.run("--catalog", str(catalog)))
    from_classification = cli("smoke", "run", "--tree", str(repo.tree), "--classification",
                                 str(classification), "--certname", CERTNAME)

    for done in (from_catalog, from_classification):
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
    assert f"the catalog {catalog} cannot be read: " in from_catalog.stderr
    assert f"--classification {classification}: " in from_classification.stderr


# -- commands and servers --------------------------------------------------------------------


def test_a_command_printing_hundreds_of_megabytes_costs_no_memory(tmp_path: Path) -> None:
    repo = Repo(tmp_path, [
        {"name": "asks about its output", "command": {"run": "head -c 300000000 /dev/zero; "
                                                      "echo done", "stdout": "done"}},
        {"name": "only its status", "command": {"run": "head -c 300000000 /dev/zero"}},
        {"name": "on stderr", "command": {"run": "head -c 300000000 /dev/zero >&2",
                                          "stdout_absent": "error"}}])

    status, out, err, peak = cli_measured(*repo.run("--json"), timeout=120)

    assert status == 1, err
    asks, only, stderr = json.loads(out)["results"]
    assert (asks["status"], asks["message"]) == (
        "failed", "'head -c 300000000 /dev/zero; echo done' printed more than 1 MiB: its "
                  "output is not checked")
    assert only["status"] == "passed", only["message"]
    assert stderr["status"] == "failed"
    # Kept whole, the 900 MB would take close to two gigabytes (bytes, then text); bounded,
    # about 100 MiB on a quiet machine, and up to 640 MiB seen while the whole suite ran
    # beside it (ru_maxrss counts the command's children and the allocator's slack).
    assert peak < 1024 * 1024, f"opslab smoke run grew to {peak // 1024} MiB"


def test_a_command_that_closes_its_output_and_runs_on_is_stopped(tmp_path: Path) -> None:
    marker = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
    result = run_one(tmp_path, "command", {"run": f"exec >&- 2>&-; sleep {marker}"},
                     timeout=1)

    assert result.status == "failed"
    assert result.message.endswith("ran past 1 s and was stopped")
    assert settle(marker) == []


def served_threads_end(server: Trickler, seconds: float = 3.0) -> bool:
    """Whether every connection the trickler served ended (the client went away)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.threads and not any(thread.is_alive() for thread in server.threads):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("trickled", "body"), [("body", b"hello " + b"x" * 100000),
                                                ("head", b"")])
def test_a_server_that_trickles_is_cut_off_at_the_timeout(tmp_path: Path, trickled: str,
                                                          body: bytes) -> None:
    """A socket's timeout bounds each wait for a byte: one byte every 0.1 s never trips it.
    The check must fail at its timeout, and nothing may go on reading afterwards (the
    agent is a long-running process)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
    with Trickler(head, body, trickled, interval=0.1) as server:
        started = time.monotonic()
        result = run_one(tmp_path, "http", {"url": server.url + "/", "body": "hello"},
                         timeout=1)
        took = time.monotonic() - started
        gone = served_threads_end(server)

    assert (result.status, result.message) == (
        "failed", f"{server.url}/: no complete answer within 1 s")
    assert took < 2.5
    assert gone, "the abandoned check still reads from the server"


class Listener:
    """A TCP listener that records whether anything connected (an FTP server, a service
    only the CI host's network reaches)."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.socket = socket.create_server((address, 0))
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]

    def connected(self) -> bool:
        try:
            connection, _ = self.socket.accept()
        except TimeoutError:
            return False
        connection.close()
        return True

    def close(self) -> None:
        self.socket.close()


@contextlib.contextmanager
def listening() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.close()


def test_a_redirect_to_ftp_or_file_is_not_followed(tmp_path: Path) -> None:
    with listening() as ftp, Recorder(302, b"", {"Location": f"ftp://127.0.0.1:{ftp.port}/x"}) \
            as to_ftp, Recorder(302, b"", {"Location": "file:///etc/passwd"}) as to_file:
        ftp_result = run_one(tmp_path, "http", {"url": to_ftp.url + "/"}, timeout=3)
        file_result = run_one(tmp_path, "http", {"url": to_file.url + "/"}, timeout=3)
        reached = ftp.connected()

    assert not reached, "the redirect to ftp:// was followed"
    assert (ftp_result.status, ftp_result.message) == (
        "failed", f"{to_ftp.url}/ redirects to 'ftp://127.0.0.1:{ftp.port}/x', which is not "
                  f"http:// or https://: not followed")
    assert file_result.status == "failed"
    assert file_result.message.startswith(f"{to_file.url}/ answered 302 (")
    assert file_result.message.endswith("to url 'file:///etc/passwd' is not allowed), not 200")
    assert "root:" not in file_result.message + file_result.output


def test_a_redirect_loop_fails_quickly_saying_so(tmp_path: Path) -> None:
    with Recorder(302, b"", {"Location": "/loop"}) as looping:
        started = time.monotonic()
        result = run_one(tmp_path, "http", {"url": looping.url + "/loop"}, timeout=5)

    assert time.monotonic() - started < 3
    assert (result.status, result.message) == (
        "failed", f"{looping.url}/loop answered 302 (The HTTP server returned a redirect error "
                  f"that would lead to an infinite loop.), not 200")


def test_an_outside_check_of_another_address_is_refused_when_read(tmp_path: Path) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/", "http://${param.host}/",
                "http://${target}.evil.example/", "https://x${target}/"):
        write(tmp_path, {CLASS: [{"name": "c", "http": {"url": url}, "outside": True}]})
        (problem,) = refusal(tmp_path)
        assert problem.endswith("seen from outside, a check looks at the target: write "
                                "http://${target}:PORT/..."), problem
    for url in ("http://${target}/", "https://${target}:8443/health",
                "http://[${target}]:80/", "http://${target}?q"):
        one(tmp_path, "http", {"url": url}, outside=True)


def test_an_outside_check_goes_nowhere_but_the_target(tmp_path: Path) -> None:
    """Run by the CI harness from its network: a parameter that moves the url's host, or a
    redirect from the target, must not make it fetch an internal address."""
    with Recorder(200, b"internal secret") as internal, \
            Recorder(302, b"", {"Location": f"http://localhost:{internal.url.rsplit(':', 1)[1]}"
                                            f"/secret"}) as target_away, \
            Recorder(200, b"the target") as target:
        internal_port = internal.url.rsplit(":", 1)[1]
        moved = run_one(tmp_path, "http", {"url": "http://${target}:${param.port}/"},
                        target="127.0.0.1", params={"port": f"1@localhost:{internal_port}"},
                        outside=True)
        away_port = target_away.url.rsplit(":", 1)[1]
        redirected = run_one(tmp_path, "http", {"url": "http://${target}:${param.port}/"},
                             target="127.0.0.1", params={"port": away_port}, outside=True)
        fine = run_one(tmp_path, "http", {"url": "http://${target}:${param.port}/",
                                          "body": "the target"},
                       target="127.0.0.1", params={"port": target.url.rsplit(":", 1)[1]},
                       outside=True)

    assert internal.requests == []
    assert (moved.status, moved.message) == (
        "failed", f"url 'http://127.0.0.1:1@localhost:{internal_port}/' is not at the target "
                  f"127.0.0.1: seen from outside, a check looks at the target only")
    assert (redirected.status, redirected.message) == (
        "failed", f"http://127.0.0.1:{away_port}/ redirects to 'http://localhost:"
                  f"{internal_port}/secret', away from the target: not followed from outside")
    assert "internal secret" not in redirected.output
    assert fine.status == "passed", fine.message


def test_an_outside_check_cannot_send_the_observers_facts_to_its_instance(
        tmp_path: Path) -> None:
    """The CI harness's own facts (FACTER_ variables, facts.d, its addresses) are not the
    target's: filled into an outside check's url, they would go to the project's instance."""
    with Recorder(200, b"ok") as target:
        port = target.url.rsplit(":", 1)[1]
        repo = Repo(tmp_path, [
            {"name": "leaks", "outside": True,
             "http": {"url": "http://${target}:${param.port}/${fact.ci_secret}"}},
            {"name": "leaks an address", "outside": True,
             "http": {"url": "http://${target}:${param.port}/${fact.ipaddress}"}},
            {"name": "names the host", "outside": True,
             "http": {"url": "http://${target}:${param.port}/${fact.hostname}/${fact.domain}"}}],
            params={"port": int(port)})
        done = subprocess.run([OPSLAB, *repo.run("--target", "127.0.0.1", "--json")],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "FACTER_ci_secret": "hunter2"})

    assert done.returncode == 1, done.stderr
    leaks, address, names = json.loads(done.stdout)["results"]
    assert leaks["message"] == "${fact.ci_secret}: ci_secret is not among the host's facts"
    assert address["message"] == "${fact.ipaddress}: ipaddress is not among the host's facts"
    assert names["status"] == "passed", names["message"]
    assert [path for _, path, _ in target.requests] == ["/smoke1/example.org"]


# -- the runner's budget ---------------------------------------------------------------------


def test_a_run_stops_at_its_budget(tmp_path: Path) -> None:
    marker = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
    checks = load_checks(tmp_path, [{"name": f"c{n}", "command": {"run": f"sleep {marker}"},
                                     "timeout": 30, "wait": {"timeout": 3600}}
                                    for n in range(20)])
    started = time.monotonic()

    found = runner.run(checks, lambda check: values(), None, concurrency=2, budget=1.0)

    assert time.monotonic() - started < 2
    assert [result.message for result in found] == \
        ["abandoned: the smoke tests ran past their 1 s"] * 2 + \
        ["not run: the smoke tests ran past their 1 s"] * 18
    assert all(result.status == "failed" for result in found)


# -- the agent -------------------------------------------------------------------------------


class Instance:
    """An agent's configuration and state, as an instance has them after an apply, without
    Puppet: the tree of its last commit, an ENC that prints its classification, no API
    unless one is given."""

    COMMIT = "c" * 40

    def __init__(self, folder: Path, checks: list[dict[str, Any]], api_url: str | None = None,
                 token: str = "") -> None:
        self.folder = folder
        state = folder / "state"
        state.mkdir(parents=True)
        (state / "last_apply.json").write_text(json.dumps({"environment": "production",
                                                           "commit": self.COMMIT}))
        environments = folder / "environments"
        tree = EnvironmentsDirectory(str(environments), 2, 3600).tree_path("production",
                                                                             self.COMMIT)
        write(tree, {CLASS: checks})
        enc = folder / "enc"
        enc.write_text("#!/bin/sh\necho 'classes: {smoke: {}}'\necho 'parameters: {}'\n")
        enc.chmod(0o755)
        token_file = folder / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        self.config = folder / "agent.yaml"
        self.config.write_text(yaml.safe_dump({
            "enc": {"api_url": api_url or "http://127.0.0.1:1", "api_token_file": str(token_file),
                    "api_timeout": 5},
            "branches": {"remote": str(folder / "nowhere.git"),
                         "environments": str(environments), "cache": str(folder / "cache")},
            "apply": {"certname": CERTNAME, "state_dir": str(state), "enc": str(enc)},
            "agent": {"sudoers_file": None, "smoke_interval": 60, "apply_interval": 1800}}))

    def agent(self) -> Agent:
        return Agent(load(str(self.config)), "0.1.0-test")

    def catalog(self, text: str) -> None:
        path = self.folder / "state" / "client_data" / "catalog" / f"{CERTNAME}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checks_that_break_never_take_the_agents_summary_away(tmp_path: Path) -> None:
    instance = Instance(tmp_path, [{"name": "c", "command": {"run": "true"}}])
    instance.catalog('{"resources": [' + "[" * 100000 + "]" * 100000 + "]}")

    summary = instance.agent()._smoke()

    assert summary["error"] is not None
    assert "cannot be read" in summary["error"]
    assert (summary["passed"], summary["failed"]) == (0, 0)


def test_an_enc_that_fails_during_the_checks_is_the_summarys_error(tmp_path: Path) -> None:
    instance = Instance(tmp_path, [{"name": "c", "command": {"run": "true"}}])
    (tmp_path / "enc").write_text("#!/bin/sh\necho 'the directory is down' >&2\nexit 1\n")

    summary = instance.agent()._smoke()

    assert summary["error"] == (f"the ENC refused {CERTNAME} (exit 1): the directory is down")
    assert (summary["passed"], summary["failed"], summary["failures"]) == (0, 0, [])


def test_the_agent_checks_within_its_budget(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    marker = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
    instance = Instance(tmp_path, [{"name": f"waits {n}", "command": {"run": f"sleep {marker}"},
                                    "timeout": 20} for n in range(3)])
    monkeypatch.setattr(agent_module, "SMOKE_BUDGET", 1.5)
    started = time.monotonic()

    summary = instance.agent()._smoke()

    assert time.monotonic() - started < 4
    assert summary["failed"] == 3
    assert {item["message"] for item in summary["failures"]} == {
        "abandoned: the smoke tests ran past their 1.5 s"}
    assert settle(marker, 25) == []  # each command is still stopped at its own timeout


def test_a_check_cannot_forge_a_line_of_the_agents_log(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    instance = Instance(tmp_path, [{"name": "forges", "file": {
        "path": "/opslab/nothing\nerror opslab.agent: the API refused everything\x1b[2K"}}])
    caplog.set_level(logging.INFO, logger="opslab")

    summary = instance.agent()._smoke()

    assert summary["failed"] == 1
    lines = [record.getMessage() for record in caplog.records
             if record.name.startswith("opslab.agent")]
    (failed,) = [line for line in lines if line.startswith("smoke check failed")]
    assert failed == ("smoke check failed: smoke: forges: /opslab/nothing\\x0aerror "
                      "opslab.agent: the API refused everything\\x1b[2K does not exist")
    assert not any("\n" in line or "\x1b" in line for line in lines)


def test_smoke_checks_go_on_while_puppet_runs_are_disabled(tmp_path: Path) -> None:
    """Past agent.apply_interval a run is due on every check; disabled, it does not
    happen, and the smoke tests, due on their own interval, ran no more either."""
    instance = Instance(tmp_path, [{"name": "fails", "command": {"run": "false"}}])
    agent = instance.agent()
    agent.set_disabled("maintenance")
    now = time.time()
    (agent.directory / "state.json").write_text(json.dumps({
        "applied_at": now - 7200, "smoked_at": now - 7200, "target": None}))

    check = agent.check(now=now)

    assert check.outcome == "disabled"
    assert check.smoke is not None
    assert check.smoke["failed"] == 1
    assert json.loads((agent.directory / "state.json").read_text())["smoked_at"] == now
    assert [item.kind for item in agent.spool.pending()] == ["state", "smoke"]
    assert agent.check(now=now + 1).smoke is None  # not again before its interval


def big_summary() -> dict[str, Any]:
    """Smoke results as large as the agent makes them: under MAX_SUMMARY bytes, of checks
    whose names and messages are long and escaped in JSON, one with a NUL."""
    check = spec.Check(CLASS, "é" * 200, "command", {"run": "true"})
    failed = [Result(check, "failed", f"{n} \x00 " + "ü" * 3000) for n in range(60)]
    summary: dict[str, Any] = dict(results.summary(failed, 1.0, "a" * 40))
    assert results.MAX_SUMMARY // 2 < len(json.dumps(summary).encode()) < results.MAX_SUMMARY
    return summary


def test_smoke_results_too_large_for_the_api_are_cut_until_taken(
        tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> None:
    """An API whose api.max_body is 6 KiB: smoke results alone were set aside (413 is a
    refusal), and a run report carrying them stayed spooled for ever, holding back every
    later message, as only its other fields could be cut."""
    host = "smoke1.web.example.org"
    (tmp_path / "api").mkdir()
    api = ServedApi(tmp_path / "api", slapd, BASE, {"api": {"max_body": 6144}})
    api.start()
    try:
        status, body = api.request("POST", "/v1/projects/web/hosts", {"name": host},
                                   basic("carol"))
        assert status == 201, body
        instance = Instance(tmp_path / "instance", [], api.url, json.loads(body)["token"])
        agent = instance.agent()
        agent.certname = host
        agent.spool.add("smoke", host, big_summary())
        agent.spool.add("report", host, {"status": "unchanged", "exit_code": 0,
                                          "smoke": big_summary()})

        delivery = agent.deliver()

        assert (delivery.delivered, delivery.rejected, delivery.pending) == (2, 0, 0), delivery
        assert not agent.spool.rejected.exists()
        status, body = api.request("GET", f"/v1/hosts/{host}", headers=basic("dave"))
        shown = json.loads(body)
        assert shown["smoke"]["truncated"] is True
        assert shown["smoke"]["failed"] == 60
        assert shown["last_run"]["smoke"]["truncated"] is True
        assert shown["failing"] is True
        assert api.request("DELETE", f"/v1/hosts/{host}", headers=basic("carol"))[0] == 204
    finally:
        api.stop()


def test_odd_smoke_bodies_are_refused_by_the_api(client: FlaskClient) -> None:
    """What a host token holder could send other than the agent: nothing is stored."""
    host = "smoke1.web.example.org"
    created = client.post("/v1/projects/web/hosts", json={"name": host}, headers=basic("carol"))
    assert created.status_code == 201, created.json
    token = created.json["token"]
    failure = {"class": "smoke", "check": "c", "kind": "command", "message": "m"}
    sound = {"checked_at": "2024-01-01T00:00:00Z", "passed": 0, "failed": 1, "skipped": 0,
             "failures": [failure]}
    try:
        for body, status, said in [
            (json.dumps({**sound, "failures": [{**failure, "message": "a\u0000b"}]}), 422,
             "contains a NUL character"),
            (json.dumps({**sound, "failures": [{**failure, "check": "\ud800"}]}), 422,
             "lone surrogate"),
            ("[" * 5000 + "]" * 5000, 422, "nested more than"),
            ("{" * 100000, 413, "the body is larger than"),
            (b"\xff\xfe", 422, "not UTF-8"),
            (json.dumps({**sound, "checked_at": "9999-12-31T23:59:59-01:00"}), 422,
             "checked_at must be"),
        ]:
            answer = client.put(f"/v1/hosts/{host}/smoke", data=body,
                                content_type="application/json",
                                headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == status, (body[:40], answer.json)
            assert said in answer.json["error"], answer.json
        assert client.get(f"/v1/hosts/{host}", headers=basic("dave")).json["smoke"] is None
    finally:
        client.delete(f"/v1/hosts/{host}", headers=basic("carol"))


def test_the_shown_form_of_a_line_hides_nothing() -> None:
    assert results.shown("a\u202eb\u2066c\nd\x1b") == "a\\u202eb\\u2066c\\x0ad\\x1b"
    assert results.shown("plain text ü, 日本") == "plain text ü, 日本"
