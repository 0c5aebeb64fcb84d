"""How long does ``opslab smoke run`` take over 50 passing local checks, and how does it
compare with testinfra running the same checks?

A host's smoke tests run after every Puppet run and whenever someone asks, so
what matters is the whole command, a new process each time. One run of this
script:

1. Builds what the checks look at: a folder of files (modes, owners, contents,
   a directory, a symbolic link), TCP listeners on the loopback opened by this
   process, ``python -m http.server`` serving a few pages on a loopback port,
   and a ``sleep`` process of its own. Then a throwaway control repository
   whose module ``bench`` declares in ``modules/bench/checks.yaml``:

   * 50 checks that pass, a realistic mix over five classes: 12 files (mode,
     owner, contains, absent, matches, sha256, a directory, a symlink, one
     that must not exist), 8 TCP ports, 6 HTTP requests (bodies, a 404, a
     HEAD, a header), 4 processes, 8 commands (``true``, ``test -d /``,
     outputs, an exit status), 4 Debian packages (one with a version
     constraint), 4 users and 4 groups; the files' folder and the server's
     port come from the class parameters through ``${param.…}``, as a real
     class's would;
   * a class without checks: the command with everything but running checks
     (start-up, reading the classification and this check file), the floor.

   Two more modules, each a class of its own: ``closed``, 50 checks that fail
   quickly (TCP ports nothing listens on), and ``waits``, 50 checks that each
   wait 50 ms (a command ``sleep 0.05``): what the concurrency bound is for.

   The classification files say which classes (and parameters) a run checks.
   The same checks are written as a testinfra test module per suite, as a
   testinfra user would write them: ``host.file(...)``, ``host.socket(
   "tcp://127.0.0.1:PORT").is_listening``, ``host.process.filter(...)``,
   ``host.run(...)``, ``host.package(...)``, ``host.user(...)``,
   ``host.group(...)``, and ``curl`` through ``host.run`` for HTTP.
2. Checks the answers before measuring anything: ``opslab smoke validate``
   accepts the tree; each command, once (also the warm-up: bytecode and page
   cache), must report 50 passed (or 50 failed) and exit accordingly.
3. Times whole processes, interleaved (the order rotating each round), over
   ``--rounds`` rounds (default 9):

   * the passing suite: ``opslab smoke run --tree T --classification F
     --certname N --json`` at the default concurrency, at ``--concurrency 1``
     and at ``--concurrency 50``; testinfra under pytest (its local backend),
     plain and with pytest-xdist (``-n 2``, this machine's cores); the floors:
     ``opslab smoke run`` of a class without checks, pytest with testinfra and
     one empty test, and ``python -c pass``;
   * the failing suite: ``opslab smoke run``, testinfra plain and with xdist;
   * the waiting suite: ``opslab smoke run`` at the default concurrency, at 1
     and at 50.

   pytest runs with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` and only testinfra's
   (and xdist's) plugin loaded, as in a virtualenv holding testinfra alone:
   this environment's other pytest plugins (hypothesis, schemathesis) would
   add seconds to its start-up that a testinfra user does not pay. ``-q
   --tb=short``, no cache. opslab's ``--json`` gives its own time for the
   checks (``duration``: the facts and the checks, without the interpreter,
   the imports or reading the files), reported beside its wall time.
4. Profiles opslab in this process: reading and validating the check file,
   gathering the facts, running the 50 checks at concurrency 1, 8 and 50,
   the median time of one check of each kind; and the imports of ``opslab
   smoke`` (``-X importtime``).
5. Prints a summary against the target: 50 passing local checks "well under
   a second", taken as the whole ``opslab smoke run``'s median under half a
   second. Benchmarks report; they do not fail: the exit status is 0 whatever
   the numbers (non-zero only if the benchmark cannot run or a command answers
   wrongly).

Usage: ``python benchmarks/smoke_benchmark.py [--rounds N] [--json FILE]``
"""

import argparse
import grp
import hashlib
import json
import os
import pwd
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import (
    COMMAND_TIMEOUT,
    BenchmarkError,
    Run,
    bytecode_environment,
    find_script,
    print_targets,
    rotated,
    run_measured,
    run_script,
    summary,
    write_results,
)

from opslab.slapd import free_port

MODULE = "bench"
CHECKS = 50
CERTNAME = "bench01.example.org"
WELL_UNDER_TARGET_S = 0.5  # "well under a second": half of it
XDIST_WORKERS = 2
SLEEP_SECONDS = "3141"  # the argument of the benchmark's own sleep process
WAIT_SECONDS = 0.05  # each check of the waiting suite
IN_PROCESS_REPEATS = 15
IMPORT_REPEATS = 5
SMOKE_IMPORT = "import opslab.cli, opslab.smoketests.cli"
PYTEST_OPTIONS = ("-q", "--tb=short", "-p", "no:cacheprovider", "-p", "testinfra.plugin",
                  "--hosts=local://")
XDIST_OPTIONS = ("-p", "xdist.plugin", "-n", str(XDIST_WORKERS))

# Helpers at the top of each testinfra module, as a testinfra user would write them.
TESTINFRA_HEADER = '''\
"""The benchmark's checks, as testinfra tests (generated by smoke_benchmark.py)."""


def http(host, url, *options):
    """curl's answer to ``url``: the status and the body (headers too, with -I or -D -)."""
    result = host.run("curl -sS --noproxy '*' -w '\\\\n%%{http_code}' " + " ".join(options)
                      + " %s", url)
    assert result.rc == 0, result.stderr
    body, _, status = result.stdout.rpartition("\\n")
    return int(status), body
'''


@dataclass(frozen=True)
class Spec:
    """One check: as checks.yaml declares it, and as a testinfra test's body."""

    cls: str
    name: str
    kind: str
    fields: dict[str, Any]
    test: tuple[str, ...]


@dataclass
class Fixture:
    """What the checks look at, made by the benchmark."""

    root: Path  # the files' folder
    http_port: int
    listeners: list[int]
    closed: list[int]
    user: str
    group: str
    server_comm: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


# --- what the checks look at ---------------------------------------------------------------


def make_fixture(workdir: Path, environment: dict[str, str]) -> Fixture:
    """Files, listeners, an HTTP server and a sleep process, all of the benchmark's own."""
    root = workdir / "srv"
    www = root / "www"
    (root / "data").mkdir(parents=True)
    www.mkdir()
    fixture = Fixture(root, free_port(), [], [], pwd.getpwuid(os.getuid()).pw_name,
                      grp.getgrgid(os.getgid()).gr_name, "")
    try:
        files = {
            "app.conf": ("[server]\nlisten = 127.0.0.1:8080\nworkers = 4\n", 0o640),
            "motd": ("Welcome to bench01, managed by Puppet\n", 0o644),
            "secret.key": ("k" * 64 + "\n", 0o600),
            "release": ("version=1.4.2\nchannel=stable\n", 0o644),
            "www/index.html": ("<html><body>smoke bench index</body></html>\n", 0o644),
            "www/status.txt": ("ok\n", 0o644),
            "www/app.json": ('{"ready": true, "version": "1.4.2"}\n', 0o644),
        }
        for name, (text, mode) in files.items():
            (root / name).write_text(text, encoding="utf-8")
            (root / name).chmod(mode)
        (root / "data").chmod(0o750)
        (root / "current").symlink_to(root / "release")
        for _ in range(7):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            fixture.sockets.append(sock)
            fixture.listeners.append(sock.getsockname()[1])
        while len(fixture.closed) < CHECKS:  # ports nothing listens on
            port = free_port()
            if port not in fixture.closed and port not in (*fixture.listeners,
                                                           fixture.http_port):
                fixture.closed.append(port)
        fixture.processes.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", str(fixture.http_port), "--bind",
             "127.0.0.1", "--directory", str(www)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=environment, start_new_session=True))
        fixture.processes.append(subprocess.Popen(
            ["sleep", SLEEP_SECONDS], stdin=subprocess.DEVNULL, start_new_session=True))
        wait_for_server(fixture.http_port)
        comm = Path(f"/proc/{fixture.processes[0].pid}/comm")
        fixture.server_comm = comm.read_text(encoding="ascii").strip()
    except BaseException:
        fixture.close()
        raise
    return fixture


def wait_for_server(port: int, deadline: float = 30.0) -> None:
    """Until the HTTP server answers on ``port``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stop = time.monotonic() + deadline
    while True:
        try:
            with opener.open(f"http://127.0.0.1:{port}/status.txt", timeout=2) as answer:
                answer.read()
            return
        except OSError:
            if time.monotonic() > stop:
                raise BenchmarkError(f"http.server on port {port} did not answer") from None
            time.sleep(0.05)


# --- the checks, both ways -----------------------------------------------------------------


def system_account(name: str) -> pwd.struct_passwd:
    """A user the checks rely on; BenchmarkError if this system has none."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise BenchmarkError(f"this system has no user {name}") from None


def dpkg_version(name: str) -> str:
    """The installed version of Debian package ``name``; BenchmarkError if it is not."""
    done = subprocess.run(["dpkg-query", "--show", "--showformat=${Version}", "--", name],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0 or not done.stdout:
        raise BenchmarkError(f"package {name} is not installed (is this Debian?)")
    return done.stdout


def passing_checks(fx: Fixture) -> list[Spec]:
    """The 50 passing checks."""
    r, me, mygroup = str(fx.root), fx.user, fx.group
    files_cls, net_cls, web_cls = f"{MODULE}::files", f"{MODULE}::network", f"{MODULE}::web"
    sys_cls, acc_cls = f"{MODULE}::system", f"{MODULE}::accounts"
    digest = hashlib.sha256((fx.root / "motd").read_bytes()).hexdigest()
    root_account, www, nobody = (system_account(n) for n in ("root", "www-data", "nobody"))
    for absent in ("opslab-bench-guest", "opslab-bench-group"):
        if _exists(pwd.getpwnam, absent) or _exists(grp.getgrnam, absent):
            raise BenchmarkError(f"{absent} exists on this system")
    for name in ("root", "adm", "www-data"):
        if not _exists(grp.getgrnam, name):
            raise BenchmarkError(f"this system has no group {name}")
    for name in ("bash", "coreutils", "curl", "dpkg"):
        dpkg_version(name)

    def file(name: str, fields: dict[str, Any], *test: str) -> Spec:
        return Spec(files_cls, name, "file", fields, test)

    p = "${param.root}"
    checks = [
        file("app.conf is there", {"path": f"{p}/app.conf", "type": "file", "mode": "0640",
                                    "owner": me, "group": mygroup, "contains": "listen = "},
             f"f = host.file({r + '/app.conf'!r})", "assert f.is_file",
             "assert f.mode == 0o640", f"assert f.user == {me!r}",
             f"assert f.group == {mygroup!r}", "assert f.contains('listen = ')"),
        file("motd welcomes", {"path": f"{p}/motd", "mode": "0644", "contains": "Welcome to"},
             f"f = host.file({r + '/motd'!r})", "assert f.exists", "assert f.mode == 0o644",
             "assert f.contains('Welcome to')"),
        file("motd is the one Puppet wrote", {"path": f"{p}/motd", "sha256": digest},
             f"assert host.file({r + '/motd'!r}).sha256sum == {digest!r}"),
        file("the key is private", {"path": f"{p}/secret.key", "mode": "0600",
                                    "owner": me, "absent": "password"},
             f"f = host.file({r + '/secret.key'!r})", "assert f.mode == 0o600",
             f"assert f.user == {me!r}", "assert not f.contains('password')"),
        file("release names its version", {"path": f"{p}/release",
                                           "matches": "^version=[0-9.]+$"},
             f"assert host.file({r + '/release'!r}).contains('^version=[0-9.]*$')"),
        file("current points at the release", {"path": f"{p}/current", "type": "symlink"},
             f"f = host.file({r + '/current'!r})", "assert f.is_symlink",
             f"assert f.linked_to == {r + '/release'!r}"),
        file("the data folder", {"path": f"{p}/data", "type": "directory", "mode": "0750"},
             f"f = host.file({r + '/data'!r})", "assert f.is_directory",
             "assert f.mode == 0o750"),
        file("no stray backup", {"path": f"{p}/app.conf.orig", "exists": False},
             f"assert not host.file({r + '/app.conf.orig'!r}).exists"),
        file("/etc/passwd has root", {"path": "/etc/passwd", "contains": "root:x:0:0"},
             "assert host.file('/etc/passwd').contains('root:x:0:0')"),
        file("this is Debian", {"path": "/etc/os-release", "matches": "^ID=debian$"},
             "assert host.file('/etc/os-release').contains('^ID=debian$')"),
        file("/tmp is sticky", {"path": "/tmp", "type": "directory", "mode": "1777"},
             "f = host.file('/tmp')", "assert f.is_directory", "assert f.mode == 0o1777"),
        file("a shell", {"path": "/bin/sh", "exists": True},
             "assert host.file('/bin/sh').exists"),
    ]
    for number, port in enumerate(fx.listeners, start=1):
        fields: dict[str, Any] = {"port": port}
        if number % 2:
            fields["address"] = "127.0.0.1"
        checks.append(Spec(net_cls, f"listener {number} listens", "port", fields, (
            f"assert host.socket('tcp://127.0.0.1:{port}').is_listening",)))
    checks.append(Spec(web_cls, "the server listens", "port",
                       {"port": "${param.port}", "address": "127.0.0.1"},
                       (f"assert host.socket('tcp://127.0.0.1:{fx.http_port}').is_listening",)))
    url = f"http://127.0.0.1:{fx.http_port}"
    base = "http://127.0.0.1:${param.port}"
    checks += [
        Spec(web_cls, "the index page", "http", {"url": f"{base}/", "body": "smoke bench index"},
             (f"status, body = http(host, {url + '/'!r})", "assert status == 200",
              "assert 'smoke bench index' in body")),
        Spec(web_cls, "the status page", "http", {"url": f"{base}/status.txt", "body": "ok",
                                                  "body_absent": "error"},
             (f"status, body = http(host, {url + '/status.txt'!r})", "assert status == 200",
              "assert 'ok' in body", "assert 'error' not in body")),
        Spec(web_cls, "the app is ready", "http", {"url": f"{base}/app.json",
                                                   "body": '"ready": true'},
             (f"status, body = http(host, {url + '/app.json'!r})", "assert status == 200",
              "assert '\"ready\": true' in body")),
        Spec(web_cls, "a missing page is a 404", "http", {"url": f"{base}/missing",
                                                          "status": 404},
             (f"status, _ = http(host, {url + '/missing'!r})", "assert status == 404")),
        Spec(web_cls, "HEAD answers", "http", {"url": f"{base}/", "method": "HEAD"},
             (f"status, _ = http(host, {url + '/'!r}, '-I')", "assert status == 200")),
        Spec(web_cls, "the index is HTML", "http", {"url": f"{base}/",
                                                    "headers": {"Content-Type": "text/html"}},
             (f"status, headers = http(host, {url + '/'!r}, '-D', '-', '-o', '/dev/null')",
              "assert status == 200", "assert 'content-type: text/html' in headers.lower()")),
    ]
    server = f"http.server {fx.http_port}"
    checks += [
        Spec(sys_cls, "the sleeper runs", "process",
             {"name": "sleep", "command": f"sleep {SLEEP_SECONDS}"},
             (f"assert [p for p in host.process.filter(comm='sleep') "
              f"if {'sleep ' + SLEEP_SECONDS!r} in p.args]",)),
        Spec(sys_cls, "the web server runs as its user", "process",
             {"command": server, "user": me},
             (f"assert [p for p in host.process.filter(user={me!r}) if {server!r} in p.args]",)),
        Spec(sys_cls, "the web server is Python", "process",
             {"name": fx.server_comm, "command": "-m http.server"},
             (f"assert [p for p in host.process.filter(comm={fx.server_comm!r}) "
              f"if '-m http.server' in p.args]",)),
        Spec(sys_cls, "no telnetd", "process", {"name": "telnetd", "running": False},
             ("assert not host.process.filter(comm='telnetd')",)),
    ]

    def command(name: str, fields: dict[str, Any], *test: str) -> Spec:
        return Spec(sys_cls, name, "command", fields, test)

    checks += [
        command("true is true", {"run": "true"}, "assert host.run('true').rc == 0"),
        command("the root is a folder", {"run": "test -d /"},
                "assert host.run('test -d /').rc == 0"),
        command("passwd is readable", {"run": "test -r /etc/passwd"},
                "assert host.run('test -r /etc/passwd').rc == 0"),
        command("echo echoes", {"run": "echo hello", "stdout": "hello"},
                "result = host.run('echo hello')", "assert result.rc == 0",
                "assert 'hello' in result.stdout"),
        command("this is Linux", {"run": ["uname", "-s"], "stdout": "Linux"},
                "result = host.run('uname -s')", "assert result.rc == 0",
                "assert 'Linux' in result.stdout"),
        command("an expected exit status", {"run": "exit 3", "exit_status": 3},
                "assert host.run('exit 3').rc == 3"),
        command("the root has etc", {"run": "ls /", "stdout": "etc",
                                     "stdout_absent": "No such"},
                "result = host.run('ls /')", "assert result.rc == 0",
                "assert 'etc' in result.stdout", "assert 'No such' not in result.stdout"),
        command("root is in passwd", {"run": "grep -q '^root:' /etc/passwd"},
                "assert host.run(\"grep -q '^root:' /etc/passwd\").rc == 0"),
    ]
    for name in ("bash", "coreutils", "curl"):
        checks.append(Spec(sys_cls, f"{name} is installed", "package", {"name": name},
                           (f"assert host.package({name!r}).is_installed",)))
    checks.append(Spec(sys_cls, "dpkg is recent", "package",
                       {"name": "dpkg", "version": ">= 1.20"},
                       ("p = host.package('dpkg')", "assert p.is_installed",
                        "assert host.run('dpkg --compare-versions %s ge 1.20', "
                        "p.version).rc == 0")))
    checks += [
        Spec(acc_cls, "root", "user",
             {"name": "root", "uid": 0, "home": root_account.pw_dir,
              "shell": root_account.pw_shell, "groups": ["root"]},
             ("u = host.user('root')", "assert u.exists", "assert u.uid == 0",
              f"assert u.home == {root_account.pw_dir!r}",
              f"assert u.shell == {root_account.pw_shell!r}", "assert 'root' in u.groups")),
        Spec(acc_cls, "www-data", "user", {"name": "www-data", "home": www.pw_dir},
             ("u = host.user('www-data')", "assert u.exists",
              f"assert u.home == {www.pw_dir!r}")),
        Spec(acc_cls, "nobody", "user", {"name": "nobody", "uid": nobody.pw_uid},
             (f"assert host.user('nobody').uid == {nobody.pw_uid}",)),
        Spec(acc_cls, "no guest", "user", {"name": "opslab-bench-guest", "exists": False},
             ("assert not host.user('opslab-bench-guest').exists",)),
        Spec(acc_cls, "group root", "group", {"name": "root", "gid": 0, "members": ["root"]},
             ("g = host.group('root')", "assert g.exists", "assert g.gid == 0",
              "assert 'root' in host.user('root').groups")),
        Spec(acc_cls, "group adm", "group", {"name": "adm"},
             ("assert host.group('adm').exists",)),
        Spec(acc_cls, "group www-data", "group", {"name": "www-data"},
             ("assert host.group('www-data').exists",)),
        Spec(acc_cls, "no stray group", "group", {"name": "opslab-bench-group", "exists": False},
             ("assert not host.group('opslab-bench-group').exists",)),
    ]
    if len(checks) != CHECKS:
        raise BenchmarkError(f"{len(checks)} passing checks, not {CHECKS}")
    return checks


def _exists(lookup: Callable[[str], Any], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def waiting_checks() -> list[Spec]:
    """50 checks that each wait a little (a command sleeping): what the bound is for."""
    return [Spec("waits", f"waits {number}", "command",
                 {"run": f"sleep {WAIT_SECONDS:g}"}, (f"assert host.run('sleep {WAIT_SECONDS:g}')"
                                                      ".rc == 0",))
            for number in range(1, CHECKS + 1)]


def failing_checks(fx: Fixture) -> list[Spec]:
    """The 50 checks that fail quickly: ports nothing listens on."""
    return [Spec("closed", f"port {port} listens", "port",
                 {"port": port, "address": "127.0.0.1"},
                 (f"assert host.socket('tcp://127.0.0.1:{port}').is_listening",))
            for port in fx.closed]


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases: check files may not have them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_tree(tree: Path, suites: dict[str, list[Spec]]) -> None:
    """The control repository: a module per suite (the passing one, ``bench``, also has
    a class without checks), each with its checks.yaml and a manifest per class."""
    documents: dict[str, dict[str, list[dict[str, Any]]]] = {MODULE: {f"{MODULE}::empty": []}}
    for specs in suites.values():
        for spec in specs:
            document = documents.setdefault(spec.cls.partition("::")[0], {})
            document.setdefault(spec.cls, []).append({"name": spec.name,
                                                      spec.kind: dict(spec.fields)})
    for name, document in documents.items():
        module = tree / "modules" / name
        (module / "manifests").mkdir(parents=True)
        for cls in document:
            manifest = (cls.partition("::")[2] or "init") + ".pp"
            (module / "manifests" / manifest).write_text(f"class {cls} {{\n}}\n",
                                                         encoding="utf-8")
        (module / "checks.yaml").write_text(
            yaml.dump(document, Dumper=_Dumper, sort_keys=False), encoding="utf-8")


def write_classification(path: Path, classes: list[str], fx: Fixture) -> None:
    """A classification as the ENC prints it, with the classes' parameters."""
    parameters = {f"{MODULE}::files": {"root": str(fx.root)},
                  f"{MODULE}::web": {"port": fx.http_port}}
    path.write_text(yaml.safe_dump({
        "classes": {cls: parameters.get(cls, {}) for cls in classes},
        "parameters": {"cluster": "bench"}, "environment": "production",
    }), encoding="utf-8")


def write_testinfra(path: Path, specs: list[Spec]) -> None:
    """The checks as a testinfra test module."""
    lines = [TESTINFRA_HEADER.rstrip("\n")]
    for number, spec in enumerate(specs, start=1):
        slug = re.sub(r"[^a-z0-9]+", "_", spec.name.lower()).strip("_")
        lines += ["", "", f"def test_{number:02d}_{slug}(host):",
                  *(f"    {line}" for line in spec.test)]
    if not specs:
        lines += ["", "", "def test_nothing(host):", "    pass"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- whole processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A measured command and how to tell that it answered rightly; ``verify`` returns the
    command's own time for its checks (opslab's ``duration``) or None."""

    argv: list[str]
    environment: dict[str, str]
    cwd: Path
    verify: Callable[[Run], float | None]


def expect_opslab(passed: int, failed: int) -> Callable[[Run], float | None]:
    def verify(run: Run) -> float | None:
        if run.returncode != (1 if failed else 0):
            raise BenchmarkError(f"opslab smoke run exited {run.returncode}:\n"
                                 f"{run.stdout[-1500:]}{run.stderr[-1500:]}")
        document = json.loads(run.stdout)
        if (document["passed"], document["failed"]) != (passed, failed):
            wrong = [f"{r['class']}: {r['check']}: {r['message']}"
                     for r in document["results"] if r["status"] != ("failed" if failed
                                                                     else "passed")]
            raise BenchmarkError(f"opslab: {document['passed']} passed, {document['failed']} "
                                 f"failed; expected {passed} and {failed}:\n"
                                 + "\n".join(wrong[:10]))
        return float(document["duration"])
    return verify


def expect_pytest(passed: int, failed: int) -> Callable[[Run], float | None]:
    def verify(run: Run) -> float | None:
        tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed)",
                                                                    tail)}
        if (counts.get("passed", 0), counts.get("failed", 0)) != (passed, failed) \
                or run.returncode != (1 if failed else 0):
            raise BenchmarkError(f"pytest exited {run.returncode} saying {tail!r}; expected "
                                 f"{passed} passed, {failed} failed:\n"
                                 f"{run.stdout[-2500:]}{run.stderr[-1500:]}")
        return None
    return verify


def expect_success(run: Run) -> float | None:
    if run.returncode != 0:
        raise BenchmarkError(f"exited {run.returncode}: {run.stderr[-1500:]}")
    return None


def measure(commands: dict[str, Command], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Wall times (s) and own times per command: one checked warm-up each, then ``rounds``
    interleaved rounds, the order rotating."""
    names = list(commands)
    for name in names:
        command = commands[name]
        command.verify(run_measured(command.argv, COMMAND_TIMEOUT, command.environment,
                                    command.cwd))
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "own": []} for name in names}
    for round_number in range(rounds):
        for name in rotated(names, round_number):
            command = commands[name]
            run = run_measured(command.argv, COMMAND_TIMEOUT, command.environment, command.cwd)
            own = command.verify(run)
            samples[name]["wall"].append(run.seconds)
            samples[name]["cpu"].append(run.cpu)
            if own is not None:
                samples[name]["own"].append(own)
        print(f"  round {round_number + 1}/{rounds}: " + ", ".join(
            f"{name} {samples[name]['wall'][-1]:.3f}" for name in names), flush=True)
    return samples


def report(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Print median, p90, min (wall), CPU and the command's own time; returns them."""
    print(f"\n{'command':<28} {'median':>8} {'p90':>8} {'min':>8} {'CPU':>8} {'own':>8}"
          "   (s; wall of the whole process; own: opslab's duration)")
    stats = {}
    for name, values in samples.items():
        wall, cpu, own = summary(values["wall"]), summary(values["cpu"]), values["own"]
        own_median = statistics.median(own) if own else None
        stats[name] = {"wall": wall, "cpu": cpu, "own": summary(own) if own else None,
                       "samples": values}
        print(f"{name:<28} {wall['median']:8.3f} {wall['p90']:8.3f} {wall['min']:8.3f} "
              f"{cpu['median']:8.3f} " + (f"{own_median:8.3f}" if own_median is not None
                                         else f"{'':>8}"))
    return stats


def ratio(stats: dict[str, Any], slower: str, faster: str, key: str = "wall") -> dict[str, float]:
    """``slower`` / ``faster``: of the medians, and the median of the rounds' own ratios."""
    a, b = stats[slower]["samples"][key], stats[faster]["samples"][key]
    return {"of_medians": statistics.median(a) / statistics.median(b),
            "median_of_rounds": statistics.median(x / y for x, y in zip(a, b, strict=True))}


def print_ratio(label: str, value: dict[str, float]) -> None:
    print(f"{label:<52} {value['of_medians']:6.2f}x   (rounds' own ratios: median "
          f"{value['median_of_rounds']:.2f}x)")


# --- in process ----------------------------------------------------------------------------


def profile_in_process(tree: Path, classification: Path, repeats: int) -> dict[str, Any]:
    """Where opslab's time goes, in this process: reading the checks, the facts, running
    them at several bounds, one check of each kind."""
    from opslab.smoketests import facts, host, runner, suite

    document = yaml.safe_load(classification.read_text(encoding="utf-8"))
    applied = host.from_classification(document)
    applied.tree, applied.certname = str(tree), CERTNAME
    read, gathered = [], []
    checks: list[Any] = []
    for _ in range(repeats):
        started = time.perf_counter()
        checks = suite.checks_of(applied)
        read.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = facts.gather(CERTNAME)
        gathered.append(time.perf_counter() - started)
    values_of = suite.values_for(applied, found, None)
    runs: dict[str, list[float]] = {}
    per_kind: dict[str, list[float]] = {}
    for _ in range(repeats):
        for concurrency in (1, runner.DEFAULT_CONCURRENCY, CHECKS):
            started = time.perf_counter()
            results = runner.run(checks, values_of, None, concurrency)
            runs.setdefault(str(concurrency), []).append(time.perf_counter() - started)
            failed = [f"{r.check.name}: {r.message}" for r in results if r.status != "passed"]
            if failed or len(results) != CHECKS:
                raise BenchmarkError("in process, checks did not pass: " + "; ".join(failed))
            if concurrency == 1:
                for result in results:
                    per_kind.setdefault(result.check.kind, []).append(result.duration)
    counts = {kind: len(values) // repeats for kind, values in per_kind.items()}
    return {
        "read_checks": summary(read), "gather_facts": summary(gathered),
        "run": {concurrency: summary(values) for concurrency, values in runs.items()},
        "per_kind_median": {kind: statistics.median(values)
                            for kind, values in per_kind.items()},
        "per_kind_total": {kind: statistics.median(values) * counts[kind]
                           for kind, values in per_kind.items()},
        "per_kind_count": counts,
    }


def print_profile(profile: dict[str, Any]) -> None:
    print(f"read and validate checks.yaml (50 checks, 5 classes): "
          f"{profile['read_checks']['median'] * 1000:7.2f} ms")
    print(f"gather facts (ip -json address, facts.d):              "
          f"{profile['gather_facts']['median'] * 1000:7.2f} ms")
    for concurrency, row in profile["run"].items():
        print(f"run the 50 checks, concurrency {concurrency:>2}:                   "
              f"{row['median'] * 1000:7.2f} ms (p90 {row['p90'] * 1000:.2f})")
    print("one check, by kind (median at concurrency 1; count x median):")
    for kind, value in sorted(profile["per_kind_median"].items(), key=lambda item: -item[1]):
        print(f"  {kind:<8} {value * 1000:7.2f} ms  x {profile['per_kind_count'][kind]:2d} = "
              f"{profile['per_kind_total'][kind] * 1000:7.2f} ms")


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """``-X importtime`` lines as (module, self us, cumulative us)."""
    modules = []
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
            if self_us.strip().isdigit():
                modules.append((name.strip(), int(self_us), int(cumulative_us)))
    return modules


def profile_imports(environment: dict[str, str], repeats: int) -> dict[str, Any]:
    """What ``opslab smoke`` imports at start-up: total and the slowest, medians."""
    per_module: dict[str, list[int]] = {}
    for _ in range(repeats + 1):  # the first fills the bytecode cache
        run = run_measured([sys.executable, "-X", "importtime", "-c", SMOKE_IMPORT],
                           COMMAND_TIMEOUT, environment, Path(tempfile.gettempdir()))
        expect_success(run)
        for name, self_us, _ in parse_importtime(run.stderr):
            per_module.setdefault(name, []).append(self_us)
    medians = {name: statistics.median(values[1:] or values) / 1000
               for name, values in per_module.items()}
    packages: dict[str, float] = {}
    for name, ms in medians.items():
        top = name.split(".")[0] if not name.startswith("opslab") else \
            ".".join(name.split(".")[:2])
        packages[top] = packages.get(top, 0.0) + ms
    return {"modules": len(medians), "total_ms": sum(medians.values()),
            "by_package_ms": dict(sorted(packages.items(), key=lambda item: -item[1])[:12])}


# --- the run -------------------------------------------------------------------------------


def benchmark(arguments: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    environment = bytecode_environment(workdir / "pycache")
    opslab = find_script("opslab")
    pytest = str(Path(sys.executable).parent / "pytest")
    if not Path(pytest).exists():
        raise BenchmarkError("pytest is not installed here: pip install pytest-testinfra "
                             "pytest-xdist (tox -e bench has them)")
    pytest_environment = {**environment, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for plugin in ("testinfra.plugin", "xdist.plugin"):
        if subprocess.run([sys.executable, "-c", f"import {plugin}"], capture_output=True,
                          timeout=COMMAND_TIMEOUT, check=False).returncode != 0:
            raise BenchmarkError(f"{plugin.partition('.')[0]} is not installed here: pip "
                                 "install pytest-testinfra pytest-xdist (tox -e bench has them)")

    print("\n== 1. the fixture, the control repository, the testinfra modules ==")
    fx = make_fixture(workdir, environment)
    try:
        suites = {"passing": passing_checks(fx), "failing": failing_checks(fx),
                  "waiting": waiting_checks()}
        tree = workdir / "control"
        write_tree(tree, suites)
        classifications = {}
        for name, classes in (("passing", sorted({s.cls for s in suites["passing"]})),
                              ("failing", ["closed"]),
                              ("waiting", ["waits"]),
                              ("empty", [f"{MODULE}::empty"])):
            classifications[name] = workdir / f"{name}.yaml"
            write_classification(classifications[name], classes, fx)
        tests = workdir / "testinfra"
        tests.mkdir()
        (tests / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        for name, specs in (("passing", suites["passing"]), ("failing", suites["failing"]),
                            ("empty", [])):  # (the waiting suite is opslab's alone)
            write_testinfra(tests / f"test_{name}.py", specs)
        kinds: dict[str, int] = {}
        for spec in suites["passing"]:
            kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
        print(f"passing suite: {', '.join(f'{count} {kind}' for kind, count in kinds.items())}"
              f"; failing suite: {len(suites['failing'])} closed ports")
        print(f"files in {fx.root}, http.server on port {fx.http_port}, listeners on "
              f"{', '.join(map(str, fx.listeners))}, sleep {SLEEP_SECONDS} "
              f"(pid {fx.processes[1].pid})")
        validated = succeeded_run([opslab, "smoke", "validate", str(tree)], environment, workdir)
        print(f"opslab smoke validate: {validated.stdout.strip()}")

        def smoke(suite: str, *extra: str) -> list[str]:
            return [opslab, "smoke", "run", "--tree", str(tree), "--classification",
                    str(classifications[suite]), "--certname", CERTNAME, "--json", *extra]

        def testinfra(suite: str, *extra: str) -> list[str]:
            return [pytest, *PYTEST_OPTIONS, *extra, f"test_{suite}.py"]

        def opslab_cmd(argv: list[str], passed: int, failed: int) -> Command:
            return Command(argv, environment, workdir, expect_opslab(passed, failed))

        def pytest_cmd(argv: list[str], passed: int, failed: int) -> Command:
            return Command(argv, pytest_environment, tests, expect_pytest(passed, failed))

        passing = {
            "opslab": opslab_cmd(smoke("passing"), CHECKS, 0),
            "opslab --concurrency 1": opslab_cmd(smoke("passing", "--concurrency", "1"),
                                                 CHECKS, 0),
            f"opslab --concurrency {CHECKS}": opslab_cmd(
                smoke("passing", "--concurrency", str(CHECKS)), CHECKS, 0),
            "testinfra": pytest_cmd(testinfra("passing"), CHECKS, 0),
            f"testinfra -n {XDIST_WORKERS}": pytest_cmd(testinfra("passing", *XDIST_OPTIONS),
                                                        CHECKS, 0),
            "floor: opslab, no checks": opslab_cmd(smoke("empty"), 0, 0),
            "floor: testinfra, empty test": pytest_cmd(testinfra("empty"), 1, 0),
            "floor: python -c pass": Command([sys.executable, "-c", "pass"], environment,
                                             workdir, expect_success),
        }
        failing = {
            "opslab": opslab_cmd(smoke("failing"), 0, CHECKS),
            "testinfra": pytest_cmd(testinfra("failing"), 0, CHECKS),
            f"testinfra -n {XDIST_WORKERS}": pytest_cmd(testinfra("failing", *XDIST_OPTIONS),
                                                        0, CHECKS),
        }
        waiting = {
            "opslab": opslab_cmd(smoke("waiting"), CHECKS, 0),
            "opslab --concurrency 1": opslab_cmd(smoke("waiting", "--concurrency", "1"),
                                                 CHECKS, 0),
            f"opslab --concurrency {CHECKS}": opslab_cmd(
                smoke("waiting", "--concurrency", str(CHECKS)), CHECKS, 0),
        }
        results: dict[str, Any] = {"rounds": arguments.rounds, "checks": CHECKS,
                                   "kinds": kinds, "xdist_workers": XDIST_WORKERS}

        print(f"\n== 2-3. {CHECKS} passing checks: whole processes, {arguments.rounds} "
              "interleaved rounds (after a checked warm-up) ==")
        stats = report(measure(passing, arguments.rounds))
        ratios = {
            "testinfra_over_opslab": ratio(stats, "testinfra", "opslab"),
            "testinfra_xdist_over_opslab": ratio(stats, f"testinfra -n {XDIST_WORKERS}",
                                                 "opslab"),
            "concurrency_1_over_default": ratio(stats, "opslab --concurrency 1", "opslab"),
            "concurrency_1_over_default_own": ratio(stats, "opslab --concurrency 1", "opslab",
                                                    "own"),
            f"concurrency_{CHECKS}_over_default_own": ratio(
                stats, f"opslab --concurrency {CHECKS}", "opslab", "own"),
        }
        print()
        print_ratio("testinfra / opslab", ratios["testinfra_over_opslab"])
        print_ratio(f"testinfra -n {XDIST_WORKERS} / opslab",
                    ratios["testinfra_xdist_over_opslab"])
        print_ratio("opslab --concurrency 1 / default (whole process)",
                    ratios["concurrency_1_over_default"])
        print_ratio("opslab --concurrency 1 / default (own duration)",
                    ratios["concurrency_1_over_default_own"])
        print_ratio(f"opslab --concurrency {CHECKS} / default (own duration)",
                    ratios[f"concurrency_{CHECKS}_over_default_own"])
        results["passing"] = {"stats": stats, "ratios": ratios}

        print(f"\n== 3. {CHECKS} failing checks (closed ports): {arguments.rounds} interleaved "
              "rounds ==")
        failing_stats = report(measure(failing, arguments.rounds))
        failing_ratios = {
            "testinfra_over_opslab": ratio(failing_stats, "testinfra", "opslab"),
            "testinfra_xdist_over_opslab": ratio(failing_stats, f"testinfra -n {XDIST_WORKERS}",
                                                 "opslab"),
        }
        print()
        print_ratio("testinfra / opslab", failing_ratios["testinfra_over_opslab"])
        print_ratio(f"testinfra -n {XDIST_WORKERS} / opslab",
                    failing_ratios["testinfra_xdist_over_opslab"])
        results["failing"] = {"stats": failing_stats, "ratios": failing_ratios}

        print(f"\n== 3. {CHECKS} checks that each wait {WAIT_SECONDS:g} s (a command "
              f"sleeping): the bound, {arguments.rounds} interleaved rounds ==")
        waiting_stats = report(measure(waiting, arguments.rounds))
        waiting_ratios = {
            "concurrency_1_over_default_own": ratio(waiting_stats, "opslab --concurrency 1",
                                                    "opslab", "own"),
            f"concurrency_{CHECKS}_over_default_own": ratio(
                waiting_stats, f"opslab --concurrency {CHECKS}", "opslab", "own"),
        }
        print()
        print_ratio("opslab --concurrency 1 / default (own duration)",
                    waiting_ratios["concurrency_1_over_default_own"])
        print_ratio(f"opslab --concurrency {CHECKS} / default (own duration)",
                    waiting_ratios[f"concurrency_{CHECKS}_over_default_own"])
        results["waiting"] = {"stats": waiting_stats, "ratios": waiting_ratios}

        print(f"\n== 4. in this process ({IN_PROCESS_REPEATS} times each) ==")
        profile = profile_in_process(tree, classifications["passing"], IN_PROCESS_REPEATS)
        print_profile(profile)
        results["in_process"] = profile
    finally:
        fx.close()

    print(f"\n== 4. start-up imports: python -X importtime -c '{SMOKE_IMPORT}' ==")
    imports = profile_imports(environment, IMPORT_REPEATS)
    print(f"{imports['modules']} modules, {imports['total_ms']:.1f} ms (sum of each module's "
          f"own time, medians of {IMPORT_REPEATS}); by package (ms): " + ", ".join(
              f"{name} {ms:.1f}" for name, ms in imports["by_package_ms"].items()))
    results["imports"] = imports

    median = stats["opslab"]["wall"]["median"]
    own = stats["opslab"]["own"]["median"]
    results["targets"] = print_targets({
        f"{CHECKS} passing local checks well under a second (whole opslab smoke run, median "
        f"under {WELL_UNDER_TARGET_S:g} s)": (
            median < WELL_UNDER_TARGET_S,
            f"{median:.3f} s whole process, {own:.3f} s running the checks; testinfra "
            f"{stats['testinfra']['wall']['median']:.3f} s "
            f"({ratios['testinfra_over_opslab']['of_medians']:.1f}x), with xdist "
            f"{stats[f'testinfra -n {XDIST_WORKERS}']['wall']['median']:.3f} s"),
    })
    return results


def succeeded_run(argv: list[str], environment: dict[str, str], cwd: Path) -> Run:
    run = run_measured(argv, COMMAND_TIMEOUT, environment, cwd)
    if run.returncode != 0:
        raise BenchmarkError(f"{' '.join(argv[:3])} exited {run.returncode}:\n"
                             f"{run.stdout[-1500:]}{run.stderr[-2500:]}")
    return run


def main(argv: list[str] | None = None) -> int:
    """Run every measurement once and print the report; 0 whatever the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9,
                        help="interleaved rounds of each suite's commands (default 9)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    arguments = parser.parse_args(argv)
    if arguments.rounds < 2:
        parser.error("--rounds must be at least 2")
    with tempfile.TemporaryDirectory(prefix="opslab-smoke-bench-") as scratch:
        results = benchmark(arguments, Path(scratch))
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "smoke_benchmark")
