"""opslab-enc as Puppet runs it: a separate process, stdout for Puppet only.

Covers the exec node terminus contract, bad certnames, and the directory
going away (stopped, frozen) with and without a usable cache.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import ldap
import pytest
import yaml

from opslab.enc.cli import main
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, HOSTS, EncRunner, basic, host_ldif, write_config
from tests.http_stubs import Recorder, Trickler, redirecting_to
from tests.served_api import ServedApi

WEB1 = "web1.web.example.org"


def test_classification_on_stdout_only(config_file: Path, run_enc: EncRunner) -> None:
    result = run_enc("--config", str(config_file), WEB1)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    enc = yaml.safe_load(result.stdout)
    assert enc["environment"] == "production"
    assert enc["classes"]["motd"] == {"message": "web1: serving www.example.org"}
    assert enc["parameters"]["cluster"] == "codfw"


def test_output_reads_back_identically_in_puppets_yaml_loader(
    slapd: ThrowawaySlapd, config_file: Path, run_enc: EncRunner
) -> None:
    """Strings that Ruby would read as dates, numbers, booleans or Symbols stay strings."""
    tricky = ["2026-11-22", "yes", "off", "1,000", "1_000", ":symbol", "0x1F", "012", "1e3",
              "~", "null", "", " padded ", "a: b", "- item", "#hash", "!tag", "&anchor",
              "\u00fcber", "multi\nline", "tab\tbed"]
    lines = ["puppetClass: tricky"]
    lines += [f"opslabClassParameter: tricky::p{i}={json.dumps(v)}" for i, v in enumerate(tricky)]
    lines += ["opslabClassParameter: tricky::number=3", "opslabClassParameter: tricky::flag=false",
              "puppetVar: date=2026-11-22", "puppetVar: word=on", "puppetVar: version=1.10"]
    slapd.add_ldif(host_ldif("tricky.web.example.org", *lines))
    result = run_enc("--config", str(config_file), "tricky.web.example.org")
    assert result.returncode == 0, result.stderr

    ruby = subprocess.run(
        ["ruby", "-rpuppet", "-rjson", "-e",
         "print JSON.generate(Puppet::Util::Yaml.safe_load(STDIN.read, [Symbol]))"],
        input=result.stdout, capture_output=True, text=True, timeout=120, check=False,
    )
    assert ruby.returncode == 0, ruby.stderr
    seen_by_puppet = json.loads(ruby.stdout)
    assert seen_by_puppet == yaml.safe_load(result.stdout)
    params = seen_by_puppet["classes"]["tricky"]
    assert [params[f"p{i}"] for i in range(len(tricky))] == tricky
    assert (params["number"], params["flag"]) == (3, False)
    variables = seen_by_puppet["parameters"]
    assert (variables["date"], variables["word"], variables["version"]) == (
        "2026-11-22", "on", "1.10")


def test_explain_names_every_origin(config_file: Path, run_enc: EncRunner) -> None:
    result = run_enc("--config", str(config_file), "--explain", WEB1)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"cluster = \"codfw\"  from dc={WEB1},{HOSTS}" in text
    assert f"cluster = \"eqiad\"  from cn=web,ou=projects,dc=example,dc=org  (beaten by dc={WEB1}" \
        in text
    assert f"base  from dc=default,{HOSTS}" in text
    assert "environment: production  (branch 'production' from cn=web,ou=projects" in text


def test_unknown_node_exits_non_zero_with_nothing_on_stdout(
    config_file: Path, run_enc: EncRunner
) -> None:
    result = run_enc("--config", str(config_file), "nobody.web.example.org")
    assert (result.returncode, result.stdout) == (1, "")
    assert "unknown node nobody.web.example.org" in result.stderr


@pytest.mark.parametrize(
    "certname",
    ["*", ")(", "*)(cn=*", "\\", "\\2a", "WEB1.web.example.org", "a" * 300, f"{WEB1}\n",
     "web1.web.example.org)(|(cn=*", "--", "default", " web1"],
)
def test_bad_certnames_are_refused_before_any_search(
    config_file: Path, run_enc: EncRunner, certname: str
) -> None:
    result = run_enc("--config", str(config_file), "--", certname)
    assert (result.returncode, result.stdout) == (2, "")
    assert "certname" in result.stderr


def test_nul_in_certname_is_refused(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An argv cannot carry NUL; the check still guards in-process callers.
    assert main(["--config", str(config_file), "web1\x00.web.example.org"]) == 2
    assert capsys.readouterr().out == ""


def test_bad_config_is_a_usage_error(tmp_path: Path, run_enc: EncRunner) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("ldap:\n  base: dc=example,dc=org\n  tiemout: 1\n")
    result = run_enc("--config", str(path), WEB1)
    assert (result.returncode, result.stdout) == (2, "")
    assert "unknown keys: ldap.tiemout" in result.stderr


def test_config_from_environment_variable(config_file: Path, run_enc: EncRunner) -> None:
    result = run_enc(WEB1, env={"OPSLAB_CONFIG": str(config_file)})
    assert result.returncode == 0, result.stderr


def test_inconsistent_entries_print_nothing(
    slapd: ThrowawaySlapd, config_file: Path, run_enc: EncRunner
) -> None:
    slapd.add_ldif(host_ldif("halfway.web.example.org", "puppetClass: fine",
                             "parentNode: missing-parent"))
    result = run_enc("--config", str(config_file), "halfway.web.example.org")
    assert (result.returncode, result.stdout) == (4, "")
    assert "names parent node 'missing-parent'" in result.stderr


def test_bind_with_password_file(tmp_path: Path, slapd: ThrowawaySlapd, run_enc: EncRunner) -> None:
    secret = tmp_path / "bind.secret"
    secret.write_text(slapd.root_password + "\n")
    config = write_config(tmp_path / "opslab.yaml", slapd, ldap={
        "uri": slapd.ldap_uri, "bind_dn": slapd.root_dn, "bind_password_file": str(secret)})
    assert run_enc("--config", str(config), WEB1).returncode == 0

    secret.write_text("wrong-password-value")
    result = run_enc("--config", str(config), WEB1)
    assert (result.returncode, result.stdout) == (4, "")
    assert "invalid credentials" in result.stderr
    assert "wrong-password-value" not in result.stderr


def test_missing_base_is_an_error_not_an_unknown_node(
    tmp_path: Path, slapd: ThrowawaySlapd, run_enc: EncRunner
) -> None:
    config = write_config(tmp_path / "opslab.yaml", slapd, ldap={"base": "dc=nowhere,dc=org"})
    result = run_enc("--config", str(config), WEB1)
    assert (result.returncode, result.stdout) == (4, "")
    assert "does not exist" in result.stderr


def test_cache_write_failure_still_classifies(
    tmp_path: Path, slapd: ThrowawaySlapd, run_enc: EncRunner
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = write_config(tmp_path / "opslab.yaml", slapd, cache={"dir": str(blocker)})
    result = run_enc("--config", str(config), WEB1)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["environment"] == "production"
    assert "cannot update the cache" in result.stderr


# The directory goes away.


@pytest.fixture
def private_config(tmp_path: Path, private_slapd: ThrowawaySlapd) -> Path:
    return write_config(tmp_path / "opslab.yaml", private_slapd,
                        ldap={"timeout": 1, "connect_timeout": 1, "deadline": 3},
                        cache={"max_age": 600})


def cache_file(config: Path, node: str = WEB1) -> Path:
    return config.parent / "cache" / f"{node}.json"


def test_cache_served_while_directory_is_stopped(
    private_slapd: ThrowawaySlapd, private_config: Path, run_enc: EncRunner
) -> None:
    fresh = run_enc("--config", str(private_config), WEB1)
    assert fresh.returncode == 0
    assert cache_file(private_config).stat().st_mode & 0o077 == 0

    private_slapd.stop()
    served = run_enc("--config", str(private_config), WEB1)
    assert served.returncode == 0
    assert served.stdout == fresh.stdout
    assert "directory unavailable" in served.stderr
    assert "serving the cached classification" in served.stderr

    old = time.time() - 601
    os.utime(cache_file(private_config), (old, old))
    stale = run_enc("--config", str(private_config), WEB1)
    assert (stale.returncode, stale.stdout) == (3, "")
    assert "older than cache.max_age (600 s)" in stale.stderr

    private_slapd.start()  # back: the answer is confirmed and the cache fresh again
    again = run_enc("--config", str(private_config), WEB1)
    assert (again.returncode, again.stdout) == (0, fresh.stdout)
    assert time.time() - cache_file(private_config).stat().st_mtime < 60


def test_cache_served_when_directory_hangs(
    private_slapd: ThrowawaySlapd, private_config: Path, run_enc: EncRunner
) -> None:
    """A frozen slapd accepts connections but never answers: the timeouts must fire."""
    fresh = run_enc("--config", str(private_config), WEB1)
    assert fresh.returncode == 0
    os.kill(private_slapd.pid, signal.SIGSTOP)
    try:
        served = run_enc("--config", str(private_config), WEB1)
    finally:
        os.kill(private_slapd.pid, signal.SIGCONT)
    assert (served.returncode, served.stdout) == (0, fresh.stdout)
    assert "directory unavailable" in served.stderr


def test_hung_directory_without_cache_fails(
    private_slapd: ThrowawaySlapd, private_config: Path, run_enc: EncRunner
) -> None:
    os.kill(private_slapd.pid, signal.SIGSTOP)
    try:
        result = run_enc("--config", str(private_config), WEB1)
    finally:
        os.kill(private_slapd.pid, signal.SIGCONT)
    assert (result.returncode, result.stdout) == (3, "")
    assert "no cached classification" in result.stderr


def test_corrupt_cache_is_never_served(
    private_slapd: ThrowawaySlapd, private_config: Path, run_enc: EncRunner
) -> None:
    assert run_enc("--config", str(private_config), WEB1).returncode == 0
    private_slapd.stop()
    for garbage in ('{"format": 1, "node": "web1.web.exa', '{"format": 1, "node": "other", '
                    '"output": "---\\n"}', "\x00\x01binary"):
        cache_file(private_config).write_text(garbage)
        result = run_enc("--config", str(private_config), WEB1)
        assert (result.returncode, result.stdout) == (3, ""), garbage
        assert "corrupt" in result.stderr


def test_no_such_node_drops_the_cache(
    private_slapd: ThrowawaySlapd, private_config: Path, run_enc: EncRunner
) -> None:
    assert run_enc("--config", str(private_config), WEB1).returncode == 0
    connection = private_slapd.connect()
    connection.delete_s(f"dc={WEB1},{HOSTS}")
    connection.unbind_s()

    gone = run_enc("--config", str(private_config), WEB1)
    assert (gone.returncode, gone.stdout) == (1, "")
    assert not cache_file(private_config).exists()

    private_slapd.stop()  # and an outage afterwards must not resurrect it
    result = run_enc("--config", str(private_config), WEB1)
    assert (result.returncode, result.stdout) == (3, "")


def test_unchanged_answer_does_not_rewrite_the_cache(
    private_config: Path, private_slapd: ThrowawaySlapd, run_enc: EncRunner
) -> None:
    assert run_enc("--config", str(private_config), WEB1).returncode == 0
    inode = cache_file(private_config).stat().st_ino
    assert run_enc("--config", str(private_config), WEB1).returncode == 0
    assert cache_file(private_config).stat().st_ino == inode  # touched, not replaced

    connection = private_slapd.connect()
    connection.modify_s(f"dc={WEB1},{HOSTS}", [(ldap.MOD_REPLACE, "puppetVar", [b"cluster=ulsfo"])])
    connection.unbind_s()
    changed = run_enc("--config", str(private_config), WEB1)
    assert yaml.safe_load(changed.stdout)["parameters"]["cluster"] == "ulsfo"
    assert cache_file(private_config).stat().st_ino != inode  # replaced whole
    assert "ulsfo" in json.loads(cache_file(private_config).read_text())["output"]


def test_directory_down_from_the_start(tmp_path: Path, run_enc: EncRunner) -> None:
    never_started = ThrowawaySlapd("dc=example,dc=org")  # a free port, nobody listening
    config = write_config(tmp_path / "opslab.yaml", never_started, ldap={
        "uri": never_started.ldap_uri})
    never_started.destroy()
    result = run_enc("--config", str(config), WEB1)
    assert (result.returncode, result.stdout) == (3, "")
    assert "directory unavailable" in result.stderr


def test_internal_error_is_not_mistaken_for_an_unknown_node(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslab.enc import classifier

    def broken(self: object, certname: str) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(classifier.Classifier, "classify", broken)
    assert main(["--config", str(config_file), WEB1]) == 70
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "internal error" in captured.err
    assert "KeyError: 'a bug'" in captured.err


# Classifying through the API instead of LDAP.


def test_classification_through_the_api_with_the_same_cache_rules(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, run_enc: EncRunner
) -> None:
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    name = "viaapi.web.example.org"
    try:
        status, body = api.request("POST", "/v1/projects/web/hosts", headers=basic("carol"),
                                   body={"name": name, "variables": {"cluster": "esams"}})
        assert status == 201, body
        token_file = tmp_path / "host.token"
        token_file.write_text(json.loads(body)["token"] + "\n")
        config = tmp_path / "enc.yaml"
        config.write_text(yaml.safe_dump({
            "enc": {"api_url": api.url, "api_token_file": str(token_file), "api_timeout": 3},
            "cache": {"dir": str(tmp_path / "cache"), "max_age": 600}}))

        through_api = run_enc("--config", str(config), name)
        assert through_api.returncode == 0, through_api.stderr
        from_ldap = run_enc("--config", str(write_config(tmp_path / "ldap.yaml", slapd)), name)
        assert through_api.stdout == from_ldap.stdout  # exactly what opslab-enc prints

        # Another host's classification is refused (not an outage: no cache).
        other = run_enc("--config", str(config), WEB1)
        assert (other.returncode, other.stdout) == (4, "")
        assert f"not {WEB1}" in other.stderr

        api.stop()  # the API is down: the cached answer stands in
        served = run_enc("--config", str(config), name)
        assert (served.returncode, served.stdout) == (0, through_api.stdout)
        assert "serving the cached classification" in served.stderr

        api.start()
        # The entry vanishes from the directory (not through the API, so the token
        # stays): the API says "unknown node", and the cache goes with it.
        connection = slapd.connect()
        connection.delete_s(f"dc={name},{HOSTS}")
        connection.unbind_s()
        unknown = run_enc("--config", str(config), name)
        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert not (tmp_path / "cache" / f"{name}.json").exists()

        # A token the API does not know is refused (exit 4), not covered by a cache.
        token_file.write_text("not-a-token")
        refused = run_enc("--config", str(config), name)
        assert (refused.returncode, refused.stdout) == (4, "")
        assert "unknown host token" in refused.stderr
    finally:
        api.stop()


def test_the_enc_follows_no_redirect_and_no_cache_covers_one(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, run_enc: EncRunner
) -> None:
    """A redirect at enc.api_url (a proxy, a man in the middle) is never followed: the host
    token would go along to wherever it points, and that host's answer would be what
    Puppet applies. The API did answer, so the cache does not stand in (exit 4)."""
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    name = "redirected.web.example.org"
    try:
        status, body = api.request("POST", "/v1/projects/web/hosts", headers=basic("carol"),
                                   body={"name": name})
        assert status == 201, body
        token = json.loads(body)["token"]
        token_file = tmp_path / "host.token"
        token_file.write_text(token + "\n")
        settings = {"enc": {"api_url": api.url, "api_token_file": str(token_file),
                            "api_timeout": 5},
                    "cache": {"dir": str(tmp_path / "cache"), "max_age": 600}}
        config = tmp_path / "enc.yaml"
        config.write_text(yaml.safe_dump(settings))
        classified = run_enc("--config", str(config), name)
        assert classified.returncode == 0, classified.stderr  # and cached

        # Where the redirect points, the same answer waits: following it would "work".
        with Recorder(body=classified.stdout.encode()) as elsewhere, \
                redirecting_to(elsewhere.url) as proxy:
            settings["enc"]["api_url"] = proxy.url
            config.write_text(yaml.safe_dump(settings))
            redirected = run_enc("--config", str(config), name)
    finally:
        api.stop()
    assert (redirected.returncode, redirected.stdout) == (4, "")
    assert (f"answered HTTP 302, a redirect to '{elsewhere.url}/redirected': opslab-enc "
            "follows no redirect") in redirected.stderr
    assert "serving the cached classification" not in redirected.stderr
    assert [authorization for _, _, authorization in proxy.requests] == [f"Bearer {token}"]
    assert elsewhere.requests == []
    assert token not in redirected.stderr


def test_the_enc_gives_up_an_api_answer_that_trickles(tmp_path: Path,
                                                      run_enc: EncRunner) -> None:
    """A byte every 0.2 s keeps every read within a per-read timeout: enc.api_timeout is
    for the whole request. Puppet waits on the ENC; with no cached answer, exit 3."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/yaml\r\nContent-Length: 100\r\n"
            b"\r\n")
    token_file = tmp_path / "host.token"
    token_file.write_text("a-token\n")
    with Trickler(head, b"-" * 100, "body", interval=0.2) as api:
        config = tmp_path / "enc.yaml"
        config.write_text(yaml.safe_dump({
            "enc": {"api_url": api.url, "api_token_file": str(token_file), "api_timeout": 2},
            "cache": {"dir": str(tmp_path / "cache")}}))
        started = time.monotonic()
        result = run_enc("--config", str(config), WEB1)
        elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (3, "")
    assert "no complete answer within 2 s" in result.stderr
    assert elapsed < 2 + 6  # the process's start-up on a busy machine; the trickle takes 20 s


@pytest.mark.parametrize(("script", "problem"), [
    ("echo 'environment: web'; echo 'classes: [motd]'", None),
    ("echo 'no such node' >&2; exit 3", "the ENC refused {certname} (exit 3): no such node"),
    ("echo '- a list'", "the ENC printed something that is not a classification"),
    ("echo 'classes: [unclosed'", "the ENC printed something that is not a classification"),
])
def test_a_classification_is_what_the_enc_prints_or_a_clear_error(script: str,
                                                                  problem: str | None) -> None:
    """The one way apply and the smoke tests ask the ENC (opslab.puppet.classification)."""
    from opslab.puppet import ClassificationError, classification

    certname = "web1.web.example.org"
    enc = ["/bin/sh", "-c", script, "enc"]  # Puppet appends the certname: $1 here
    if problem is None:
        assert classification(enc, certname) == {"environment": "web", "classes": ["motd"]}
        return
    with pytest.raises(ClassificationError) as refused:
        classification(enc, certname)
    assert str(refused.value) == problem.format(certname=certname)


def test_an_enc_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    from opslab.puppet import ClassificationError, classification

    with pytest.raises(ClassificationError, match=r"^the ENC could not run: "):
        classification([str(tmp_path / "missing-enc")], "web1.web.example.org")
