"""The secret scan of a change (opslab.ci.secrets): detect-secrets on the lines a patch set
adds, with the target branch's baseline as the allowlist. Keys are made at test time, so
none is ever in this repository."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opslab.ci.secrets import BASELINE, ScanError, scan
from opslab.ci.source import Fetched, fetch_ref
from tests.remote import Remote

KEY_FILE = "modules/tls/files/wildcard.key"


def private_key(tmp_path: Path) -> str:
    path = tmp_path / "made.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path.read_text()


def fetched(remote: Remote, branch: str, tmp_path: Path) -> Fetched:
    revision = fetch_ref(remote.url, f"refs/heads/{branch}", tmp_path / "mirror", 60)
    parent = remote.git("rev-parse", f"{revision}^").strip()
    return Fetched(ref=f"refs/heads/{branch}", revision=revision, parent=parent,
                   directory=tmp_path / "mirror")


@pytest.fixture(name="remote")
def remote_fixture(tmp_path: Path) -> Remote:
    remote = Remote(tmp_path / "remote")
    remote.commit("production", {"manifests/site.pp": "node default {}\n",
                                 "data/old.yaml": "profile::db::password: 'Old0ldSecret9'\n"})
    return remote


def test_a_private_key_a_password_and_a_token_are_found_by_file_and_line(
        remote: Remote, tmp_path: Path) -> None:
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    remote.commit("change", {
        KEY_FILE: private_key(tmp_path),
        "data/common.yaml": "ntp::servers: [ntp1]\nprofile::db::password: 'Xk93jdlQ0pz7'\n",
        "modules/app/manifests/init.pp": f"class app {{\n  $api = '{token}'\n}}\n",
    }, base="production")

    found = scan(fetched(remote, "change", tmp_path), 60)

    where = {(item.file, item.line, item.kind) for item in found}
    assert (KEY_FILE, 1, "Private Key") in where, found
    assert ("data/common.yaml", 2, "Secret Keyword") in where, found
    assert ("modules/app/manifests/init.pp", 2, "GitHub Token") in where, found
    # What the tree already had is not this change's: the old password is not named.
    assert not any(item.file == "data/old.yaml" for item in found), found
    assert "Xk93jdlQ0pz7" not in repr(found)
    assert token not in repr(found)


def test_a_change_without_secrets_finds_none(remote: Remote, tmp_path: Path) -> None:
    remote.commit("change", {"modules/motd/manifests/init.pp": "class motd {}\n",
                             "data/old.yaml": None}, base="production")
    assert scan(fetched(remote, "change", tmp_path), 60) == []


def test_the_target_branchs_baseline_allows_but_the_change_cannot_allow_itself(
        remote: Remote, tmp_path: Path) -> None:
    """An allowlisted false positive (in the baseline of the parent) is not reported; a
    baseline the change itself brings is ignored, so a change cannot hide its own key."""
    key = private_key(tmp_path)
    remote.commit("allowing", {KEY_FILE: key}, base="production")
    first = scan(fetched(remote, "allowing", tmp_path), 60)
    [(found_file, found_kind)] = {(item.file, item.kind) for item in first}
    assert (found_file, found_kind) == (KEY_FILE, "Private Key")
    # The baseline as detect-secrets' own command writes it, in the change's checkout.
    baseline = subprocess.run(
        [str(Path(sys.executable).with_name("detect-secrets")), "scan", KEY_FILE],
        cwd=remote.work, capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(baseline)["results"][KEY_FILE], baseline

    # The same key, with the baseline that allows it in the same change: still found.
    remote.commit("self-allowing", {KEY_FILE: key, BASELINE: baseline}, base="production")
    assert [item.file for item in scan(fetched(remote, "self-allowing", tmp_path), 60)] == [
        KEY_FILE]

    # The baseline on the target branch, the key changed again (re-added): allowed.
    remote.commit("production", {BASELINE: baseline})
    remote.commit("after-baseline", {KEY_FILE: key}, base="production")
    assert scan(fetched(remote, "after-baseline", tmp_path), 60) == []


def test_an_inline_pragma_allows_a_line(remote: Remote, tmp_path: Path) -> None:
    remote.commit("change", {
        "data/common.yaml": "profile::db::password: 'Xk93jdlQ0pz7'  # pragma: allowlist secret\n",
    }, base="production")
    assert scan(fetched(remote, "change", tmp_path), 60) == []


def test_a_baseline_that_is_not_one_is_an_error_naming_it(remote: Remote,
                                                          tmp_path: Path) -> None:
    remote.commit("production", {BASELINE: "[1, 2]\n"})
    remote.commit("change", {"x.txt": "x\n"}, base="production")
    with pytest.raises(ScanError, match=r"\.secrets\.baseline of the target branch is not"):
        scan(fetched(remote, "change", tmp_path), 60)


def test_a_key_in_a_root_commit_is_found(tmp_path: Path) -> None:
    remote = Remote(tmp_path / "remote")
    remote.commit("production", {KEY_FILE: private_key(tmp_path)})
    revision = fetch_ref(remote.url, "refs/heads/production", tmp_path / "mirror", 60)
    root = Fetched(ref="refs/heads/production", revision=revision, parent=None,
                   directory=tmp_path / "mirror")
    assert [(item.file, item.kind) for item in scan(root, 60)] == [(KEY_FILE, "Private Key")]
