"""``opslab branch sync`` against real git remotes on disk."""

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from opslab.branchrunner.deployment import Deployment, Outcome, SyncFailed
from opslab.config import BranchSettings
from opslab.lock import FileLock, LockHeld
from tests.remote import Remote

BASE_FILES = {
    "manifests/site.pp": "node default {}\n",
    "modules/motd/manifests/init.pp": "class motd {}\n",
    "modules/motd/templates/motd.erb": "hello\n",
    "modules/shared/files/big.txt": "line\n" * 1000,
}


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    remote = Remote(tmp_path)
    remote.commit("production", BASE_FILES, "base")
    return remote


def settings(tmp_path: Path, remote: Remote, **changes: object) -> BranchSettings:
    return BranchSettings(remote=remote.url, environments=str(tmp_path / "environments"),
                          cache=str(tmp_path / "cache"), lock_timeout=1.0)._replace(**changes)


def sync(config: BranchSettings, branches: list[str] | None = None) -> dict[str, Outcome]:
    return {outcome.branch: outcome for outcome in Deployment(config).sync(branches)}


def tree_of(path: Path) -> dict[str, tuple[str, str]]:
    """Every entry below ``path``: relative path -> (kind, content or target)."""
    entries = {}
    for directory, names, files in os.walk(path):
        for name in names + files:
            full = Path(directory, name)
            relative = str(full.relative_to(path))
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir", "")
            else:
                kind = "exec" if info.st_mode & stat.S_IXUSR else "file"
                entries[relative] = (kind, full.read_text())
    return entries


def git_tree(remote: Remote, commit: str) -> dict[str, tuple[str, str]]:
    """What ``commit`` holds according to ``git archive``: the reference for an exact deploy."""
    archive = subprocess.run(["git", f"--git-dir={remote.bare}", "archive", "--format=tar",
                              commit], capture_output=True, check=True, timeout=120).stdout
    entries: dict[str, tuple[str, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            path = member.name.rstrip("/")
            if member.isdir():
                entries[path] = ("dir", "")
            elif member.issym():
                entries[path] = ("link", member.linkname)
            else:
                content = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
                entries[path] = ("exec" if member.mode & 0o100 else "file", content)
    return entries


def test_every_branch_becomes_an_exact_environment(tmp_path: Path, remote: Remote) -> None:
    (remote.work / "bin").mkdir()
    (remote.work / "bin/run.sh").write_text("#!/bin/sh\necho run\n")
    (remote.work / "bin/run.sh").chmod(0o755)
    os.symlink("../motd/templates/motd.erb", remote.work / "modules/shared/files/motd-link")
    os.symlink("/etc/hostname", remote.work / "modules/shared/files/absolute-link")
    production = remote.commit("production", {}, "links")
    feature = remote.commit("feature/Login-2", {"modules/motd/templates/motd.erb": "hi\n"})
    config = settings(tmp_path, remote)

    outcomes = sync(config)

    assert {b: o.result for b, o in outcomes.items()} == {
        "production": "deployed", "feature/Login-2": "deployed"}
    environments = Path(config.environments)
    assert sorted(p.name for p in environments.iterdir() if not p.name.startswith(".")) == [
        "feature_login_2", "production"]
    for name, commit in (("production", production), ("feature_login_2", feature)):
        deployed = tree_of(environments / name)
        assert deployed == git_tree(remote, commit)
        assert ".git" not in deployed
    assert (environments / "production/bin/run.sh").stat().st_mode & stat.S_IXUSR
    assert os.readlink(environments / "production/modules/shared/files/motd-link") == \
        "../motd/templates/motd.erb"


def environment_link(config: BranchSettings, name: str) -> str:
    return os.readlink(Path(config.environments) / name)


def test_nothing_changed_means_nothing_rebuilt(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    sync(config)
    before = environment_link(config, "production")
    inode = (Path(config.environments) / "production/manifests/site.pp").stat().st_ino

    outcome = sync(config)["production"]

    assert outcome.result == "unchanged"
    assert environment_link(config, "production") == before
    assert (Path(config.environments) / "production/manifests/site.pp").stat().st_ino == inode
    last = json.loads((Path(config.environments) / ".opslab/records/last-sync.json").read_text())
    assert [(e["environment"], e["result"]) for e in last["environments"]] == [
        ("production", "unchanged")]


def test_one_line_change_shares_every_other_file(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    first = sync(config)["production"].commit
    old_tree = Path(config.environments) / environment_link(config, "production")
    second = remote.commit("production", {"modules/motd/templates/motd.erb": "hello, world\n"})
    remote.commit("feature_a", {"manifests/site.pp": "node default { }\n"}, base="production")

    outcomes = sync(config)

    assert (outcomes["production"].previous_commit, outcomes["production"].commit) == (
        first, second)
    environments = Path(config.environments)
    new_tree = environments / environment_link(config, "production")
    assert new_tree != old_tree
    assert (old_tree / "modules/motd/templates/motd.erb").read_text() == "hello\n"  # kept
    assert (new_tree / "modules/motd/templates/motd.erb").read_text() == "hello, world\n"
    # Unchanged content is one inode across trees and branches: stored once.
    big = "modules/shared/files/big.txt"
    inodes = {(tree / big).stat().st_ino for tree in (old_tree, new_tree,
                                                      environments / "feature_a")}
    assert len(inodes) == 1
    record = json.loads((environments / ".opslab/records/production.json").read_text())
    assert record["branch"] == "production"
    assert (record["commit"], record["previous_commit"], record["result"]) == (
        second, first, "deployed")
    assert record["duration"] >= 0
    assert "started_at" in record


def test_force_push_deploys_the_new_history(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    remote.commit("feature_x", {"a.txt": "one\n"}, base="production")
    sync(config)
    remote.git("checkout", "--quiet", "--orphan", "rewritten")
    remote.git("rm", "--quiet", "-r", "-f", ".")
    rewritten = remote.commit("rewritten", {"only.txt": "new history\n"})
    remote.git("push", "--quiet", "--force", "origin", f"{rewritten}:refs/heads/feature_x")

    outcome = sync(config, ["feature_x"])["feature_x"]

    assert (outcome.result, outcome.commit) == ("deployed", rewritten)
    assert sorted(tree_of(Path(config.environments) / "feature_x")) == ["only.txt"]


def test_deleted_branch_is_purged_and_its_tree_pruned_later(
    tmp_path: Path, remote: Remote
) -> None:
    config = settings(tmp_path, remote, keep_seconds=3600.0)
    remote.commit("doomed", {"x": "x\n"}, base="production")
    sync(config)
    tree = Path(config.environments) / environment_link(config, "doomed")
    remote.delete("doomed")

    outcomes = sync(config)

    assert outcomes["doomed"].result == "purged"
    assert not (Path(config.environments) / "doomed").exists()
    assert tree.exists()  # a run that started on it may still be reading
    sync(config._replace(keep_seconds=0.0))
    assert not tree.exists()
    record = json.loads((Path(config.environments) / ".opslab/records/doomed.json").read_text())
    assert record["result"] == "purged"


def test_named_sync_leaves_other_environments_alone(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    remote.commit("other", {"x": "x\n"}, base="production")
    sync(config)
    remote.delete("other")
    remote.commit("production", {"y": "y\n"})

    outcomes = sync(config, ["production"])

    assert list(outcomes) == ["production"]
    assert (Path(config.environments) / "other").exists()


def test_include_and_exclude_filters(tmp_path: Path, remote: Remote) -> None:
    for branch in ("feature_a", "feature_b", "wip_c"):
        remote.commit(branch, {}, base="production")
    config = settings(tmp_path, remote, include=("production", "feature_*"),
                      exclude=("feature_b",))
    assert sorted(sync(config)) == ["feature_a", "production"]


def test_unreachable_remote_changes_nothing(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    sync(config)
    before = environment_link(config, "production")
    broken = config._replace(remote=str(tmp_path / "no-such-remote.git"))
    with pytest.raises(SyncFailed, match="fetch from the remote failed, nothing changed"):
        sync(broken)
    assert environment_link(config, "production") == before


def test_two_syncs_never_interleave(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote, lock_timeout=0.3)
    sync(config)
    holder = FileLock(str(Path(config.environments) / ".opslab/lock"), "a purge by hand")
    with holder, pytest.raises(LockHeld) as refused:
        sync(config)
    assert f"a purge by hand (pid {os.getpid()}" in str(refused.value)
    assert sync(config)["production"].result == "unchanged"  # free again


HOSTILE = ["-rf", "x;rm -rf ~", "$(touch_pwned)", "Feature/X", "feature_x", "über",
           "a" * 240, "ok/deep/name", "`id`;a|b&c'd\"e<f>"]


def test_hostile_branch_names_are_refused_or_mapped_safely(
    tmp_path: Path, remote: Remote
) -> None:
    base = remote.head("production")
    refused_by_git = []
    for name in HOSTILE:
        try:
            remote.set_ref(name, base)
        except AssertionError:
            refused_by_git.append(name)  # so nothing can ever arrive with that name
    config = settings(tmp_path, remote)
    work = Path.cwd()

    outcomes = sync(config)

    results = {branch: (o.result, o.environment) for branch, o in outcomes.items()}
    assert results["-rf"] == ("refused", None)
    assert refused_by_git == ["x;rm -rf ~"]  # git refuses the space itself
    assert results["a" * 240][0] == "refused"
    assert results["Feature/X"][0] == "refused"  # Feature/X and feature_x collide:
    assert results["feature_x"][0] == "refused"  # neither wins silently
    assert results["$(touch_pwned)"] == ("deployed", "__touch_pwned_")
    assert results["ok/deep/name"] == ("deployed", "ok_deep_name")
    assert results["über"] == ("deployed", "_ber")
    names = {p.name for p in Path(config.environments).iterdir()}
    assert names == {".opslab", "production", "__touch_pwned_", "ok_deep_name", "_ber",
                     "_id__a_b_c_d_e_f_"}
    assert not list(work.glob("*pwned*"))
    assert not list(tmp_path.glob("*pwned*"))


def test_collision_with_a_deployed_environment_keeps_the_owner(
    tmp_path: Path, remote: Remote
) -> None:
    config = settings(tmp_path, remote)
    remote.commit("feature/x", {"owner": "1\n"}, base="production")
    sync(config)
    remote.commit("feature_x", {"usurper": "1\n"}, base="production")

    outcomes = sync(config)

    assert outcomes["feature/x"].result == "unchanged"
    assert outcomes["feature_x"].result == "refused"
    assert "'feature/x', 'feature_x' all map to environment 'feature_x'" in str(
        outcomes["feature_x"].error)
    assert (Path(config.environments) / "feature_x/owner").exists()


def test_file_becomes_a_directory(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    remote.commit("production", {"modules/thing": "a file\n"})
    sync(config)
    old = Path(config.environments) / environment_link(config, "production")
    (remote.work / "modules/thing").unlink()
    remote.commit("production", {"modules/thing/init.pp": "now a directory\n"})

    assert sync(config)["production"].result == "deployed"

    assert (Path(config.environments) / "production/modules/thing/init.pp").read_text() == \
        "now a directory\n"
    assert (old / "modules/thing").read_text() == "a file\n"


def test_submodule_is_an_empty_directory(tmp_path: Path, remote: Remote) -> None:
    blob = remote.head("production")
    remote.git("update-index", "--add", "--cacheinfo", f"160000,{blob},modules/vendored")
    remote.git("commit", "--quiet", "-m", "submodule")
    remote.git("push", "--quiet", "origin", "production")
    config = settings(tmp_path, remote)
    assert sync(config)["production"].result == "deployed"
    vendored = Path(config.environments) / "production/modules/vendored"
    assert vendored.is_dir()
    assert list(vendored.iterdir()) == []


def test_unsafe_tree_is_refused_and_changes_nothing(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    sync(config)
    before = environment_link(config, "production")
    blob = remote.git("hash-object", "-w", "--stdin", cwd=remote.bare)  # empty blob
    tree = subprocess.run(["git", f"--git-dir={remote.bare}", "mktree"],
                          input=f"100644 blob {blob}\t.git\n", capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    commit = remote.git("commit-tree", tree, "-m", "sneaky", cwd=remote.bare)
    remote.set_ref("production", commit)

    outcome = sync(config)["production"]

    assert outcome.result == "failed"
    assert "refusing path '.git'" in str(outcome.error)
    assert environment_link(config, "production") == before


def test_foreign_directory_is_never_replaced(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote)
    foreign = Path(config.environments) / "production"
    foreign.mkdir(parents=True)
    (foreign / "precious").write_text("not ours\n")

    outcome = sync(config)["production"]

    assert outcome.result == "failed"
    assert "was not deployed by opslab" in str(outcome.error)
    assert (foreign / "precious").read_text() == "not ours\n"


def test_git_metadata_when_configured(tmp_path: Path, remote: Remote) -> None:
    config = settings(tmp_path, remote, git_metadata=True)
    commit = sync(config)["production"].commit
    environment = Path(config.environments) / "production"
    assert remote.git("rev-parse", "HEAD", cwd=environment) == commit
    assert remote.git("status", "--porcelain", cwd=environment) == ""


# Interrupted syncs.


@pytest.fixture
def large_remote(tmp_path: Path) -> Remote:
    remote = Remote(tmp_path / "large")
    files = {f"modules/m{i % 40}/files/f{i}.txt": f"{i}\n" * 50 for i in range(3000)}
    remote.commit("production", files, "large")
    return remote


def test_kill_during_sync_leaves_the_environment_intact_and_is_repaired(
    tmp_path: Path, large_remote: Remote
) -> None:
    config = settings(tmp_path, large_remote)
    first = sync(config)["production"].commit
    environments = Path(config.environments)
    command = [sys.executable, "-m", "opslab.cli", "branch", "sync",
               f"--remote={config.remote}", f"--environments={config.environments}",
               f"--cache={config.cache}"]
    commits = {first}
    interrupted = 0
    for round_number, delay in enumerate((0.05, 0.15, 0.3, 0.5, 0.8)):
        new = large_remote.commit("production", {
            f"modules/m{round_number}/files/changed.txt": f"round {round_number}\n",
            f"modules/m{round_number + 1}/files/f{round_number + 1}.txt": None,
        })
        commits.add(new)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

        # Puppet's view: the old tree or the new one, complete either way.
        link = environment_link(config, "production")
        live_commit = Path(link).name
        assert live_commit in commits
        interrupted += live_commit != new
        assert (environments / ".opslab/trees/production" / f"{live_commit}.json").exists()
        assert tree_of(environments / "production") == git_tree(large_remote, live_commit)

        # The next sync repairs everything.
        outcome = sync(config)["production"]
        assert outcome.ok
        assert environment_link(config, "production").endswith(new)
        assert list((environments / ".opslab/building").iterdir()) == []
    assert tree_of(environments / "production") == git_tree(large_remote, new)
    assert interrupted >= 1  # at least one kill landed before the swap


def test_command_line_without_configuration(tmp_path: Path, remote: Remote) -> None:
    environments = tmp_path / "environments"
    command = [sys.executable, "-m", "opslab.cli", "branch", "sync", f"--remote={remote.url}",
               f"--environments={environments}", f"--cache={tmp_path / 'cache'}", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "OPSLAB_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert (record["environment"], record["result"]) == ("production", "deployed")

    refused = subprocess.run([*command, "--", "-rf"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "starts with '-'" in refused.stderr

    unreachable = subprocess.run(
        [*command[:5], f"--remote={tmp_path / 'nowhere'}", *command[6:]],
        capture_output=True, text=True, timeout=120, check=False)
    assert unreachable.returncode == 1
    assert "nothing changed" in unreachable.stderr
