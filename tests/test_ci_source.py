"""The change's code (opslab.ci.source): real git fetching ``refs/changes/NN/C/P`` from the
Gerrit stand-in's bare repository (contract section 3.5)."""

from pathlib import Path

import pytest

from opslab.ci.source import (
    SourceError,
    change_files,
    change_ref,
    fetch_patchset,
    fetch_ref,
    git_url,
    touched_modules,
)
from tests.gerrit_standin import GerritStandIn

MANIFEST = "modules/motd/manifests/init.pp"


@pytest.fixture(name="gerrit")
def gerrit_fixture(tmp_path: Path) -> GerritStandIn:
    standin = GerritStandIn(tmp_path / "gerrit")
    standin.stop()  # only its repositories are needed
    return standin


@pytest.mark.parametrize(("change", "patchset", "ref"), [
    (5, 1, "refs/changes/05/5/1"), (42, 3, "refs/changes/42/42/3"),
    (100, 2, "refs/changes/00/100/2"), (1234, 12, "refs/changes/34/1234/12"),
    (7, 10, "refs/changes/07/7/10"),
])
def test_the_ref_of_a_patch_set(change: int, patchset: int, ref: str) -> None:
    assert change_ref(change, patchset) == ref


def test_a_patch_set_is_fetched_checked_and_checked_out(gerrit: GerritStandIn,
                                                        tmp_path: Path) -> None:
    change = gerrit.add_change(files={MANIFEST: "class motd {}\n"}, number=1205)
    remote = gerrit.remote(change.project)
    base = remote.head("production")
    revision = change.patchsets[0].revision
    fetched = fetch_patchset(gerrit.git_url(change.project), 1205, 1, revision,
                             tmp_path / "clone", 60)
    assert fetched.ref == "refs/changes/05/1205/1"
    assert (fetched.revision, fetched.parent) == (revision, base)
    assert (tmp_path / "clone" / MANIFEST).read_text() == "class motd {}\n"
    assert change_files(fetched, 60) == [MANIFEST]
    assert touched_modules(change_files(fetched, 60)) == {"motd"}


def test_a_second_patch_set_in_the_same_clone(gerrit: GerritStandIn, tmp_path: Path) -> None:
    change = gerrit.add_change(files={MANIFEST: "class motd {}\n"})
    second = gerrit.add_patchset(change.number, {
        "manifests/site.pp": "node x {}\n", "modules/ntp/manifests/init.pp": "class ntp {}\n"})
    clone = tmp_path / "clone"
    fetch_patchset(gerrit.git_url(change.project), change.number, 1,
                   change.patchsets[0].revision, clone, 60)
    fetched = fetch_patchset(gerrit.git_url(change.project), change.number, 2,
                             second.revision, clone, 60)
    assert not (clone / MANIFEST).exists()
    assert (clone / "manifests/site.pp").exists()
    # Patch set 2 is a commit of its own on the branch: MANIFEST was never there.
    files = change_files(fetched, 60)
    assert files == ["manifests/site.pp", "modules/ntp/manifests/init.pp"]
    assert touched_modules(files) is None


def test_a_revision_that_is_not_the_ref_is_refused(gerrit: GerritStandIn,
                                                   tmp_path: Path) -> None:
    change = gerrit.add_change(files={MANIFEST: "class motd {}\n"})
    other = gerrit.add_patchset(change.number, {MANIFEST: "class motd { }\n"})
    clone = tmp_path / "clone"
    with pytest.raises(SourceError) as error:
        fetch_patchset(gerrit.git_url(change.project), change.number, 1, other.revision,
                       clone, 60)
    ref = change_ref(change.number, 1)
    assert str(error.value) == (
        f"{ref} of {gerrit.git_url(change.project)} is commit "
        f"{change.patchsets[0].revision}, not the patch set's revision {other.revision}: "
        "refusing to test it")
    assert not (clone / MANIFEST).exists()  # nothing checked out


def test_a_patch_set_that_does_not_exist(gerrit: GerritStandIn, tmp_path: Path) -> None:
    change = gerrit.add_change()
    with pytest.raises(SourceError, match=r"^git fetch failed: .*refs/changes/01/1/2"):
        fetch_patchset(gerrit.git_url(change.project), change.number, 2, "a" * 40,
                       tmp_path / "clone", 60)


@pytest.mark.parametrize("revision", ["HEAD", "a" * 39, "A" * 40, "--upload-pack=x"])
def test_a_revision_must_be_forty_hex(gerrit: GerritStandIn, tmp_path: Path,
                                      revision: str) -> None:
    with pytest.raises(SourceError, match="is not a 40-hex commit"):
        fetch_patchset(gerrit.git_url("operations/puppet"), 1, 1, revision, tmp_path / "c", 60)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("remote", ["--upload-pack=touch /tmp/x", "", "a\nb"])
def test_a_remote_that_git_would_misread_is_refused(tmp_path: Path, remote: str) -> None:
    with pytest.raises(SourceError, match="is not a usable git URL or path"):
        fetch_ref(remote, "refs/changes/01/1/1", tmp_path / "clone", 60)


@pytest.mark.parametrize(("files", "modules"), [
    ([MANIFEST], {"motd"}),
    ([MANIFEST, "modules/motd/templates/motd.erb", "modules/ntp/files/ntp.conf"],
     {"motd", "ntp"}),
    ([MANIFEST, "manifests/site.pp"], None),
    (["hieradata/common.yaml"], None),
    (["modules/README.md"], None),
    (["modules//x"], None),
    (["other/modules/motd/x.pp"], None),
    ([], None),
])
def test_touched_modules(files: list[str], modules: set[str] | None) -> None:
    assert touched_modules(files) == modules


def test_git_url() -> None:
    assert git_url("ssh://ci@review.example.org:29418/{project}", "operations/puppet") == \
        "ssh://ci@review.example.org:29418/operations/puppet"
    assert git_url("https://review.example.org/", "operations/puppet") == \
        "https://review.example.org/operations/puppet"
