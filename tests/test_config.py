"""The configuration file: where it comes from, and what it refuses."""

from pathlib import Path

import pytest

from opslab import config as opslab_config
from opslab.config import ConfigError, load, parse


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
        ("enc:\n  api_url: file:///etc/passwd\n", "enc.api_url must be an http:// or https://"),
    ],
)
def test_bad_configuration_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text, "opslab.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("opslab.yaml: ")


def test_every_key_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for section, settings in opslab_config._SECTIONS.items():
        for name in settings._fields:
            assert f"`{section}.{name}`" in readme, f"{section}.{name} undocumented"
