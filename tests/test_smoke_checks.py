"""The smoke-test engine around the kinds: check files read safely (hostile ones refused
whole, with every problem named by file, class, check and key), ``${...}`` references,
the runner's waits, deadlines and concurrency, the results as text, JSON, JUnit XML (read
back by a JUnit parser) and the agent's summary, and ``opslab smoke run|validate``."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped

from opslab.api.contract import Contract
from opslab.smoketests import kinds, results, runner, spec, values
from opslab.smoketests.cli import main
from opslab.smoketests.runner import Result
from opslab.smoketests.spec import CheckFileError
from tests.checkfiles import CERTNAME, CLASS, load, one, run, run_one, write
from tests.conftest import CONTROL_REPO

SOURCE = "modules/smoke/checks.yaml"


def refusal(tree: Path, classes: tuple[str, ...] = (CLASS,)) -> list[str]:
    """The problems for which the check files of ``classes`` are refused."""
    with pytest.raises(CheckFileError) as refused:
        spec.checks_for(str(tree), classes)
    return refused.value.problems


def check_named(name: str, **kind: Any) -> dict[str, Any]:
    return {"name": name, **kind}


# -- hostile and broken check files ----------------------------------------------------------


def test_a_check_file_that_is_a_link_to_etc_passwd_is_refused(tmp_path: Path) -> None:
    (tmp_path / "modules" / "smoke").mkdir(parents=True)
    (tmp_path / "modules" / "smoke" / "checks.yaml").symlink_to("/etc/passwd")

    assert refusal(tmp_path) == [f"{SOURCE}: is or lies below a symbolic link; check files "
                                 f"must be plain files of the repository"]


def test_a_module_folder_that_links_outside_the_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {"smoke": [check_named("c", command={"run": "true"})]})
    tree = tmp_path / "tree"
    (tree / "modules").mkdir(parents=True)
    (tree / "modules" / "smoke").symlink_to(outside / "modules" / "smoke")

    problems = refusal(tree)
    with pytest.raises(CheckFileError) as validated:
        spec.all_checks(str(tree))

    assert problems == validated.value.problems
    assert problems[0].startswith(f"{SOURCE}: is or lies below a symbolic link")


def test_a_tree_reached_through_a_link_is_read(tmp_path: Path) -> None:
    write(tmp_path / "tree", {"smoke": [check_named("c", command={"run": "true"})]})
    (tmp_path / "alias").symlink_to(tmp_path / "tree")

    (found,) = spec.checks_for(str(tmp_path / "alias"), [CLASS])
    assert (found.cls, found.name, found.source) == (CLASS, "c", SOURCE)


def test_a_check_file_larger_than_256_kib_is_refused(tmp_path: Path) -> None:
    text = yaml.safe_dump({"smoke": [check_named("c", command={"run": "true"})]})
    padding = spec.MAX_FILE - len(text)
    write(tmp_path, text + "#" * (padding - 1) + "\n")  # exactly the most there may be
    (at_most,) = spec.checks_for(str(tmp_path), [CLASS])
    write(tmp_path, text + "#" * padding + "\n")

    assert at_most.name == "c"
    assert refusal(tmp_path) == [f"{SOURCE}: is larger than 256 KiB"]


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
smoke: [{name: laughs, command: {run: "true", stdout: *h}}]
"""


@pytest.mark.parametrize("text", [
    BILLION_LAUGHS,
    "smoke: &checks []\n",
    "smoke:\n  - &base {name: a, command: {run: 'true'}}\n  - {<<: *base, name: b}\n",
], ids=["billion laughs", "an anchor alone", "a merge of an anchor"])
def test_anchors_and_aliases_are_refused(tmp_path: Path, text: str) -> None:
    write(tmp_path, text)
    started = time.monotonic()

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: not valid YAML: anchors and aliases are not allowed")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/name:os.system",
                                 "!include", "!!str"])
def test_tags_are_refused_and_nothing_runs(tmp_path: Path, tag: str) -> None:
    touched = tmp_path / "touched"
    write(tmp_path, f"smoke:\n  - {tag} [\"touch {touched}\"]\n")

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: not valid YAML: tags (")
    assert "are not allowed" in problem
    assert not touched.exists()


@pytest.mark.parametrize(("text", "key"), [
    ("smoke: []\nsmoke: [{name: c, command: {run: 'true'}}]\n", "'smoke'"),
    ("smoke: [{name: c, name: d, command: {run: 'true'}}]\n", "'name'"),
    ("smoke: [{name: c, port: {port: 1, port: 2}}]\n", "'port'"),
])
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, key: str) -> None:
    write(tmp_path, text)

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: not valid YAML: duplicate key {key}")


def test_a_merge_key_is_refused(tmp_path: Path) -> None:
    # Without an alias, a merge would still hide a key under another of the same name.
    write(tmp_path, "smoke:\n  - name: a\n    command: {run: 'true'}\n"
                    "    <<: {command: {run: 'false'}}\n")

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: not valid YAML: ")
    assert "merge" in problem


def test_a_tree_that_is_not_there_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path / "typo") == [f"{tmp_path / 'typo'}: there is no control "
                                          f"repository there (no modules folder)"]


def test_a_tree_without_modules_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    assert refusal(tmp_path) == [f"{tmp_path}: there is no control repository there "
                                 f"(no modules folder)"]


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_bytes(b"smoke:\n  - name: caf\xe9\n    command: {run: 'true'}\n")

    assert refusal(tmp_path) == [f"{SOURCE}: is not UTF-8 (invalid continuation byte at "
                                 f"byte 20)"]


def test_a_check_file_that_is_a_pipe_is_refused_without_waiting(tmp_path: Path) -> None:
    (tmp_path / "modules" / "smoke").mkdir(parents=True)
    os.mkfifo(tmp_path / "modules" / "smoke" / "checks.yaml")

    assert refusal(tmp_path) == [f"{SOURCE}: is not a regular file"]


def test_a_class_of_another_module_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"smoke": [], "other::web": [check_named("c", command={"run": "true"})]})

    assert refusal(tmp_path) == [f"{SOURCE}: class other::web: belongs to module other, so "
                                 f"its checks go in modules/other/checks.yaml"]


@pytest.mark.parametrize(("check", "problem"), [
    ({"name": "c", "command": {"run": "true"}, "retries": 3},
     "check 'c': retries: unknown key(s); a check takes name, timeout, wait, outside and one "
     "of port, http, service, process, file, command, package, user, group"),
    ({"name": "c", "port": {"port": 80, "host": "x"}},
     "check 'c': port: host: unknown field; port takes port, protocol, address"),
    ({"name": "c", "port": {"port": 80}, "command": {"run": "true"}},
     "check 'c': must have exactly one kind of check (port, http, service, process, file, "
     "command, package, user, group), not 2"),
    ({"name": "c", "timeout": 5},
     "check 'c': must have exactly one kind of check (port, http, service, process, file, "
     "command, package, user, group), not 0"),
    ({"name": "c", "port": {}}, "check 'c': port: port: is required"),
    ({"name": "c", "port": {"port": 70000}},
     "check 'c': port: port: must be between 1 and 65535, not 70000"),
    ({"name": "c", "port": {"port": True}},
     "check 'c': port: port: must be a whole number, not a boolean"),
    ({"name": "c", "port": {"port": 80, "protocol": "sctp"}},
     "check 'c': port: protocol: must be one of tcp, udp, not 'sctp'"),
    ({"name": "c", "port": {"port": 80}, "timeout": 0},
     "check 'c': timeout: must be a number of seconds above 0, at most 600"),
    ({"name": "c", "port": {"port": 80}, "wait": 30},
     "check 'c': wait: must be a mapping with timeout and, optionally, interval (seconds)"),
    ({"name": "c", "port": {"port": 80}, "outside": "yes"},
     "check 'c': outside: must be true or false"),
    ({"name": "", "port": {"port": 80}},
     "check 1: name: must be a text of 1 to 200 characters, without control or formatting "
     "characters"),
    ({"name": "c", "http": {"url": "http://x/", "status": []}},
     "check 'c': http: status: must not be an empty list"),
    ({"name": "c", "file": {"path": "relative"}},
     "check 'c': file: path 'relative' must be absolute"),
    ({"name": "c", "file": {"path": "/x", "matches": "("}},
     "check 'c': file: matches is not a regular expression: missing ), unterminated "
     "subpattern at position 0"),
    ({"name": "c", "process": {"user": "root"}}, "check 'c': process: give name, command or both"),
])
def test_a_check_that_is_wrong_is_refused_naming_file_class_check_and_key(
        tmp_path: Path, check: dict[str, Any], problem: str) -> None:
    write(tmp_path, {"smoke": [check]})

    assert refusal(tmp_path) == [f"{SOURCE}: class smoke: {problem}"]


def test_a_mode_written_as_a_number_is_refused_saying_to_quote_it(tmp_path: Path) -> None:
    write(tmp_path, "smoke:\n  - name: c\n    file: {path: /etc/passwd, mode: 0644}\n")

    (problem,) = refusal(tmp_path)
    assert problem.startswith(f"{SOURCE}: class smoke: check 'c': file: mode: must be a text, "
                              f"not int")
    assert 'quoted, such as "0644"' in problem


def test_every_problem_of_every_file_is_named_at_once(tmp_path: Path) -> None:
    write(tmp_path, {"smoke": [check_named("a", port={"port": 0}),
                               check_named("a", command={"run": ""}),
                               check_named("b", user={"name": "x", "uid": -1})]})
    write(tmp_path, {"other": [check_named("c", group={})]}, "other")

    assert refusal(tmp_path, (CLASS, "other")) == [
        f"{SOURCE}: class smoke: check 'a': port: port: must be between 1 and 65535, not 0",
        f"{SOURCE}: class smoke: check 'a': command: run must not be empty",
        f"{SOURCE}: class smoke: check 'b': user: uid: must be between 0 and 4294967294, not -1",
        "modules/other/checks.yaml: class other: check 'c': group: name: is required"]


def test_a_name_used_twice_in_a_class_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"smoke": [check_named("a", command={"run": "true"}),
                               check_named("a", command={"run": "false"})]})

    assert refusal(tmp_path) == [f"{SOURCE}: class smoke: check 'a': the name is used twice"]


def test_a_broken_check_of_another_class_of_the_module_is_not_hidden(tmp_path: Path) -> None:
    write(tmp_path, {"smoke::good": [check_named("a", command={"run": "true"})],
                     "smoke::bad": [check_named("b", command={"run": []})]})

    assert refusal(tmp_path, ("smoke::good",)) == [
        f"{SOURCE}: class smoke::bad: check 'b': command: run must be a text or a non-empty "
        f"list of texts"]


def test_classes_without_check_files_have_no_checks(tmp_path: Path) -> None:
    write(tmp_path, "# nothing to check yet\n")

    assert spec.checks_for(str(tmp_path), ["smoke", "nothing::here"]) == []
    assert refusal(tmp_path, ("Not-A-Class",)) == [
        "'Not-A-Class' is not a Puppet class name (lowercase words of a-z, 0-9 and _ joined "
        "by ::)"]


def test_the_examples_checks_are_all_read() -> None:
    declared = sorted((cls, item["name"])
                      for path in (CONTROL_REPO / "modules").glob("*/checks.yaml")
                      for cls, items in yaml.safe_load(path.read_text()).items()
                      for item in items)

    found = spec.all_checks(str(CONTROL_REPO))

    assert sorted((check.cls, check.name) for check in found) == declared
    assert all(check.source == f"modules/{check.cls.split('::')[0]}/checks.yaml"
               for check in found)


# -- references ------------------------------------------------------------------------------


def test_references_are_filled_from_params_vars_facts_certname_and_target(
        tmp_path: Path) -> None:
    check = one(tmp_path, "command", {
        "run": ["printf", "%s|", "${param.word}", "${var.site}", "${fact.hostname}",
                "${certname}", "${target}", "port ${param.port} on=${param.on}"]})
    filled = values.Values({"word": "hello", "port": 8181, "on": True}, {"site": "lab"},
                           {"hostname": "smoke1", "ipaddress": "192.0.2.7"}, CERTNAME, None)

    (result,) = run([check], filled=filled)

    assert result.status == "passed", result.message
    assert result.message == ("'printf %s| hello lab smoke1 smoke1.example.org 192.0.2.7 "
                              "port 8181 on=true' exited 0")


def test_a_whole_reference_keeps_its_type() -> None:
    filled = values.Values({"port": 8181, "on": False, "list": [1, 2]}, {}, {}, None, None)

    assert values.fill("${param.port}", filled) == 8181
    assert values.fill("${param.on}", filled) is False
    assert values.fill(["${param.list}", {"k": "${param.port}"}], filled) == [[1, 2],
                                                                              {"k": 8181}]
    assert values.fill("${param.port}/", filled) == "8181/"


def test_a_number_referred_to_fills_a_port_as_a_number_or_as_a_text(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        as_number = run_one(tmp_path, "port", {"port": "${param.port}"}, params={"port": port})
        as_text = run_one(tmp_path, "port", {"port": "${param.port}"},
                          params={"port": str(port)})
        in_a_list = run_one(tmp_path, "command", {"run": "exit 3",
                                                  "exit_status": [0, "${param.status}"]},
                            params={"status": "3"})
        not_a_number = run_one(tmp_path, "port", {"port": "${param.port}"},
                               params={"port": "http"})

    assert as_number.status == "passed", as_number.message
    assert as_text.status == "passed", as_text.message
    assert in_a_list.status == "passed", in_a_list.message
    assert not_a_number.status == "failed"
    assert not_a_number.message == ("port: must be a whole number, not str (after filling in "
                                    "its references)")


@pytest.mark.parametrize(("reference", "filled", "message"), [
    ("${param.nope}", values.Values({"word": "x"}, {}, {}, CERTNAME, None),
     "${param.nope}: nope is not among the class's parameters"),
    ("${var.nope}", values.Values({}, {}, {}, CERTNAME, None),
     "${var.nope}: nope is not among the host's variables"),
    ("${fact.nope}", values.Values({}, {}, {}, CERTNAME, None),
     "${fact.nope}: nope is not among the host's facts"),
    ("${certname}", values.Values({}, {}, {}, None, None),
     "${certname}: the host's certname is not known"),
    ("${target}", values.Values({}, {}, {}, CERTNAME, None),
     "${target}: no --target was given and this host has no IPv4 address"),
    ("${param.password}", values.Values({"password": "hunter2"}, {}, {}, CERTNAME, None,
                                        frozenset({"password"})),
     "${param.password} is Sensitive: a check cannot use it"),
    ("${param.unset}", values.Values({"unset": None}, {}, {}, CERTNAME, None),
     "${param.unset}: unset has no value"),
    ("${param.list}", values.Values({"list": ["a"]}, {}, {}, CERTNAME, None),
     "${param.list} is a list, which cannot stand inside a text"),
])
def test_a_reference_without_a_value_fails_the_check_naming_it_and_nothing_runs(
        tmp_path: Path, reference: str, filled: values.Values, message: str) -> None:
    touched = tmp_path / "touched"
    check = one(tmp_path, "command", {"run": f"touch {touched} # {reference}"})

    (result,) = run([check], filled=filled)

    assert result.status == "failed"
    assert result.message == message
    assert result.attempts == 0
    assert not touched.exists()
    assert "hunter2" not in result.message


def test_a_doubled_dollar_is_a_literal(tmp_path: Path) -> None:
    # '$''{' is the shell's way to write ${ without the check file writing it.
    result = run_one(tmp_path, "command", {
        "run": "test \"$(printf %s '$${param.word} $$${')\" = '$''{param.word} $$''{'"},
        params={"word": "not this"})

    assert result.status == "passed", result.message
    assert values.fill("$${param.word}", values.Values({"word": "x"}, {}, {}, None, None)) \
        == "$" + "{param.word}"
    assert values.problems("$${anything at all") == []


@pytest.mark.parametrize(("text", "problem"), [
    ("${__import__('os').system('id')}",
     "${__import__('os').system('id')} is not a reference: write ${param.NAME}, ${var.NAME}, "
     "${fact.NAME}, ${certname} or ${target}"),
    ("${param.x.__class__}", "${param.x.__class__} is not a reference: write"),
    ("${param.x|upcase}", "${param.x|upcase} is not a reference: write"),
    ("id ${{ 7*7 }}", "'${{ 7*7 }}' is not a reference: write"),
    ("${param.${var.x}}", "'${param.${var.x}}' is not a reference: write"),
    ("echo ${param.x", "an unclosed ${ (write $${ for a literal ${)"),
])
def test_hostile_references_are_refused_when_read(tmp_path: Path, text: str,
                                                  problem: str) -> None:
    write(tmp_path, {"smoke": [check_named("hostile", command={"run": text}),
                               check_named("nested", http={"url": "http://x/",
                                                           "headers": {"X": text},
                                                           "body": ["fine", text]})]})

    problems = refusal(tmp_path)

    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{SOURCE}: class smoke: check 'hostile': command: run: "
                                  f"{problem}")
    assert problems[1].startswith(f"{SOURCE}: class smoke: check 'nested': http: body: "
                                  f"{problem}")
    assert problems[2].startswith(f"{SOURCE}: class smoke: check 'nested': http: headers: "
                                  f"{problem}")


# -- the runner ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_check_that_waits_passes_once_the_listener_is_there(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    later = threading.Timer(0.4, server.listen)
    later.start()
    try:
        result = run_one(tmp_path, "port", {"port": port}, wait={"timeout": 10, "interval": 0.2})
    finally:
        later.cancel()
        server.close()

    assert result.status == "passed", result.message
    assert result.attempts >= 2
    assert 0.3 < result.duration < 5


def test_a_check_that_never_holds_fails_after_its_wait(tmp_path: Path) -> None:
    port = free_port()
    result = run_one(tmp_path, "port", {"port": port}, wait={"timeout": 0.6, "interval": 0.15})

    assert result.status == "failed"
    assert result.message == (f"nothing listens on tcp port {port} (still so after "
                              f"{result.attempts} attempts in 0.6 s)")
    assert 3 <= result.attempts <= 6  # one every 0.15 s, not one after another
    assert 0.4 < result.duration < 3


def test_each_attempt_of_a_waiting_check_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    result = run_one(tmp_path, "command", {"run": "sleep 10"}, timeout=0.2,
                     wait={"timeout": 0.5, "interval": 0.05})

    assert result.status == "failed"
    assert result.message.startswith("'sleep 10' ran past 0.2 s and was stopped (still so after ")
    assert 2 <= result.attempts <= 4
    assert result.duration < 3


@pytest.fixture
def hanging_users(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """User checks hang (as NSS does on a dead directory) until the event is set."""
    release = threading.Event()

    def hang(fields: dict[str, Any], context: kinds.Context) -> str:
        release.wait(30)
        return "answered too late"

    monkeypatch.setattr(kinds.kind("user"), "check", hang)
    monkeypatch.setattr(runner, "GRACE", 0.2)
    yield release
    release.set()


def test_a_check_that_hangs_is_abandoned_and_the_others_finish(
        tmp_path: Path, hanging_users: threading.Event) -> None:
    checks = load(tmp_path, [check_named("hangs", user={"name": "root"}, timeout=0.5),
                             check_named("first", command={"run": "echo 1", "stdout": "1"}),
                             check_named("second", command={"run": "echo 2", "stdout": "2"})])
    started = time.monotonic()

    found = run(checks, concurrency=1)  # the one worker hangs: another takes over

    seconds = time.monotonic() - started
    hanging_users.set()
    assert [(result.check.name, result.status) for result in found] == [
        ("hangs", "failed"), ("first", "passed"), ("second", "passed")]
    assert found[0].message == "no answer within 0.7 s: the check was abandoned"
    assert seconds < 5


def test_a_check_whose_values_cannot_be_had_fails_at_once(tmp_path: Path) -> None:
    checks = load(tmp_path, [check_named("broken", command={"run": "true"}),
                             check_named("fine", command={"run": "true"})])

    def values_of(check: spec.Check) -> values.Values:
        if check.name == "broken":
            raise RuntimeError("no catalog")
        return values.Values({}, {}, {}, CERTNAME, None)

    started = time.monotonic()
    found = runner.run(checks, values_of, None, concurrency=1)

    assert [result.status for result in found] == ["failed", "passed"]
    assert found[0].message == "the check broke: RuntimeError: no catalog"
    assert time.monotonic() - started < 5


def overlapping(folder: Path, count: int) -> int:
    """The most of ``count`` commands' runs (start and end times they wrote) at one time."""
    spans = [(float((folder / f"{n}.start").read_text()), float((folder / f"{n}.end").read_text()))
             for n in range(count)]
    return max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)


def timed_commands(tree: Path, count: int, seconds: float) -> list[spec.Check]:
    folder = tree / "times"
    folder.mkdir()
    return load(tree, [check_named(f"sleeps {n}", command={
        "run": f"date +%s.%N > {folder}/{n}.start; sleep {seconds}; date +%s.%N > {folder}/{n}.end"
    }) for n in range(count)])


def test_checks_run_side_by_side(tmp_path: Path) -> None:
    found = run(timed_commands(tmp_path, 8, 0.5), concurrency=8)

    assert all(result.status == "passed" for result in found), found
    assert overlapping(tmp_path / "times", 8) == 8  # every one ran while all others did


def test_no_more_checks_run_at_once_than_the_concurrency(tmp_path: Path) -> None:
    found = run(timed_commands(tmp_path, 4, 0.15), concurrency=2)

    assert [result.check.name for result in found] == [f"sleeps {n}" for n in range(4)]
    assert overlapping(tmp_path / "times", 4) <= 2


def test_outside_checks_are_skipped_inside_and_the_only_ones_run_outside(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        checks = load(tmp_path, [check_named("inside", command={"run": "true"}),
                                 check_named("outside", port={"port": port}, outside=True)])
        inside = run(checks)
        outside = run(checks, target="127.0.0.1")

    assert [(result.check.name, result.status) for result in inside] == [
        ("inside", "passed"), ("outside", "skipped")]
    assert inside[1].message == "seen from outside: opslab smoke run --target ADDRESS"
    assert [(result.check.name, result.status) for result in outside] == [("outside", "passed")]


# -- results ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> list[Result]:
    """Results of real checks: passed, failed with unprintable output, skipped, in two
    classes."""
    tree = tmp_path_factory.mktemp("results")
    checks = load(tree, [
        check_named("passes", command={"run": "echo fine"}),
        check_named("fails with control characters",
                    command={"run": r"printf 'bad \001 \033[31mred\033[0m \377\n'; exit 1"}),
        check_named("outside", port={"port": 80}, outside=True),
    ]) + load(tree, [check_named("bell rings", file={"path": "/opslab/bell \x07 rings"})],
              "smoke::web")
    return run(checks)


def test_junit_xml_has_a_testcase_per_check_and_reads_back(outcome: list[Result],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "smoke.xml"
    path.write_bytes(results.junit(outcome, 1.5))

    document = JUnitXml.fromfile(str(path))
    suites = list(document)
    cases = [case for suite in suites for case in suite]

    assert [suite.name for suite in suites] == ["smoke", "smoke::web"]
    assert [(suite.tests, suite.failures, suite.skipped) for suite in suites] == [(3, 1, 1),
                                                                                 (1, 1, 0)]
    assert (document.tests, document.failures, document.skipped) == (4, 2, 1)
    assert [(case.classname, case.name) for case in cases] == [
        ("smoke", "passes"), ("smoke", "fails with control characters"), ("smoke", "outside"),
        ("smoke::web", "bell rings")]
    passed, failed, skipped, missing = cases
    assert passed.is_passed
    (failure,) = failed.result
    assert isinstance(failure, Failure)
    assert failure.message == outcome[1].message
    assert failure.message.endswith(" exited 1, not 0")
    assert failure.type == "command"
    assert failure.text.startswith("bad \ufffd \ufffd[31mred\ufffd[0m \ufffd")
    (skip,) = skipped.result
    assert isinstance(skip, Skipped)
    assert skip.message == "seen from outside: opslab smoke run --target ADDRESS"
    (gone,) = missing.result
    assert gone.message == gone.text == "/opslab/bell \ufffd rings does not exist"


def test_the_text_shows_what_failed_with_its_output(outcome: list[Result]) -> None:
    short = results.text(outcome, 1.5).splitlines()
    verbose = results.text(outcome, 1.5, verbose=True).splitlines()

    assert short[0] == f"FAILED  smoke: fails with control characters: {outcome[1].message}"
    # Shown to a terminal, not obeyed by it.
    assert short[1] == "        | bad \\x01 \\x1b[31mred\\x1b[0m \ufffd"
    assert short[2:] == ["skipped smoke: outside: seen from outside: opslab smoke run "
                         "--target ADDRESS",
                         "FAILED  smoke::web: bell rings: /opslab/bell \\x07 rings does not exist",
                         "1 passed, 2 failed, 1 skipped in 1.50 s"]
    assert verbose[0] == "ok      smoke: passes: 'echo fine' exited 0"
    assert verbose[1:] == short


def test_the_json_has_every_result(outcome: list[Result]) -> None:
    document = json.loads(json.dumps(results.as_json(outcome, 1.5)))

    assert (document["passed"], document["failed"], document["skipped"]) == (1, 2, 1)
    assert [(item["class"], item["check"], item["kind"], item["status"], item["outside"])
            for item in document["results"]] == [
        ("smoke", "passes", "command", "passed", False),
        ("smoke", "fails with control characters", "command", "failed", False),
        ("smoke", "outside", "port", "skipped", True),
        ("smoke::web", "bell rings", "file", "failed", False)]
    assert document["results"][1]["output"].startswith("bad ")
    assert document["results"][1]["source"] == SOURCE


def test_the_summary_is_what_the_api_takes_and_is_bounded(outcome: list[Result]) -> None:
    validator = Contract().at("components", "schemas", "SmokeSummary")
    failing = outcome[1]
    many = [Result(failing.check, "failed", f"{n}: " + "x" * 3000) for n in range(60)]

    small = results.summary(outcome, 1.5, "a" * 40)
    large = results.summary(many, 2.0, None, error="e" * 5000)

    for document in (small, large):
        validator.validate(document)
    assert (small["passed"], small["failed"], small["skipped"]) == (1, 2, 1)
    assert [item["check"] for item in small["failures"]] == [outcome[1].check.name,
                                                             outcome[3].check.name]
    assert not small.get("truncated")
    assert large["truncated"] is True
    # Within the API's bounds, and under MAX_SUMMARY bytes in all: some failures, cut.
    assert len(json.dumps(large).encode()) < results.MAX_SUMMARY
    assert 0 < len(large["failures"]) < results.MAX_FAILURES
    assert all(0 < len(item["message"]) < results.MAX_MESSAGE for item in large["failures"])


# -- opslab smoke run | validate ------------------------------------------------------------


class Repo:
    """A control repository with checks of two classes and a classification for them."""

    def __init__(self, folder: Path, port: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.tree = folder / "tree"
        self.conf = folder / "site.conf"
        self.conf.write_text("site = lab\n")
        write(self.tree, {
            "smoke": [check_named("says its word", command={"run": "echo ${param.word}",
                                                            "stdout": "hello"}),
                      check_named("names its site", file={"path": "${var.conf}",
                                                          "contains": "site = ${var.site}"})],
            "smoke::web": [check_named("answers from outside", port={"port": "${param.port}"},
                                       outside=True, timeout=2)]})
        self.classification = folder / "classification.yaml"
        self.classify(word="hello")
        self.port = port

    def classify(self, word: str, port: int | None = None, *others: str) -> None:
        """smoke's word, smoke::web's port, and ``others`` classes without parameters."""
        self.classification.write_text(yaml.safe_dump({
            "classes": {"smoke": {"word": word}, "smoke::web": {"port": port or 1},
                        **{name: {} for name in others}},
            "parameters": {"conf": str(self.conf), "site": "lab"}}))

    def run(self, *options: str) -> list[str]:
        return ["run", "--tree", str(self.tree), "--classification", str(self.classification),
                "--certname", CERTNAME, *options]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path, free_port())


def smoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``opslab smoke ARGV`` in this process: its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def opslab(*argv: str, timeout: float = 60, **options: Any) -> subprocess.CompletedProcess[str]:
    """The real ``opslab`` command, as a person or Jenkins runs it."""
    command = Path(sys.executable).parent / "opslab"
    return subprocess.run([str(command), *argv], capture_output=True, text=True,
                          timeout=timeout, check=False, **options)


def test_run_passes_with_status_0(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = smoke(capsys, *repo.run())
    verbose_status, verbose, _ = smoke(capsys, *repo.run("--verbose"))

    assert status == verbose_status == 0
    assert out.splitlines()[0] == ("skipped smoke::web: answers from outside: seen from "
                                   "outside: opslab smoke run --target ADDRESS")
    assert out.splitlines()[-1].startswith("2 passed, 0 failed, 1 skipped in ")
    assert verbose.splitlines()[0] == "ok      smoke: says its word: 'echo hello' exited 0"


def test_run_fails_with_status_1_and_writes_json_and_junit(
        repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo.classify(word="goodbye")
    junit = tmp_path / "out" / "smoke.xml"
    junit.parent.mkdir()

    status, out, _ = smoke(capsys, *repo.run("--json", "--junit", str(junit)))

    assert status == 1
    document = json.loads(out)
    assert (document["passed"], document["failed"], document["skipped"]) == (1, 1, 1)
    assert document["results"][0]["message"] == ("the stdout of 'echo goodbye' does not "
                                                 "contain 'hello'")
    cases = [case for suite in JUnitXml.fromfile(str(junit)) for case in suite]
    assert [(case.classname, case.name, case.is_passed, case.is_skipped) for case in cases] == [
        ("smoke", "says its word", False, False), ("smoke", "names its site", True, False),
        ("smoke::web", "answers from outside", False, True)]


def test_run_from_outside_checks_the_target(repo: Repo,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        repo.classify(word="hello", port=server.getsockname()[1])
        status, out, _ = smoke(capsys, *repo.run("--target", "127.0.0.1", "--json"))
    closed_status, closed, _ = smoke(capsys, *repo.run("--target", "127.0.0.1", "--json"))

    assert status == 0
    assert [(item["check"], item["status"]) for item in json.loads(out)["results"]] == [
        ("answers from outside", "passed")]
    assert closed_status == 1
    assert json.loads(closed)["results"][0]["message"].endswith(": Connection refused")


def test_run_only_the_classes_asked_for(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    repo.classify(word="goodbye")  # smoke's check would fail

    status, out, _ = smoke(capsys, *repo.run("--class", "smoke::web", "--json"))

    assert status == 0
    assert [item["class"] for item in json.loads(out)["results"]] == ["smoke::web"]


def test_run_refuses_bad_check_files_with_status_2(repo: Repo,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(repo.tree, "smoke: [{name: c, command: {run: '${__import__}'}}]\n")

    status, out, err = smoke(capsys, *repo.run())

    assert status == 2
    assert out == ""
    assert (f"opslab smoke: error: {SOURCE}: class smoke: check 'c': command: run: "
            f"${{__import__}} is not a reference") in err


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--tree", "."], "--tree and --classification go together"),
    (["run", "--tree", ".", "--classification", "/opslab/nothing.yaml", "--certname", CERTNAME],
     "--classification /opslab/nothing.yaml: [Errno 2] No such file or directory"),
    (["run", "--tree", ".", "--classification", "/etc/hostname", "--certname", CERTNAME],
     "--classification /etc/hostname: not a mapping"),
    (["run", "--tree", ".", "--classification", "/etc/hostname", "--certname", "Not A Name"],
     "certname 'Not A Name' is not a lowercase DNS name"),
])
def test_run_with_bad_usage_has_status_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                         message: str) -> None:
    status, _, err = smoke(capsys, *argv)

    assert status == 2
    assert message in err


def test_run_with_bad_options_has_status_2(capsys: pytest.CaptureFixture[str],
                                           repo: Repo) -> None:
    for argv in (repo.run("--concurrency", "0"), repo.run("--json", "--verbose"), ["dance"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
    capsys.readouterr()


def test_validate_the_example_control_repository(capsys: pytest.CaptureFixture[str]) -> None:
    documents = [yaml.safe_load(path.read_text())
                 for path in (CONTROL_REPO / "modules").glob("*/checks.yaml")]
    checks = sum(len(items) for document in documents for items in document.values())
    classes = sum(len(document) for document in documents)

    status, out, _ = smoke(capsys, "validate", str(CONTROL_REPO))

    assert status == 0
    assert out == f"{checks} checks of {classes} classes are valid\n"


def test_validate_a_broken_control_repository(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"smoke": [check_named("c", file={"path": "/x", "mode": 644})]})
    write(tmp_path, "other: [{name: d, port: {port: 1}, command: {run: 'true'}}]\n", "other")

    status, out, err = smoke(capsys, "validate", str(tmp_path))
    not_a_repo, _, complaint = smoke(capsys, "validate", str(tmp_path / "modules"))

    assert status == not_a_repo == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("opslab smoke: error: modules/other/checks.yaml: class other: "
                               "check 'd': must have exactly one kind of check")
    assert lines[1].startswith(f"opslab smoke: error: {SOURCE}: class smoke: check 'c': file: "
                               f"mode: ")
    assert "is not a control repository" in complaint


def test_the_command_exits_0_1_and_2(repo: Repo, tmp_path: Path) -> None:
    failing = Repo(tmp_path / "failing", free_port())
    failing.classify(word="goodbye")
    with ThreadPoolExecutor() as pool:  # each starts Python and opslab: side by side
        passes, fails, valid, usage, typo = pool.map(lambda argv: opslab("smoke", *argv), [
            repo.run(), failing.run("--json"), ["validate", str(CONTROL_REPO)],
            repo.run("--concurrency", "0"),
            ["run", "--tree", str(tmp_path / "typo"), "--classification",
             str(repo.classification), "--certname", CERTNAME]])

    assert passes.returncode == 0, passes.stderr
    assert fails.returncode == 1, fails.stderr
    assert json.loads(fails.stdout)["failed"] == 1
    assert valid.returncode == 0, valid.stderr
    assert usage.returncode == 2
    assert "--concurrency must be at least 1" in usage.stderr
    assert typo.returncode == 2
    assert "there is no control repository there" in typo.stderr


def test_the_command_runs_nothing_when_a_check_file_is_hostile(repo: Repo,
                                                               tmp_path: Path) -> None:
    touched = tmp_path / "touched"
    write(repo.tree, {"smoke": [check_named("touches", command={"run": f"touch {touched}"})]})
    (repo.tree / "modules" / "evil").mkdir()
    (repo.tree / "modules" / "evil" / "checks.yaml").symlink_to("/etc/passwd")
    write(repo.tree, f"tagged:\n  - !!python/object/apply:os.system ['touch {touched}']\n",
          "tagged")
    repo.classify("hello", None, "evil", "tagged")

    refused = opslab("smoke", *repo.run())

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "modules/evil/checks.yaml: is or lies below a symbolic link" in refused.stderr
    assert "modules/tagged/checks.yaml: not valid YAML: tags (" in refused.stderr
    assert "root:" not in refused.stderr  # nothing of /etc/passwd
    assert not touched.exists()


def test_a_command_does_not_read_the_terminal(repo: Repo) -> None:
    # cat reads until its input ends: the terminal's never does, so it would run to its timeout.
    write(repo.tree, {"smoke": [check_named("reads", command={"run": "cat"}, timeout=5)]})

    # Its input stays open, as a terminal's does.
    with subprocess.Popen([str(Path(sys.executable).parent / "opslab"), "smoke", *repo.run()],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as command:
        try:
            command.wait(timeout=60)
        finally:
            out, err = command.communicate(timeout=60)

    assert command.returncode == 0, out + err
