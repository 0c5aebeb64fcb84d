"""A spare tree brought up to a new commit by the difference: exact, and only when no run
can be using it. Real git remotes on disk; trees compared with ``git archive``."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opslab.branchrunner.deployment import Deployment, Outcome
from opslab.config import BranchSettings
from tests.remote import Remote
from tests.test_branch_sync import BASE_FILES, environment_link, git_tree, settings, tree_of

KILL_DEADLINE = 60.0  # seconds for the sync to start bringing the spare up to date


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote(tmp_path)
    remote.commit("production", BASE_FILES, "base")
    return remote


def sync(config: BranchSettings, branches: list[str] | None = None) -> dict[str, Outcome]:
    return {outcome.branch: outcome for outcome in Deployment(config).sync(branches)}


def live_tree(config: BranchSettings, environment: str = "production") -> Path:
    return Path(config.environments) / environment_link(config, environment)


def expected(remote: Remote, commit: str) -> dict[str, tuple[str, str]]:
    """What ``commit`` holds per ``git archive``, exec bits as ``git ls-tree`` has them."""
    entries = git_tree(remote, commit)
    for line in remote.git("ls-tree", "-r", commit).splitlines():
        mode, _, _, path = line.split(maxsplit=3)
        if mode in ("100644", "100755"):
            assert entries[path][0] == ("exec" if mode == "100755" else "file"), path
    return entries


def add_submodule(remote: Remote, path: str) -> None:
    """Record a submodule (a gitlink to the current commit) at ``path`` in the index, with
    the empty directory a submodule not checked out has (so ``git add --all`` keeps it)."""
    (remote.work / path).mkdir(parents=True)
    remote.git("update-index", "--add", "--cacheinfo", f"160000,{remote.head('HEAD')},{path}")


def test_a_spare_tree_brought_up_to_date_is_exactly_the_commit(
    tmp_path: Path, remote: Remote
) -> None:
    work = remote.work
    (work / "bin").mkdir()
    for name in ("run.sh", "stop.sh"):
        (work / "bin" / name).write_text(f"#!/bin/sh\necho {name}\n")
    (work / "bin/run.sh").chmod(0o755)
    os.symlink("../motd/templates/motd.erb", work / "modules/shared/files/motd-link")
    os.symlink("../../motd", work / "modules/shared/files/dir-link")
    os.symlink("/etc/hostname", work / "modules/shared/files/gone-link")
    (work / "modules/becomes").write_text("a file for now\n")
    (work / "modules/deep/a/b").mkdir(parents=True)
    (work / "modules/deep/a/b/only.pp").write_text("class only {}\n")
    (work / "modules/deep/kept.pp").write_text("class kept {}\n")
    remote.commit("production", {}, "a tree with something of everything")
    add_submodule(remote, "modules/vendored")
    add_submodule(remote, "modules/was-a-submodule")
    first = remote.commit("production", {}, "submodules")
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0)
    sync(config)
    first_tree = live_tree(config)
    spare_inode = first_tree.stat().st_ino
    second = remote.commit("production", {"manifests/site.pp": "node default { }\n"})
    assert sync(config)["production"].recycled_from is None  # the first tree was live
    second_tree = live_tree(config)
    before = tree_of(second_tree)

    # Every kind of change at once, against the first commit (the spare's).
    (work / "bin/run.sh").chmod(0o644)
    (work / "bin/stop.sh").chmod(0o755)
    (work / "modules/shared/files/motd-link").unlink()
    os.symlink("../motd/manifests/init.pp", work / "modules/shared/files/motd-link")
    (work / "modules/shared/files/gone-link").unlink()
    (work / "modules/motd/templates/motd.erb").unlink()
    os.symlink("../manifests/init.pp", work / "modules/motd/templates/motd.erb")
    (work / "modules/becomes").unlink()
    remote.git("rm", "--quiet", "--cached", "modules/was-a-submodule")
    (work / "modules/was-a-submodule").rmdir()
    add_submodule(remote, "modules/new-submodule")
    third = remote.commit("production", {
        "modules/becomes/init.pp": "now a directory\n",
        "modules/was-a-submodule": "now a file\n",
        "modules/deep/a/b/only.pp": None,
        "modules/vendored2/x/y/z.pp": "class z {}\n",
        "modules/shared/files/big.txt": "line\n" * 999 + "changed\n",
    })

    outcome = sync(config)["production"]

    assert (outcome.result, outcome.recycled_from) == ("deployed", first)
    third_tree = live_tree(config)
    assert third_tree.name == third
    assert third_tree.stat().st_ino == spare_inode  # the spare itself, not a new tree
    assert tree_of(third_tree) == expected(remote, third)
    assert not (third_tree / "modules/deep/a").exists()  # emptied, so gone as in git
    assert tree_of(second_tree) == before  # the tree superseded a moment ago: untouched
    assert not first_tree.exists()

    # And back: the directory becomes a file, the file a submodule, from the second tree.
    (work / "modules/becomes/init.pp").unlink()
    (work / "modules/becomes").rmdir()
    remote.git("rm", "--quiet", "--cached", "modules/was-a-submodule")
    (work / "modules/was-a-submodule").unlink()
    add_submodule(remote, "modules/was-a-submodule")
    fourth = remote.commit("production", {"modules/becomes": "a file again\n"})

    outcome = sync(config)["production"]

    assert (outcome.result, outcome.recycled_from) == ("deployed", second)
    assert live_tree(config).name == fourth
    assert tree_of(live_tree(config)) == expected(remote, fourth)
    assert tree_of(third_tree) == expected(remote, third)
    assert expected(remote, first) != expected(remote, fourth)  # the changes were real


def test_trees_a_run_may_still_use_are_never_recycled(tmp_path: Path, remote: Remote) -> None:
    """Within keep_seconds of being superseded, or among the newest keep_previous, a tree
    stays exactly its commit; the first tree past both is the one brought up to date."""
    config = settings(tmp_path, remote, keep_seconds=3600.0, keep_previous=0)
    commits = [sync(config)["production"].commit]
    trees = [live_tree(config)]
    for number in range(2):
        commits.append(remote.commit("production", {f"change{number}": f"{number}\n"}))
        outcome = sync(config)["production"]
        assert outcome.recycled_from is None  # every superseded tree is within the hour
        trees.append(live_tree(config))
    inodes = [(tree / "manifests/site.pp").stat().st_ino for tree in trees]

    kept_one = config._replace(keep_seconds=0.0, keep_previous=1)
    commits.append(remote.commit("production", {"change2": "2\n"}))
    outcome = sync(kept_one)["production"]

    # Superseded: trees[0] first, then trees[1]; trees[1] is the newest, kept.
    assert outcome.recycled_from == commits[0]
    assert not trees[0].exists()
    for tree, commit, inode in zip(trees[1:], commits[1:3], inodes[1:], strict=True):
        assert tree_of(tree) == expected(remote, commit)
        assert (tree / "manifests/site.pp").stat().st_ino == inode
    assert tree_of(live_tree(config)) == expected(remote, commits[3])


def test_a_spare_whose_commit_is_gone_gives_way_to_a_new_tree(
    tmp_path: Path, remote: Remote
) -> None:
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0)
    remote.commit("production", {"old": "1\n"})
    sync(config)
    remote.commit("production", {"old": "2\n"})
    sync(config)  # the first tree is now the spare
    remote.git("reset", "--quiet", "--hard", "HEAD~2")
    rewritten = remote.commit("production", {"rewritten": "yes\n"})  # force-pushed
    mirror = Path(config.cache) / "mirror.git"
    subprocess.run(["git", f"--git-dir={mirror}", "fetch", "--quiet", "--prune", "origin",
                    "+refs/heads/*:refs/heads/*"], check=True, timeout=60)
    subprocess.run(["git", f"--git-dir={mirror}", "-c", "gc.reflogExpire=now",
                    "-c", "gc.reflogExpireUnreachable=now", "gc", "--quiet", "--prune=now"],
                   check=True, timeout=60)

    outcome = sync(config)["production"]

    assert (outcome.result, outcome.recycled_from) == ("deployed", None)
    assert tree_of(live_tree(config)) == expected(remote, rewritten)


def test_recycled_tree_gets_fresh_git_metadata(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0, git_metadata=True)
    sync(config)
    remote.commit("production", {"a": "1\n"})
    sync(config)
    third = remote.commit("production", {"a": "2\n", "modules/motd/manifests/init.pp": None})

    assert sync(config)["production"].recycled_from is not None

    environment = Path(config.environments) / "production"
    assert remote.git("rev-parse", "HEAD", cwd=environment) == third
    assert remote.git("status", "--porcelain", cwd=environment) == ""


def test_kill_while_a_spare_is_brought_up_to_date_leaves_the_live_environment_intact(
    tmp_path: Path
) -> None:
    remote = Remote(tmp_path / "large")
    files: dict[str, str | None] = {
        f"modules/m{i % 40}/files/f{i}.txt": f"{i}\n" * 20 for i in range(4000)}
    remote.commit("production", files, "large")
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0)
    config_file = tmp_path / "opslab.yaml"
    config_file.write_text("branches:\n  keep_seconds: 0\n  keep_previous: 0\n")
    sync(config)
    spare_inode = live_tree(config).stat().st_ino
    live = remote.commit("production", {"small": "change\n"})
    sync(config)  # the first tree is the spare now
    environments = Path(config.environments)
    building = environments / ".opslab/building"
    trees = environments / ".opslab/trees/production"
    # Half the files differ from the spare: bringing it up to date takes a while.
    target = remote.commit("production", {
        path: ("changed\n" if number % 2 else None)
        for number, path in enumerate(list(files)[:3000])})

    process = subprocess.Popen(
        [sys.executable, "-m", "opslab.cli", f"--config={config_file}", "branch", "sync",
         f"--remote={config.remote}",
         f"--environments={environments}", f"--cache={config.cache}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OPSLAB_CONFIG": ""})
    try:
        deadline = time.monotonic() + KILL_DEADLINE
        while not os.listdir(building):
            assert process.poll() is None, "the sync ended before it touched the spare"
            assert time.monotonic() < deadline, "the sync never touched the spare"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)

    # Killed in the middle: the spare was taken out of trees/ and is half made; the live
    # environment is the old commit, whole and exact.
    assert os.listdir(building) == [f"production-{target}"]
    assert (building / f"production-{target}").stat().st_ino == spare_inode
    assert sorted(os.listdir(trees)) == [live, f"{live}.json"]
    assert environment_link(config, "production").endswith(live)
    assert tree_of(environments / "production") == expected(remote, live)

    outcome = sync(config)["production"]  # repairs: the half-made tree goes, a new one comes
    assert (outcome.result, outcome.recycled_from) == ("deployed", None)
    assert tree_of(environments / "production") == expected(remote, target)
    assert os.listdir(building) == []
