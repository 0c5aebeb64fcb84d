"""Certnames, branches and environment names."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opslab.names import (
    MAX_BRANCH_LENGTH,
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
             "Feature/X", "a", "-rf", "feature/x.lock"]


@given(st.lists(st.sampled_from(COLLIDING), max_size=8),
       st.lists(st.sampled_from([name for name in COLLIDING if not name.endswith(("rf", "lock"))]),
                max_size=3))
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
        if branch in ("-rf", "feature/x.lock"):
            assert reason.startswith(f"branch name {branch!r} is refused: ")
            continue
        holder = holders.get(environment_for_branch(branch))
        assert f"branch {holder!r}" in reason if holder else "all map to" in reason


# Branch names git and opslab accept: components of "words" joined by single dots,
# joined by single slashes. The words mix what the mapping must rewrite (upper
# case, '-', '@', '}', letters outside ASCII, one that lowercases to two
# characters) with what it keeps.
BRANCH_WORD = st.text(alphabet="abcxyz019_ABCXYZ-@}\u00e9\u00dc\u0130\u212a\u4e2d",
                      min_size=1, max_size=12)
BRANCH_COMPONENT = st.lists(BRANCH_WORD, min_size=1, max_size=3).map(".".join).filter(
    lambda component: not component.endswith(".lock"))
VALID_BRANCH = st.lists(BRANCH_COMPONENT, min_size=1, max_size=4).map("/".join).filter(
    lambda branch: not branch.startswith("-") and branch != "@"
    and len(branch) <= MAX_BRANCH_LENGTH)
# Refused wherever they stand in a branch name.
BRANCH_FORBIDDEN = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", " ", "~", "^", ":", "?",
                    "*", "[", "\\", "..", "@{", "//", "/."]


@given(VALID_BRANCH)
def test_every_valid_branch_maps_to_a_puppet_environment_name(branch: str) -> None:
    environment = environment_for_branch(branch)

    assert re.fullmatch(r"[a-z0-9_]+", environment)
    assert environment_for_branch(branch) == environment  # deterministic


@given(st.from_regex(r"[a-z0-9_]{1,200}", fullmatch=True))
def test_a_branch_named_as_an_environment_maps_to_itself(branch: str) -> None:
    assert environment_for_branch(branch) == branch


# Each forbidden character gets examples of its own: drawn from the list by
# Hypothesis, some would never be tried.
@pytest.mark.parametrize("forbidden", BRANCH_FORBIDDEN)
@settings(max_examples=20)
@given(branch=VALID_BRANCH, where=st.floats(min_value=0, max_value=1))
def test_one_forbidden_character_anywhere_refuses_a_branch(
        forbidden: str, branch: str, where: float) -> None:
    place = round(where * len(branch))
    hostile = branch[:place] + forbidden + branch[place:]

    with pytest.raises(InvalidName, match="is refused"):
        environment_for_branch(hostile)


@given(VALID_BRANCH, st.sampled_from([("-", ""), ("/", ""), ("", "/"), ("", "."),
                                      ("", ".lock")]))
def test_a_branch_that_starts_or_ends_wrong_is_refused(branch: str,
                                                        around: tuple[str, str]) -> None:
    with pytest.raises(InvalidName, match="is refused"):
        environment_for_branch(around[0] + branch + around[1])


# Certnames: lowercase DNS labels (1 to 63 characters, inner '-') joined by dots.
DNS_ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyz0123456789"


def label(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A DNS label: alphanumeric at both ends, ``inner`` between."""
    ends = st.sampled_from(DNS_ALPHANUMERIC)
    return st.tuples(ends, inner, ends).map("".join)


# Long labels too, so that names reach the 63-character and 253-character limits.
LABEL = st.one_of(st.sampled_from(DNS_ALPHANUMERIC),
                  label(st.text(alphabet=DNS_ALPHANUMERIC + "-", max_size=61)),
                  label(st.text(alphabet=DNS_ALPHANUMERIC + "-", min_size=55, max_size=61)))
VALID_CERTNAME = st.lists(LABEL, min_size=1, max_size=5).map(".".join).filter(
    lambda name: len(name) <= 253 and name != "default")
# Filter and path syntax, white space and NUL, upper case, '_', letters outside ASCII
# (the Kelvin sign lowercases to 'k', fullwidth 'a' looks like 'a'): each its own case.
NOT_IN_A_CERTNAME = [*"*()\\/=, _:@+A", "\x00", "\n", "\t", "\u00e9", "\u212a", "\uff41",
                     "\u0131"]


@given(VALID_CERTNAME)
def test_every_valid_certname_is_accepted_as_it_is(name: str) -> None:
    assert validate_certname(name) == name


def certname_with(name: str, hostile: str, where: float) -> str:
    place = round(where * len(name))
    return name[:place] + hostile + name[place:]


@pytest.mark.parametrize("hostile", NOT_IN_A_CERTNAME)
@settings(max_examples=20)
@given(name=VALID_CERTNAME, where=st.floats(min_value=0, max_value=1))
def test_one_character_outside_a_dns_name_anywhere_refuses_a_certname(
        hostile: str, name: str, where: float) -> None:
    """It never reaches an LDAP filter or a cache file name."""
    with pytest.raises(InvalidName, match=r"not a lowercase DNS name|characters long"):
        validate_certname(certname_with(name, hostile, where))


@given(VALID_CERTNAME,
       st.characters(exclude_characters=DNS_ALPHANUMERIC + ".-"),
       st.floats(min_value=0, max_value=1))
def test_any_character_outside_a_dns_name_refuses_a_certname(
        name: str, hostile: str, where: float) -> None:
    with pytest.raises(InvalidName, match=r"not a lowercase DNS name|characters long"):
        validate_certname(certname_with(name, hostile, where))


def test_this_certname_is_the_configured_one_else_the_lowercased_fqdn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: "Web1.Tools.Example.ORG")

    assert this_certname("builder.example.org") == "builder.example.org"
    assert this_certname(None) == "web1.tools.example.org"
    with pytest.raises(InvalidName):
        this_certname("Web1.example.org")


def test_an_environment_name_has_one_character_per_character_of_its_branch() -> None:
    # "İ".lower() is two characters: a 200-character branch must never make a
    # 400-character name (the name is a file name of at most 255 bytes).
    assert environment_for_branch("İ" * 200) == "_" * 200
    assert environment_for_branch("Feature/Ä-1") == "feature___1"
