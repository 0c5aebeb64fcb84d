"""Certnames, branches and environment names."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opslab.names import (
    InvalidName,
    branches_by_environment,
    environment_for_branch,
    environment_holders,
    this_certname,
    validate_certname,
)


@pytest.mark.parametrize(
    "name",
    ["web1.web.example.org", "a", "x-1.y", "0.example.org", "a" * 63 + ".org",
     ".".join(["a" * 63] * 3) + "." + "b" * 61],
)
def test_valid_certnames(name: str) -> None:
    assert validate_certname(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("*", "not a lowercase DNS name"),
        ("web1)(cn=*", "not a lowercase DNS name"),
        ("*)(objectClass=*", "not a lowercase DNS name"),
        ("web\\2a", "not a lowercase DNS name"),
        ("web\x00.example.org", "not a lowercase DNS name"),
        ("Web1.example.org", "not a lowercase DNS name"),
        ("web1.example.org\n", "not a lowercase DNS name"),
        ("web1.example.org.", "not a lowercase DNS name"),
        ("-web.example.org", "not a lowercase DNS name"),
        ("web-.example.org", "not a lowercase DNS name"),
        ("web..example.org", "not a lowercase DNS name"),
        ("../../etc/passwd", "not a lowercase DNS name"),
        ("a" * 64 + ".org", "not a lowercase DNS name"),
        ("a" * 300, "300 characters long"),
        ("web_1.example.org", "not a lowercase DNS name"),
        ("default", "names the defaults entry"),
    ],
)
def test_invalid_certnames(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=re.escape(reason)):
        validate_certname(name)


@pytest.mark.parametrize(
    ("branch", "environment"),
    [
        ("production", "production"),
        ("feature/Login-2", "feature_login_2"),
        ("release-2026.11", "release_2026_11"),
        ("über", "_ber"),
        ("main", "main"),
    ],
)
def test_branch_to_environment(branch: str, environment: str) -> None:
    assert environment_for_branch(branch) == environment


@pytest.mark.parametrize(
    ("branch", "reason"),
    [
        ("", "empty"),
        ("bad\nname", "control characters"),
        ("tab\there", "control characters"),
        ("x" * 201, "longer than 200"),
        ("-rf", "starts with '-'"),
        ("--upload-pack=evil", "starts with '-'"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a@{1}", "'@{'"),
        ("/abs", "empty path component"),
        ("a//b", "empty path component"),
        ("trailing/", "empty path component"),
        ("a/.hidden", "starts with '.'"),
        ("ref.lock", "ends with '.lock'"),
        ("dot.", "ends with '.'"),
        ("with space", "one of space"),
        ("a:b", "one of space"),
        ("star*", "one of space"),
        ("back\\slash", "one of space"),
    ],
)
def test_unsafe_branches_are_refused(branch: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=re.escape(reason)):
        environment_for_branch(branch)


def test_branches_grouped_by_environment_show_collisions_and_refusals() -> None:
    groups, refused = branches_by_environment(["production", "feature/x", "feature_x", "-rf"])
    assert groups == {"production": ["production"], "feature_x": ["feature/x", "feature_x"]}
    assert list(refused) == ["-rf"]
    assert "starts with '-'" in refused["-rf"]


def test_which_branch_holds_an_environment_several_map_to() -> None:
    branches = ["production", "Production", "feature/x", "feature_x", "Feature/Z", "feature/z",
                "solo/one", "-rf"]
    holders, refused = environment_holders(branches, {"feature_x": "feature/x"})

    assert holders == {"production": "production", "feature_x": "feature/x",
                       "solo_one": "solo/one"}
    assert refused["Production"] == ("branch 'Production' maps to environment 'production', "
                                     "which belongs to branch 'production' "
                                     "(it has exactly that name)")
    assert refused["feature_x"] == ("branch 'feature_x' maps to environment 'feature_x', "
                                    "which belongs to branch 'feature/x' (it is deployed there)")
    assert refused["Feature/Z"] == refused["feature/z"] == (
        "branches 'Feature/Z', 'feature/z' all map to environment 'feature_z' and none is "
        "deployed there or named exactly so")
    assert "starts with '-'" in refused["-rf"]
    assert sorted([*holders.values(), *refused]) == sorted(branches)


def test_a_deployed_branch_holds_its_environment_until_it_is_gone() -> None:
    assert environment_holders(["Production", "production"], {"production": "Production"})[
        0] == {"production": "Production"}
    assert environment_holders(["production"], {"production": "Production"})[0] == {
        "production": "production"}
    assert environment_holders(["Production"], {})[0] == {"production": "Production"}


COLLIDING = ["production", "Production", "PRODUCTION", "prod/uction", "feature/x", "feature_x",
             "Feature/X", "a"]


@given(st.lists(st.sampled_from(COLLIDING), max_size=8),
       st.lists(st.sampled_from(COLLIDING), max_size=3))
def test_every_branch_holds_its_environment_or_is_refused_naming_the_holder(
        branches: list[str], deployed_branches: list[str]) -> None:
    deployed = {environment_for_branch(branch): branch for branch in deployed_branches}
    holders, refused = environment_holders(branches, deployed)

    assert set(holders.values()) | set(refused) == set(branches)
    assert not set(holders.values()) & set(refused)
    for environment, holder in holders.items():
        assert environment_for_branch(holder) == environment
        if deployed.get(environment) in branches:
            assert holder == deployed[environment]  # nothing deployed stops updating
    for branch, reason in refused.items():
        holder = holders.get(environment_for_branch(branch))
        assert f"branch {holder!r}" in reason if holder else "all map to" in reason


@given(st.text(min_size=1, max_size=200))
def test_every_mapped_branch_is_a_puppet_environment_name(branch: str) -> None:
    try:
        environment = environment_for_branch(branch)
    except InvalidName:
        return
    assert re.fullmatch(r"[a-z0-9_]+", environment)
    assert environment_for_branch(branch) == environment  # deterministic


@given(st.text(max_size=300))
def test_accepted_certnames_carry_no_filter_or_path_syntax(name: str) -> None:
    try:
        validate_certname(name)
    except InvalidName:
        return
    assert not set(name) & set("*()\\\x00/\n=, ")
    assert name == name.lower()
    assert len(name) <= 253


def test_this_certname_is_the_configured_one_else_the_lowercased_fqdn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "Web1.Tools.Example.ORG")

    assert this_certname("builder.example.org") == "builder.example.org"
    assert this_certname(None) == "web1.tools.example.org"
    with pytest.raises(InvalidName):
        this_certname("Web1.example.org")
