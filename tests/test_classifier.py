"""The classification hierarchy, against the real slapd with the example directory."""

from pathlib import Path

import pytest

from opslab.config import Config, load
from opslab.directory import Directory
from opslab.enc.classifier import (
    Classification,
    ClassificationError,
    Classifier,
    UnknownNode,
)
from opslab.slapd import ThrowawaySlapd
from tests.conftest import HOSTS, PROJECTS, host_ldif, legacy_ldif, write_config


def classify(config: Config, certname: str) -> Classification:
    with Directory(config.ldap) as directory:
        return Classifier(directory, config).classify(certname)


@pytest.fixture
def config(config_file: Path) -> Config:
    return load(str(config_file))


@pytest.fixture
def terminus(tmp_path: Path, slapd: ThrowawaySlapd) -> Config:
    return load(str(write_config(tmp_path / "terminus.yaml", slapd, enc={"mode": "terminus"})))


def test_host_project_and_default_merge_most_specific_wins(config: Config) -> None:
    result = classify(config, "web1.web.example.org")

    assert list(result.classes) == ["role::web", "motd", "base"]
    assert result.to_enc()["parameters"] == {
        "cluster": "codfw",  # host beats project (eqiad) and default (unassigned)
        "site_name": "www.example.org",  # from the project
        "ntp_server": "ntp.example.org",  # from default
        "monitored": True,  # "true" becomes a boolean, as in the terminus
    }
    assert result.parameters["cluster"].origin == f"dc=web1.web.example.org,{HOSTS}"
    assert result.parameters["site_name"].origin == f"cn=web,{PROJECTS}"
    assert result.classes["base"] == [f"dc=default,{HOSTS}"]
    # The host's class parameter beats the project's, and is kept with its origin.
    message = result.class_parameters["motd"]["message"]
    assert (message.value, message.origin) == (
        "web1: serving www.example.org",
        f"dc=web1.web.example.org,{HOSTS}",
    )
    assert result.environment == "production"
    assert [role for role, _ in result.layers] == ["host", "project", "default"]


def test_classes_with_parameters_make_classes_a_mapping(config: Config) -> None:
    enc = classify(config, "web1.web.example.org").to_enc()
    assert enc["classes"] == {
        "role::web": {},
        "motd": {"message": "web1: serving www.example.org"},
        "base": {},
    }


def test_project_named_on_host_entry_beats_the_fqdn(config: Config) -> None:
    result = classify(config, "builder.example.org")
    assert ("project", f"cn=tools,{PROJECTS}") in result.layers
    # The host's own branch override beats the project's feature branch.
    assert (result.branch, result.environment) == ("production", "production")


def test_project_branch_maps_to_environment(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("ci1.tools.example.org"))
    result = classify(config, "ci1.tools.example.org")
    assert result.branch == "feature/Tools-MOTD"
    assert result.environment == "feature_tools_motd"
    assert result.environment_origin == f"cn=tools,{PROJECTS}"


def test_no_branch_anywhere_means_production(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("lonely.nowhere.example.org"))
    result = classify(config, "lonely.nowhere.example.org")
    assert [role for role, _ in result.layers] == ["host", "default"]  # no such project
    assert result.environment == "production"
    assert result.environment_origin is None


def test_parent_chain_sits_between_host_and_project(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("grandparent-a", "puppetClass: gp", "puppetVar: level=gp",
                               "puppetVar: only_gp=1", "environment: from-grandparent"))
    slapd.add_ldif(legacy_ldif("parent-a", "parentNode: grandparent-a", "puppetClass: parent",
                               "puppetVar: level=parent"))
    slapd.add_ldif(host_ldif("child.web.example.org", "parentNode: parent-a"))
    result = classify(config, "child.web.example.org")

    assert [role for role, _ in result.layers] == ["host", "parent", "parent", "project", "default"]
    assert list(result.classes) == ["parent", "gp", "role::web", "motd", "base"]
    assert result.parameters["level"].value == "parent"
    assert result.parameters["only_gp"].value == "1"
    # The nearest layer naming a branch wins: the grandparent beats the project.
    assert result.environment == "from_grandparent"


def test_unknown_node_even_with_a_default_entry(config: Config) -> None:
    with pytest.raises(UnknownNode):
        classify(config, "stranger.web.example.org")


def test_short_name_fallback(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("shorty", "puppetClass: shortclass"))
    result = classify(config, "shorty.somewhere.example.org")
    assert result.layers[0] == ("host", f"cn=shorty,{HOSTS}")
    assert "shortclass" in result.classes


def test_full_name_beats_short_name(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("twice", "puppetClass: by_short_name"))
    slapd.add_ldif(host_ldif("twice.web.example.org", "puppetClass: by_full_name"))
    result = classify(config, "twice.web.example.org")
    assert "by_full_name" in result.classes
    assert "by_short_name" not in result.classes


def test_loop_in_parents_is_an_error(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("loop-a", "parentNode: loop-b"))
    slapd.add_ldif(legacy_ldif("loop-b", "parentNode: loop-a"))
    with pytest.raises(ClassificationError, match="loop in parentNode: 'loop-a' appears twice"):
        classify(config, "loop-a.example.org")


def test_missing_parent_is_a_clear_error(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("orphan", "parentNode: no-such-parent"))
    with pytest.raises(ClassificationError, match="names parent node 'no-such-parent'"):
        classify(config, "orphan.example.org")


def test_missing_explicit_project_is_an_error(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("astray.example.org", "opslabProject: vanished"))
    with pytest.raises(ClassificationError, match="names project 'vanished'"):
        classify(config, "astray.example.org")


def test_two_entries_for_one_name_is_an_error(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(legacy_ldif("dup.example.org"))
    slapd.add_ldif(host_ldif("dup.example.org"))
    with pytest.raises(ClassificationError, match="matches 2 entries"):
        classify(config, "dup.example.org")


def test_reserved_variables_are_dropped_with_a_warning(
    slapd: ThrowawaySlapd, config: Config
) -> None:
    slapd.add_ldif(host_ldif("sneaky.web.example.org", "puppetVar: trusted=forged",
                             "puppetVar: facts=forged", "puppetVar: server_facts=x",
                             "puppetVar: environment=evil", "puppetVar: fine=yes"))
    result = classify(config, "sneaky.web.example.org")
    parameters = result.to_enc()["parameters"]
    assert not {"trusted", "facts", "server_facts", "environment"} & parameters.keys()
    assert parameters["fine"] == "yes"
    assert result.environment == "production"
    assert len([w for w in result.warnings if "reserved by Puppet" in w]) == 4


def test_puppetvar_split_at_first_equals(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("eq.web.example.org", "puppetVar: url=http://x/?a=b=c",
                             "puppetVar: empty=", "puppetVar: bare"))
    result = classify(config, "eq.web.example.org")
    parameters = result.to_enc()["parameters"]
    assert parameters["url"] == "http://x/?a=b=c"
    assert parameters["empty"] == ""
    assert "bare" not in parameters
    assert any("'bare' on" in warning for warning in result.warnings)


def test_bad_class_parameter_is_an_error(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("badjson.web.example.org", "puppetClass: motd",
                             "opslabClassParameter: motd::message=not json"))
    with pytest.raises(ClassificationError, match="value is not JSON"):
        classify(config, "badjson.web.example.org")


def test_class_parameters_keep_their_types(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif(
        "typed.web.example.org", "puppetClass: ntp",
        'opslabClassParameter: ntp::servers=["a.example.org", "b.example.org"]',
        "opslabClassParameter: ntp::burst=true", "opslabClassParameter: ntp::port=123",
        'opslabClassParameter: ntp::options={"iburst": null}',
        'opslabClassParameter: absent::flag=1',
    ))
    result = classify(config, "typed.web.example.org")
    assert result.to_enc()["classes"]["ntp"] == {
        "servers": ["a.example.org", "b.example.org"], "burst": True, "port": 123,
        "options": {"iburst": None},
    }
    assert "absent" in result.unused_class_parameters


# Puppet's old LDAP node terminus, exactly.


def test_terminus_default_classifies_unknown_nodes(terminus: Config) -> None:
    result = classify(terminus, "stranger.example.org")
    assert result.layers == [("default", f"dc=default,{HOSTS}")]
    assert list(result.classes) == ["base"]


def test_terminus_has_no_project_and_no_default_merge(terminus: Config) -> None:
    result = classify(terminus, "oldmail.example.org")
    assert [role for role, _ in result.layers] == ["node", "parent"]
    assert list(result.classes) == ["legacy::mail", "base"]
    parameters = result.to_enc()["parameters"]
    assert parameters["relay"] == "smtp.example.org"
    assert parameters["ntp_server"] == "ntp.legacy.example.org"
    assert "monitored" not in parameters  # the default entry is a fallback only


def test_terminus_exposes_attributes_as_variables(terminus: Config) -> None:
    """ldapattrs=all: every attribute became a top-scope variable, the node's winning."""
    parameters = classify(terminus, "oldmail.example.org").to_enc()["parameters"]
    assert parameters["cn"] == "oldmail"
    assert parameters["objectClass"] == ["device", "puppetClient"]
    assert parameters["parentNode"] == "legacy-base"
    assert parameters["puppetClass"] == "legacy::mail"
    assert "puppetVar" not in parameters  # the stacked attribute is not a variable itself
    assert "environment" not in parameters


def test_terminus_stacked_attribute_names_compare_case_sensitively(
    tmp_path: Path, slapd: ThrowawaySlapd
) -> None:
    """With the terminus's own setting "puppetvar", puppetVar leaked through as a variable."""
    config = load(str(write_config(tmp_path / "t.yaml", slapd, enc={
        "mode": "terminus", "variable_attributes": ["puppetvar"]})))
    parameters = classify(config, "oldmail.example.org").to_enc()["parameters"]
    assert parameters["puppetVar"] == "relay=smtp.example.org"
    assert parameters["relay"] == "smtp.example.org"


def test_terminus_attribute_beats_puppetvar_of_same_entry(
    slapd: ThrowawaySlapd, terminus: Config
) -> None:
    slapd.add_ldif(legacy_ldif("clash", "puppetVar: cn=from-puppetvar", "puppetVar: x=true",
                               "puppetVar: x=false", "puppetVar: nothing"))
    parameters = classify(terminus, "clash").to_enc()["parameters"]
    assert parameters["cn"] == "clash"
    assert parameters["x"] is False  # the last value of a key wins, converted
    assert parameters["nothing"] is None  # no "=": the terminus set nil


def test_terminus_without_environment_leaves_it_to_puppet(
    slapd: ThrowawaySlapd, terminus: Config
) -> None:
    slapd.add_ldif(legacy_ldif("noenv", "puppetClass: x"))
    enc = classify(terminus, "noenv").to_enc()
    assert "environment" not in enc


def test_terminus_parent_environment_fills_in(slapd: ThrowawaySlapd, terminus: Config) -> None:
    slapd.add_ldif(legacy_ldif("envparent", "environment: staging"))
    slapd.add_ldif(legacy_ldif("envchild", "parentNode: envparent"))
    assert classify(terminus, "envchild").environment == "staging"


def test_terminus_multiple_matches_last_wins(slapd: ThrowawaySlapd, terminus: Config) -> None:
    slapd.add_ldif(legacy_ldif("same-a", "puppetClass: first"))
    slapd.add_ldif(host_ldif("same-a.example.org", "puppetClass: second"))
    # Filter on cn OR associatedDomain: "same-a" is only the legacy entry's cn;
    # the full name matches only the new entry, found first.
    assert list(classify(terminus, "same-a.example.org").classes) == ["second"]


def test_terminus_attribute_list_limits_variables(
    tmp_path: Path, slapd: ThrowawaySlapd
) -> None:
    config = load(str(write_config(tmp_path / "t.yaml", slapd, enc={
        "mode": "terminus", "attribute_parameters": ["cn"]})))
    parameters = classify(config, "oldmail.example.org").to_enc()["parameters"]
    # As the terminus fetched them: the listed ones, plus class and parent attributes.
    assert set(parameters) == {"cn", "puppetClass", "parentNode", "relay", "ntp_server"}


def test_terminus_custom_filter_and_attributes(tmp_path: Path, slapd: ThrowawaySlapd) -> None:
    slapd.add_ldif(legacy_ldif("custom", "description: role=custom", "puppetClass: ignored"))
    config = load(str(write_config(tmp_path / "t.yaml", slapd, enc={
        "mode": "terminus", "node_filter": "(&(objectClass=device)(cn=%s))",
        "class_attributes": ["description"], "variable_attributes": ["description"],
        "attribute_parameters": "none",
    })))
    result = classify(config, "custom")
    assert list(result.classes) == ["role=custom"]
    assert result.to_enc()["parameters"] == {"role": "custom"}


def test_filter_values_are_escaped(slapd: ThrowawaySlapd, config: Config) -> None:
    """A parentNode full of filter syntax is looked up literally, never as a filter."""
    slapd.add_ldif(legacy_ldif("escapee", "parentNode: *)(cn=*"))
    with pytest.raises(ClassificationError, match=r"names parent node '\*\)\(cn=\*'"):
        classify(config, "escapee.example.org")


def test_class_names_are_lowercased_and_merged(slapd: ThrowawaySlapd, config: Config) -> None:
    slapd.add_ldif(host_ldif("cased.web.example.org", "puppetClass: Role::Web",
                             "puppetClass: Extra"))
    assert list(classify(config, "cased.web.example.org").classes) == [
        "role::web", "extra", "motd", "base"]


def test_unusable_branch_is_an_error_naming_the_entry(
    slapd: ThrowawaySlapd, config: Config
) -> None:
    slapd.add_ldif(host_ldif("badbranch.web.example.org", "environment: a..b"))
    with pytest.raises(ClassificationError, match=r"dc=badbranch.*refused: it contains '\.\.'"):
        classify(config, "badbranch.web.example.org")
