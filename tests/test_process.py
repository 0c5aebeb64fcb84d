"""Child processes stop as a group: real git against a real hanging server, real shells."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from opslab import process
from opslab.branchrunner.deployment import Deployment, SyncFailed
from opslab.branchrunner.git import GitError, Mirror, remote_heads
from opslab.config import BranchSettings
from tests.processes import settle
from tests.remote import Remote


def test_a_hanging_http_remote_leaves_no_git_helper_behind(hanging_server: int) -> None:
    url = f"http://127.0.0.1:{hanging_server}/control.git"
    started = time.monotonic()

    with pytest.raises(GitError, match="git ls-remote timed out after 1 s"):
        remote_heads(url, timeout=1.0)

    assert time.monotonic() - started < 5
    assert settle(url) == []  # git-remote-http went with git


def test_a_command_past_its_timeout_is_stopped_with_its_children() -> None:
    duration = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"  # to find them by
    script = f"echo started; sleep {duration} & sleep {duration}; echo never"

    with pytest.raises(process.TimedOut) as stopped:
        process.run(["sh", "-c", script], 0.5, text=True)

    assert stopped.value.output == "started\n"
    assert "sh ran past its timeout of 0.5 s" in str(stopped.value)
    assert settle(f"sleep {duration}") == []


def test_a_grace_period_lets_the_command_finish_on_sigterm(tmp_path: Path) -> None:
    done = tmp_path / "cleaned-up"
    script = f"trap 'touch {done}; exit 3' TERM; echo running; while :; do sleep 0.05; done"

    # 2 s before the SIGTERM: the shell must have set its trap by then, even on a machine
    # as busy as a CI runner (0.5 s was not always enough).
    with pytest.raises(process.TimedOut) as stopped:
        process.run(["sh", "-c", script], 2.0, text=True, grace=10.0)

    assert done.exists()
    assert stopped.value.output == "running\n"


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    duration = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
    started = time.monotonic()

    with pytest.raises(process.TimedOut):
        process.run(["sh", "-c", f"trap '' TERM; sleep {duration}"], 0.3, grace=0.5)

    assert time.monotonic() - started < 5
    assert settle(f"sleep {duration}") == []


def test_a_finished_command_is_returned_as_it_ended() -> None:
    result = process.run(["sh", "-c", "echo out; echo err >&2; exit 3"], 10, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    merged = process.run(["sh", "-c", "echo out; echo err >&2"], 10, text=True,
                         stderr=subprocess.STDOUT)
    assert merged.stdout == "out\nerr\n"


def broken_git_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.gitconfig git cannot parse: every git command then fails."""
    configuration = tmp_path / "broken.gitconfig"
    configuration.write_text("[core\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(configuration))


def test_a_mirror_that_cannot_be_created_is_a_git_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    with pytest.raises(GitError, match="cannot create the mirror"):
        Mirror(tmp_path / "a-file" / "mirror.git", "https://git.example.org/x.git", 30).prepare()

    broken_git_configuration(tmp_path, monkeypatch)
    with pytest.raises(GitError, match="git init failed"):
        Mirror(tmp_path / "cache" / "mirror.git", "https://git.example.org/x.git", 30).prepare()
    assert list((tmp_path / "cache").iterdir()) == []  # no half-made mirror left


def test_a_sync_whose_mirror_cannot_be_created_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = Remote(tmp_path / "repository")
    remote.commit("production", {"manifests/site.pp": "node default {}\n"})
    broken_git_configuration(tmp_path, monkeypatch)
    config = BranchSettings(remote=remote.url, environments=str(tmp_path / "environments"),
                            cache=str(tmp_path / "cache"), lock_timeout=1.0)
    with pytest.raises(SyncFailed, match="nothing changed: cannot create the mirror"):
        Deployment(config).sync()
    assert not (tmp_path / "environments" / "production").exists()


def test_git_metadata_that_cannot_be_made_is_a_git_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = Remote(tmp_path / "repository")
    commit = remote.commit("production", {"manifests/site.pp": "node default {}\n"})
    mirror = Mirror(tmp_path / "cache" / "mirror.git", remote.url, 30)
    mirror.prepare()
    mirror.fetch()
    tree = tmp_path / "tree"
    tree.mkdir()

    broken_git_configuration(tmp_path, monkeypatch)
    with pytest.raises(GitError, match="git init failed"):
        mirror.add_worktree_metadata(tree, commit)


def test_a_wedged_cat_file_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    """Mirror.blobs' watchdog stops git, so a hung file system cannot hang a sync."""
    remote = Remote(tmp_path / "repository")
    remote.commit("production", {"a": "a\n"})
    mirror = Mirror(tmp_path / "cache" / "mirror.git", remote.url, 0.5)
    mirror.prepare()
    # A pack index that is a FIFO: git blocks opening it, as on a hung mount.
    pack = mirror.path / "objects" / "pack" / f"pack-{'1' * 40}"
    os.mkfifo(pack.with_suffix(".idx"))
    pack.with_suffix(".pack").touch()
    started = time.monotonic()

    with pytest.raises(GitError, match=r"timed out after 0\.5 s"):
        list(mirror.blobs(["2" * 40]))

    assert time.monotonic() - started < 5
    assert settle(f"--git-dir={mirror.path} cat-file") == []
