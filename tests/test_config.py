"""The configuration file: where it comes from, and what it refuses."""

from pathlib import Path

import pytest
import yaml

from opslab import config as opslab_config
from opslab.config import ConfigError, load, parse
from opslab.slapd import ThrowawaySlapd, free_port


def test_embedded_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPSLAB_CONFIG", raising=False)
    monkeypatch.setattr(opslab_config, "DEFAULT_PATH", str(tmp_path / "absent.yaml"))
    config = load()
    assert config.source == "embedded defaults"
    assert config.ldap.timeout == 5.0
    assert config.enc.mode == "opslab"


def test_environment_variable_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "opslab.yaml"
    path.write_text("ldap:\n  base: dc=example,dc=org\n  timeout: 1.5\n")
    monkeypatch.setenv("OPSLAB_CONFIG", str(path))
    config = load()
    assert (config.ldap.base, config.ldap.timeout, config.source) == (
        "dc=example,dc=org", 1.5, str(path))


def test_explicit_path_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").write_text("ldap: {base: 'dc=a'}\n")
    (tmp_path / "b.yaml").write_text("ldap: {base: 'dc=b'}\n")
    monkeypatch.setenv("OPSLAB_CONFIG", str(tmp_path / "a.yaml"))
    assert load(str(tmp_path / "b.yaml")).ldap.base == "dc=b"


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration file .*missing\.yaml"):
        load(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ldap:\n  tiemout: 3\n", "unknown keys: ldap.tiemout"),
        ("ldpa: {}\nenc: {colour: red}\n", "unknown keys: ldpa, enc.colour"),
        ("ldap:\n  timeout: soon\n", "ldap.timeout must be a number, got a string 'soon'"),
        ("ldap:\n  timeout: true\n", "ldap.timeout must be a number"),
        ("ldap:\n  timeout: 0\n", "ldap.timeout must be greater than 0"),
        ("ldap:\n  deadline: -1\n", "ldap.deadline must not be negative"),
        ("ldap:\n  starttls: 'yes'\n", "ldap.starttls must be true or false"),
        ("ldap:\n  bind_dn: [a]\n", "ldap.bind_dn must be a string or null"),
        ("ldap: []\n", "section 'ldap' must be a mapping"),
        ("- a\n", "expected a mapping of sections, got a list"),
        ("ldap: {uri: [\n", "not valid YAML"),
        ("enc:\n  mode: puppetmaster\n", "enc.mode must be one of opslab, terminus"),
        ("enc:\n  node_filter: cn=%s\n", "enc.node_filter must be an LDAP filter"),
        ("enc:\n  node_filter: (cn=foo)\n", "enc.node_filter must be an LDAP filter"),
        ("enc:\n  node_filter: (cn=%s))(\n", "enc.node_filter must be an LDAP filter"),
        ("enc:\n  class_attributes: [1]\n", "enc.class_attributes must be a list of strings"),
        ("enc:\n  attribute_parameters: some\n", "enc.attribute_parameters must be 'all'"),
        ("cache:\n  max_age: '1d'\n", "cache.max_age must be a number"),
        ("enc:\n  api_url: file:///etc/passwd\n",
         "enc.api_url 'file:///etc/passwd' is not an http:// or https:// URL with a host"),
        ("enc:\n  api_url: https://api.example.org:99999\n", "is not an http:// or https://"),
        ("enc:\n  api_url: https://me:pw@api.example.org\n",
         "enc.api_url must not carry a user or password"),
        ("ldap:\n  uri: http://ldap.example.org\n",
         "ldap.uri 'http://ldap.example.org' is not an ldap://, ldaps:// or ldapi:// URI"),
        ("accounts:\n  min_uid: 2000\n  max_uid: 1999\n",
         "accounts.min_uid (2000) is above accounts.max_uid (1999)"),
        ("accounts:\n  max_uid: many\n", "accounts.max_uid must be a whole number"),
        ("ldap:\n  uri: ldaps://ldap.example.org\n  starttls: true\n",
         "ldap.starttls: true is for ldap:// URIs"),
        ("ci:\n  trigger_phrases: ['  ']\n", "ci.trigger_phrases: '  ' is not a phrase"),
        ("ci:\n  trigger_phrases: [\"re\\ncheck\"]\n", "ci.trigger_phrases: 're\\ncheck' is"),
        ("ci:\n  trigger_phrases: []\n", "ci.trigger_phrases is empty"),
        ("ci:\n  trigger_phrases: recheck\n", "ci.trigger_phrases must be a list of strings"),
        ("ci:\n  projects: ['a b']\n", "ci.projects: 'a b' is not a project"),
        ("ci:\n  branches: ['']\n", "ci.branches: '' is not a branch pattern"),
        ("ci:\n  account: ''\n", "ci.account '' is not a Gerrit username"),
        ("ci:\n  trigger_project: Ops!\n", "ci.trigger_project: project name 'Ops!'"),
        ("ci:\n  dedup_seconds: 0\n", "ci.dedup_seconds must be greater than 0"),
        ("ci:\n  dedup_size: 0\n", "ci.dedup_size must be greater than 0"),
    ],
)
def test_bad_configuration_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text, "opslab.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("opslab.yaml: ")


def test_every_key_is_documented_with_its_default_in_docs_configuration() -> None:
    """docs/configuration.md has a row for every key: | `KEY` | DEFAULT | meaning |, the
    default either null (``null: ...``), none (``(none...``: an empty string) or its value
    in YAML between backticks."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    defaults = {}
    for line in page.splitlines():
        # A cell may hold "\|", a "|" that does not end it.
        cells = [cell.strip().replace("\0", "|")
                 for cell in line.replace("\\|", "\0").split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("`"):
            defaults[cells[0].strip("`")] = cells[1]
    for section, settings in opslab_config._SECTIONS.items():
        for name in settings._fields:
            key = f"{section}.{name}"
            assert key in defaults, f"{key} is not in docs/configuration.md"
            documented, actual = defaults[key], getattr(settings(), name)
            if documented.startswith("null"):
                assert actual is None, f"{key}: documented null, is {actual!r}"
            elif documented.startswith("(none"):
                assert actual == "", f"{key}: documented as none, is {actual!r}"
            else:
                value = yaml.safe_load(documented.split("`")[1])
                expected = list(actual) if isinstance(actual, tuple) else actual
                assert value == expected, f"{key}: documented {value!r}, is {expected!r}"


# Channels that decide who logs in and who gets root: never cleartext to another host
# unless the configuration says so.


@pytest.mark.parametrize(("uri", "host"), [
    ("ldap://ldap.example.org", "ldap.example.org"),
    ("ldap://192.0.2.10:389", "192.0.2.10"),
    ("ldap://[2001:db8::1]:389/", "2001:db8::1"),
    ("ldap://127.0.0.1.example.org", "127.0.0.1.example.org"),
    ("ldap://localhost.example.org", "localhost.example.org"),
])
def test_cleartext_ldap_to_another_host_is_refused(uri: str, host: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(f"ldap:\n  uri: '{uri}'\n", "opslab.yaml")
    assert str(error.value).startswith(f"opslab.yaml: ldap.uri '{uri}' is cleartext to {host}:")
    assert "ldap.starttls: true" in str(error.value)
    assert "ldap.insecure: true" in str(error.value)


# libldap takes a list (commas or white space between URIs) and falls back from one to
# the next: the cleartext rule would see only the first.
URI_LISTS = ["ldaps://ldap.example.org,ldap://192.0.2.10", "ldapi:///,ldap://evil.example.org",
             "ldaps://ldap.example.org ldap://192.0.2.10", "ldaps://a.example.org\tldaps://b",
             "ldap://127.0.0.1,ldaps://ldap.example.org", "ldaps://ldap.example.org,",
             "ldaps://ldap.example.org/dc=example,dc=org"]


@pytest.mark.parametrize("uri", URI_LISTS)
def test_a_list_of_directory_uris_is_refused(uri: str) -> None:
    for settings in ({"uri": uri}, {"uri": uri, "insecure": True}):
        with pytest.raises(ConfigError) as error:
            parse(yaml.safe_dump({"ldap": settings}), "opslab.yaml")
        assert str(error.value).startswith(f"opslab.yaml: ldap.uri {uri!r} is a list of URIs")
        assert "give exactly one" in str(error.value)


def test_libldap_does_fall_back_along_a_list(slapd: ThrowawaySlapd) -> None:
    """Why lists are refused: libldap reaches the second URI when the first fails."""
    import ldap

    connection = ldap.initialize(f"ldaps://127.0.0.1:{free_port()},{slapd.ldap_uri}")
    connection.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    connection.set_option(ldap.OPT_TIMEOUT, 5.0)
    try:
        connection.simple_bind_s("", "")
        # Nothing listens on the first: the answer came over cleartext ldap://.
        assert connection.whoami_s() == ""
    finally:
        connection.unbind_s()


def test_the_uid_range_is_configurable() -> None:
    config = parse("accounts:\n  min_uid: 500\n  max_uid: 65533\n", "opslab.yaml")
    assert (config.accounts.min_uid, config.accounts.max_uid) == (500, 65533)
    assert (opslab_config.Config().accounts.min_uid,
            opslab_config.Config().accounts.max_uid) == (1000, 60000)


@pytest.mark.parametrize("settings", [
    {"uri": "ldap://ldap.example.org", "starttls": True},
    {"uri": "ldap://ldap.example.org", "starttls": True, "ca_file": "/etc/ssl/ca.pem"},
    {"uri": "ldap://ldap.example.org", "insecure": True},
    {"uri": "ldaps://ldap.example.org"},
    {"uri": "ldapi:///"},
    {"uri": "ldapi://%2Frun%2Fslapd%2Fldapi"},
    {"uri": "ldap://127.0.0.1:389"},
    {"uri": "ldap://127.45.6.7"},
    {"uri": "ldap://localhost"},
    {"uri": "ldap://[::1]:389"},
    {"uri": "ldap:///"},  # no host: libldap's default, this one
])
def test_protected_or_local_directories_are_accepted(settings: dict[str, object]) -> None:
    assert parse(yaml.safe_dump({"ldap": settings}), "opslab.yaml").ldap.uri == settings["uri"]


@pytest.mark.parametrize("url", ["http://api.example.org", "http://192.0.2.10:8150/",
                                 "http://[2001:db8::1]:8150", "http://localhost.example.org"])
def test_cleartext_api_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(f"enc:\n  api_url: '{url}'\n", "opslab.yaml")
    assert str(error.value).startswith(f"opslab.yaml: enc.api_url '{url}' is cleartext to ")
    assert "enc.api_insecure: true" in str(error.value)


@pytest.mark.parametrize(("url", "insecure"), [
    ("https://api.example.org", False), ("https://api.example.org:8443/opslab", False),
    ("http://127.0.0.1:8150", False), ("http://localhost:8150", False),
    ("http://[::1]:8150", False), ("http://api.example.org", True),
])
def test_protected_or_local_apis_are_accepted(url: str, insecure: bool) -> None:
    config = parse(f"enc:\n  api_url: '{url}'\n  api_insecure: {str(insecure).lower()}\n",
                   "opslab.yaml")
    assert (config.enc.api_url, config.enc.api_insecure) == (url, insecure)
