"""``opslab branch sync`` against real git remotes on disk."""

import errno
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
from types import SimpleNamespace

import pytest

from opslab import cli
from opslab.api.heads import BranchHeads
from opslab.branchrunner import cli as branch_cli
from opslab.branchrunner.deployment import Deployment, Outcome, SyncFailed
from opslab.branchrunner.environments import EnvironmentsDirectory
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


def test_branches_listed_from_one_another_are_each_exact(
    tmp_path: Path, remote: Remote
) -> None:
    """One sync lists the first commit in full and each next one as the previous one plus
    their difference: contents, modes, symlinks, additions and deletions, a file that
    becomes a directory and back, all between siblings."""
    work = remote.work
    os.symlink("../motd/templates/motd.erb", work / "modules/shared/files/link")
    remote.commit("production", {"modules/thing": "a file\n"})
    remote.commit("a_contents", {"manifests/site.pp": "node a {}\n",
                                 "modules/shared/files/big.txt": "other\n"}, base="production")
    remote.git("checkout", "--quiet", "-b", "b_shapes", "production")
    (work / "modules/shared/files/link").unlink()
    os.symlink("../../motd", work / "modules/shared/files/link")
    (work / "modules/motd/manifests/init.pp").chmod(0o755)
    (work / "modules/thing").unlink()
    remote.commit("b_shapes", {"modules/thing/init.pp": "a directory\n",
                               "modules/motd/templates/motd.erb": None,
                               "new/deep/file.pp": "added\n"})
    remote.commit("c_back", {"modules/thing/init.pp": None, "modules/thing": "a file again\n"},
                  base="b_shapes")
    # Listed after it, production differs from d_contents in contents alone.
    remote.commit("d_contents", {"manifests/site.pp": "node d {}\n"}, base="production")
    config = settings(tmp_path, remote)

    outcomes = sync(config)

    assert {outcome.result for outcome in outcomes.values()} == {"deployed"}
    environments = Path(config.environments)
    for branch, outcome in outcomes.items():
        assert tree_of(environments / branch) == git_tree(remote, str(outcome.commit)), branch
    assert (environments / "b_shapes/modules/motd/manifests/init.pp").stat().st_mode & 0o100


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


HOSTILE = ["-rf", "x;rm -rf ~", "$(touch_pwned)", "Feature/X", "feature_x", "Feature/Z",
           "feature/z", "über",
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
    # Feature/X and feature_x collide: the one named as the environment wins, and the
    # refusal says which; of Feature/Z and feature/z neither wins.
    assert results["Feature/X"][0] == "refused"
    assert "belongs to branch 'feature_x'" in str(outcomes["Feature/X"].error)
    assert results["feature_x"] == ("deployed", "feature_x")
    assert (results["Feature/Z"][0], results["feature/z"][0]) == ("refused", "refused")
    assert "'Feature/Z', 'feature/z' all map to environment 'feature_z'" in str(
        outcomes["feature/z"].error)
    assert results["$(touch_pwned)"] == ("deployed", "__touch_pwned_")
    assert results["ok/deep/name"] == ("deployed", "ok_deep_name")
    assert results["über"] == ("deployed", "_ber")
    names = {p.name for p in Path(config.environments).iterdir()}
    assert names == {".opslab", "production", "__touch_pwned_", "ok_deep_name", "_ber",
                     "feature_x", "_id__a_b_c_d_e_f_"}
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
    assert ("branch 'feature_x' maps to environment 'feature_x', which belongs to branch "
            "'feature/x' (it is deployed there)") in str(outcomes["feature_x"].error)
    assert (Path(config.environments) / "feature_x/owner").exists()


def test_a_branch_named_like_a_deployed_environment_freezes_nothing(
    tmp_path: Path, remote: Remote
) -> None:
    """Production beside production: the environment's own branch keeps it, everywhere."""
    config = settings(tmp_path, remote)
    remote.commit("feature/x", {"owner": "1\n"}, base="production")
    sync(config)
    remote.commit("Production", {"usurper": "1\n"}, base="production")
    remote.commit("feature_x", {"usurper": "1\n"}, base="production")
    production = remote.commit("production", {"news": "2\n"})
    feature = remote.commit("feature/x", {"owner": "2\n"})

    outcomes = sync(config)

    # Nothing deployed stops updating...
    assert (outcomes["production"].result, outcomes["production"].commit) == (
        "deployed", production)
    assert (outcomes["feature/x"].result, outcomes["feature/x"].commit) == ("deployed", feature)
    # ...and each usurper is refused, naming the branch that holds the environment.
    assert outcomes["Production"].result == "refused"
    assert "which belongs to branch 'production'" in str(outcomes["Production"].error)
    assert outcomes["feature_x"].result == "refused"
    assert "which belongs to branch 'feature/x'" in str(outcomes["feature_x"].error)
    environments = Path(config.environments)
    assert (environments / "production/news").exists()
    assert not (environments / "production/usurper").exists()
    assert sync(config, ["Production"])["Production"].result == "refused"
    assert environment_link(config, "production").endswith(production)

    # A machine that has deployed nothing yet (a new instance) gets the same answer.
    fresh = settings(tmp_path / "fresh", remote)
    assert sync(fresh, ["Production"])["Production"].result == "refused"
    outcomes = sync(fresh)
    assert (outcomes["production"].result, outcomes["Production"].result) == (
        "deployed", "refused")
    assert environment_link(fresh, "production").endswith(production)

    # The API tells production's instances production's commit, Production's its own.
    heads = BranchHeads(remote.url, ttl=0.0, timeout=30.0)
    assert heads.commit("production") == production
    assert heads.commit("Production") == remote.head("Production")
    assert heads.commit("no-such-branch") is None


def test_a_branch_apply_names_claims_its_environment_on_an_instance(
    tmp_path: Path, remote: Remote
) -> None:
    """Another project pushes a branch named exactly like the environment tools' branch maps
    to. The holder rule (shared servers) gives it the environment where nothing is
    deployed; apply on an instance names the branch of its classification, which takes the
    instance's environment, fresh or deployed from the squatter already."""
    tools = remote.commit("feature/Tools-MOTD", {"owner": "tools\n"}, base="production")
    remote.commit("feature_tools_motd", {"squatter": "1\n"}, base="production")
    config = settings(tmp_path, remote)
    environment = Path(config.environments) / "feature_tools_motd"

    refused = sync(config, ["feature/Tools-MOTD"])["feature/Tools-MOTD"]
    assert (refused.result, environment.exists()) == ("refused", False)
    assert "which belongs to branch 'feature_tools_motd' (it has exactly that name)" in str(
        refused.error)

    def claim(config: BranchSettings, *branches: str) -> dict[str, Outcome]:
        return {outcome.branch: outcome
                for outcome in Deployment(config).sync(list(branches), claim=True)}

    claimed = claim(config, "feature/Tools-MOTD")["feature/Tools-MOTD"]
    assert (claimed.result, claimed.environment, claimed.commit) == (
        "deployed", "feature_tools_motd", tools)
    assert sorted(path.name for path in environment.iterdir()) == sorted(
        [*tree_of_names(BASE_FILES), "owner"])
    assert Deployment(config).environments.deployed_from("feature_tools_motd") == (
        "feature/Tools-MOTD")
    # Deployed there, it holds the environment for every sync after.
    assert sync(config)["feature_tools_motd"].result == "refused"

    squatted = settings(tmp_path / "squatted", remote)
    assert sync(squatted, ["feature_tools_motd"])["feature_tools_motd"].result == "deployed"
    claimed = claim(squatted, "feature/Tools-MOTD")["feature/Tools-MOTD"]
    assert (claimed.result, claimed.commit) == ("deployed", tools)
    assert not (Path(squatted.environments) / "feature_tools_motd/squatter").exists()

    # Two branches cannot both claim one environment: neither gets it.
    both = claim(settings(tmp_path / "both", remote), "feature/Tools-MOTD", "feature_tools_motd")
    assert {outcome.result for outcome in both.values()} == {"refused"}
    assert "were all asked to take environment 'feature_tools_motd'" in str(
        both["feature_tools_motd"].error)


def tree_of_names(files: dict[str, str]) -> set[str]:
    """The top-level names of a tree holding ``files``."""
    return {path.split("/")[0] for path in files}


def test_branch_heads_are_listed_once_per_ttl(tmp_path: Path, remote: Remote) -> None:
    heads = BranchHeads(remote.url, ttl=3600.0, timeout=30.0)
    first = heads.commit("production")
    assert first == remote.head("production")
    remote.commit("production", {"later": "1\n"})
    assert heads.commit("production") == first  # the list of an hour ago still holds
    assert BranchHeads(remote.url, ttl=0.0, timeout=30.0).commit("production") == \
        remote.head("production")


def test_a_sync_of_some_branches_purges_only_among_them(tmp_path: Path, remote: Remote) -> None:
    """``--include 'feature/*'`` is about feature branches: production is not its to purge."""
    remote.commit("feature/kept", {"k": "1\n"}, base="production")
    remote.commit("feature/gone", {"g": "1\n"}, base="production")
    remote.commit("wip", {"w": "1\n"}, base="production")
    config = settings(tmp_path, remote)
    sync(config)
    environments = Path(config.environments)
    before = {name: environment_link(config, name) for name in ("production", "wip")}
    remote.delete("feature/gone")
    remote.delete("wip")  # gone, but outside the selection below: not that sync's business

    result = subprocess.run(
        [sys.executable, "-m", "opslab.cli", "branch", "sync", f"--remote={remote.url}",
         f"--environments={environments}", f"--cache={config.cache}",
         "--include", "feature/*", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "OPSLAB_CONFIG": ""})

    assert result.returncode == 0, result.stderr
    records = {r["environment"]: r["result"] for r in map(json.loads, result.stdout.splitlines())}
    assert records == {"feature_kept": "unchanged", "feature_gone": "purged"}
    assert not (environments / "feature_gone").exists()
    assert {name: environment_link(config, name) for name in ("production", "wip")} == before
    assert tree_of(environments / "production") == git_tree(remote, remote.head("production"))
    assert json.loads((environments / ".opslab/records/production.json").read_text())[
        "result"] == "deployed"

    # The full sync, whose selection is every branch, purges wip.
    assert sync(config)["wip"].result == "purged"
    assert (environments / "production").exists()


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


def test_trees_are_on_disk_before_they_are_marked_or_swapped_in(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut cannot leave a symlink or a marker naming a tree whose files never reached
    the disk: one syncfs of the new trees comes before any marker or swap, and the swaps
    are fsynced before the records tell of them (and before pruning)."""
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0)
    environments = Path(config.environments)
    trees = environments / ".opslab/trees/production"
    record = environments / ".opslab/records/production.json"
    first = sync(config)["production"].commit
    second = remote.commit("production", {"manifests/site.pp": "node default { }\n"})
    seen: list[tuple[object, ...]] = []
    flush, flush_links = EnvironmentsDirectory.flush, EnvironmentsDirectory.flush_links

    def watched_flush(self: EnvironmentsDirectory) -> None:
        seen.append(("flush", Path(environment_link(config, "production")).name,
                     (trees / second).is_dir(), (trees / f"{second}.json").exists()))
        flush(self)  # the real syncfs(2)

    def watched_flush_links(self: EnvironmentsDirectory) -> None:
        seen.append(("links", Path(environment_link(config, "production")).name,
                     json.loads(record.read_text())["commit"]))
        flush_links(self)

    monkeypatch.setattr(EnvironmentsDirectory, "flush", watched_flush)
    monkeypatch.setattr(EnvironmentsDirectory, "flush_links", watched_flush_links)

    assert sync(config)["production"].result == "deployed"
    # At the flush: the new tree made, unmarked, the environment still on the old one.
    # At the fsync of the links: swapped, the record not yet written.
    assert seen == [("flush", first, True, False), ("links", second, first)]
    assert tree_of(environments / "production") == git_tree(remote, second)

    seen.clear()
    assert sync(config)["production"].result == "unchanged"
    assert seen == []  # nothing made, nothing swapped: the no-change sync writes nothing


def test_a_live_tree_that_lost_its_marker_is_kept(tmp_path: Path, remote: Remote) -> None:
    """A power cut may lose a marker written after its tree's flush; the live tree is then
    complete all the same: never pruned or rebuilt, and marked again."""
    remote.commit("feature/x", {"x": "1\n"}, base="production")
    config = settings(tmp_path, remote, keep_seconds=0.0, keep_previous=0)
    commit = sync(config)["production"].commit
    trees = Path(config.environments) / ".opslab/trees/production"
    tree_inode = (trees / commit).stat().st_ino
    (trees / f"{commit}.json").unlink()

    remote.commit("feature/x", {"x": "2\n"})
    assert sync(config, ["feature/x"])["feature/x"].result == "deployed"  # prunes
    assert (trees / commit).stat().st_ino == tree_inode

    assert sync(config)["production"].result == "unchanged"
    assert (trees / commit).stat().st_ino == tree_inode
    assert json.loads((trees / f"{commit}.json").read_text())["branch"] == "production"
    assert tree_of(Path(config.environments) / "production") == git_tree(remote, commit)


def test_a_short_object_is_written_anew_not_trusted(tmp_path: Path, remote: Remote) -> None:
    """An object cut short (a sync killed, or a power cut before its flush) is caught by its
    size and written again as a new inode; the next tree holds the whole content."""
    config = settings(tmp_path, remote)
    sync(config)
    environments = Path(config.environments)
    big = environments / "production/modules/shared/files/big.txt"
    inode = big.stat().st_ino
    os.truncate(big, 10)  # the object itself: every tree that links it sees this

    commit = remote.commit("production", {"manifests/site.pp": "node default { }\n"})
    assert sync(config)["production"].result == "deployed"

    assert big.read_text() == "line\n" * 1000
    assert big.stat().st_ino != inode
    assert tree_of(environments / "production") == git_tree(remote, commit)


def test_an_object_at_the_link_limit_is_linked_through_a_copy(
    tmp_path: Path, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 allows 65,000 links to one inode, which an empty file in every module of forty
    environments reaches. An object at the limit is linked through a copy of it."""
    config = settings(tmp_path, remote)
    sha = remote.git("rev-parse", "production:modules/shared/files/big.txt")
    name = f"{sha[:2]}/{sha[2:]}"
    link = os.link

    def limited(source: str, *arguments: object, **options: object) -> None:
        if source == name:  # the object itself is at the limit; its copies are not
            raise OSError(errno.EMLINK, os.strerror(errno.EMLINK))
        link(source, *arguments, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", limited)
    commit = sync(config)["production"].commit

    environments = Path(config.environments)
    objects = environments / ".opslab/objects"
    assert tree_of(environments / "production") == git_tree(remote, commit)
    big = environments / "production/modules/shared/files/big.txt"
    assert big.stat().st_ino == (objects / f"{name}.1").stat().st_ino
    assert (objects / name).stat().st_nlink == 1  # never linked: at its limit


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


# Command lines read without argparse when plain (opslab.cli._plain and the branch
# runner's _plain_sync), each as [opslab's arguments]: both readings must agree.
PLAIN = [
    ["branch", "sync"],
    ["--config", "opslab.yaml", "branch", "sync", "--json", "production"],
    ["--config=opslab.yaml", "branch", "--config", "other.yaml", "sync", "feature/x", "b"],
    ["--config=", "--config=-odd", "branch", "sync", "--remote=-odd", "--remote", "r"],
    ["branch", "sync", "--remote", "file:///srv/control.git", "--environments", "e",
     "--cache=c", "--include", "feature/*", "--include=production", "--exclude", "x*",
     "--exclude=", "--json", "--json", "", "a=b", "sync"],
    ["agent", "run", "--config", "x"],
    ["branch", "--config", "sync", "sync"],
]
# And those left to argparse (help, mistakes, abbreviations, "--", ...).
NOT_PLAIN = [
    [], ["--help"], ["--version"], ["--config"], ["--config", "-x", "branch"], ["--conf", "c"],
    ["branch"], ["branch", "-h"], ["branch", "apply"], ["branch", "sync", "--help"],
    ["branch", "sync", "--rem", "r"], ["branch", "sync", "--remote"],
    ["branch", "sync", "--remote", "-r"], ["branch", "sync", "--json=yes"],
    ["branch", "sync", "--", "-rf"], ["branch", "sync", "a", "--json"],
    ["branch", "sync", "--config", "c"], ["branch", "--remote", "r", "sync"],
    ["branch", "sync", "-"], ["branch", "sync", "--certname", "x"],
]


def argparse_reading(argv: list[str]) -> tuple[str | None, str, object] | None:
    """What the parsers make of ``opslab ARGV`` (the branch runner's arguments as a dict);
    None for a usage error."""
    try:
        top = cli._parser().parse_args(argv)
        if top.component != "branch":
            return top.config, top.component, top.arguments
        branch = branch_cli._parser(top.config).parse_args(top.arguments,
                                                           namespace=SimpleNamespace())
    except SystemExit:
        return None
    return top.config, top.component, vars(branch)


def plain_reading(argv: list[str]) -> tuple[str | None, str, object] | None:
    """What opslab and the branch runner read without argparse; None: left to argparse."""
    top = cli._plain(argv)
    if top is None or top[1] != "branch":
        return top
    branch = branch_cli._plain_sync(top[2], top[0])
    return None if branch is None else (top[0], top[1], vars(branch))


@pytest.mark.parametrize("argv", PLAIN)
def test_a_plain_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    reading = plain_reading(argv)
    assert reading is not None
    assert reading == argparse_reading(argv)


@pytest.mark.parametrize("argv", NOT_PLAIN)
def test_any_other_command_line_is_left_to_argparse(argv: list[str]) -> None:
    assert plain_reading(argv) is None


def test_a_no_change_sync_imports_neither_logging_nor_argparse(
    tmp_path: Path, remote: Remote
) -> None:
    """Both are a tenth of what a sync that finds nothing to do costs: logging is
    imported at the first line logged (opslab.lazylog), argparse only for a command
    line that is not plain. A sync that logs still logs as before."""
    remote.set_ref("-rf", remote.head("production"))
    command = ["branch", "sync", "--remote", remote.url, "--environments",
               str(tmp_path / "environments"), "--cache", str(tmp_path / "cache")]
    script = ("import sys; from opslab.cli import main; status = main(sys.argv[1:]); "
              "print(sorted({'logging', 'argparse'} & set(sys.modules)), file=sys.stderr); "
              "sys.exit(status)")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *command], capture_output=True,
                              text=True, timeout=120, check=False,
                              env={**os.environ, "OPSLAB_CONFIG": ""})

    first = run()
    assert first.returncode == 1  # -rf is refused
    assert first.stderr.splitlines() == [
        "opslab branch: warning: refused branch '-rf': branch name '-rf' is refused: it "
        "starts with '-'",
        f"opslab branch: deployed production at {remote.head('production')[:12]} as "
        "production",
        "['logging']",
    ]
    command += ["production"]
    again = run()
    assert (again.returncode, again.stderr) == (0, "[]\n")
    assert again.stdout.split()[0] == "unchanged"
