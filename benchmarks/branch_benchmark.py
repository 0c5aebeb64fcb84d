"""How fast does ``opslab branch sync`` deploy branches, next to r10k, on a large repository?

opslab's branch runner deploys the branches of a Puppet control repository as
environment directories, the job r10k does on most Puppet servers. What an
operator feels is the wall time of one whole command, so every measure here is
a whole process (opslab as ``opslab --config FILE branch sync [production]``,
r10k as ``r10k deploy environment -c FILE [production]``), each tool with its own
cache and environments directory, on the same ``file://`` remote (so neither gets
git's local-clone hard links). Every target is the ratio it names, judged on
medians of several rounds in one run; within a round the tools run back to back
in an order that rotates from round to round, and before each command an
untimed ``sync`` writes back what the previous one left dirty.

The repository has the shape and size of a large real one (what the figures
depend on): 10,800 files (24 executable, 6 symlinks, one to a directory) in
2,885 directories, 73 MB in the tree, text of random words that compresses
about as code does; ``production`` and 40 branches a small commit (1 to 3
files) away from it, written with ``git fast-import`` from a fixed seed.

1. first deploy of ``production`` from cold, fresh directories each round:
   opslab no slower than r10k;
2. redeploying it with nothing changed: opslab under 0.1 s (r10k beside it);
3. a one-line commit to ``production``, then redeploying it, after an untimed
   first change (a branch that has changed before): opslab at least 1.5x faster
   than r10k when the environment has a spare tree (its superseded trees are
   past ``branches.keep_seconds``, here 0, and ``keep_previous``, here 0), which
   the difference brings up to date; and, for comparison, opslab with the
   defaults, whose superseded trees all stay an hour, so every change is a new
   tree;
4. every branch from cold: opslab at least 5x faster than r10k; beside them
   the *floor*, the mkdir(2), link(2) and symlink(2) calls of the 41 trees made
   by a tight loop (``--floor``), so the report says how far opslab is from the
   calls no tree-per-environment deployer can avoid, and where the rest goes
   (opslab's sync record times its phases: asking the remote and fetching,
   listing commits, reading and storing objects, making trees, and the one
   syncfs(2) that puts them on disk before any is swapped in). Then the disk
   used (``du``, a hard-linked file counted once) and the files and inodes.

opslab's trees are checked against ``git archive`` of their commits (paths,
exec bits, symlink targets, sizes): production after (1) and after every
round of (3), two environments in full after (4) and each branch's own change
in every one. r10k's are only sanity-checked. r10k is Debian's ``r10k``
package, installed with apt-get when missing (as root), else the benchmark is
skipped. Benchmarks report: the exit status is 0 whatever the numbers,
non-zero only if the benchmark cannot run or opslab deployed something wrong.

Usage: ``python benchmarks/branch_benchmark.py [--quick] [--json FILE] [--keep]``
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BenchmarkError,
    Run,
    bytecode_environment,
    find_script,
    git,
    print_environment,
    print_targets,
    rotated,
    run_measured,
    succeeded,
    write_results,
)

from opslab.names import environment_for_branch

MB = 1024 * 1024
SEED = 20240611
BASE_TIME = 1_717_000_000  # commit timestamps: same repository, same commit ids, every run
FEATURE_BRANCHES = 40
DEPLOY_TIMEOUT = 1800.0  # seconds, for any one deploy
# ext4 without a journal (this machine's) will not reuse an inode freed less than 60 s
# ago (RECENTCY_MIN in fs/ext4/ialloc.c; 300 s while its inode table block is dirty,
# hence the sync after every delete), and skipping them costs every allocation.
SETTLE_SECONDS = 65.0
TARGETS = {"first": 1.0, "one_line_spare": 1.5, "all": 5.0}  # r10k / opslab, at least
TARGET_NO_CHANGE_S = 0.1
# Variables that would point git at some other repository than the one meant.
GIT_REPOSITORY_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR",
)


class WrongResult(BenchmarkError):
    """opslab deployed something other than the commit it was asked for."""


@dataclass(frozen=True)
class Shape:
    """How big a repository to generate, and how many rounds of each measure."""

    modules: int
    node_files: int  # hieradata/nodes/*.yaml
    tree_bytes: int
    rounds: dict[str, int]


FULL = Shape(240, 234, 73 * MB, {"first": 3, "no_change": 7, "one_line": 5, "all": 3})
QUICK = Shape(24, 24, 73 * MB // 10, {"first": 2, "no_change": 5, "one_line": 3, "all": 2})
# Each module: 12 directories and 44 files, as (directory, files in it).
MODULE_FILES = (("manifests", 12), ("templates", 8), ("files", 6),
                ("lib/puppet/parser/functions", 4), ("lib/facter", 3), ("spec/classes", 10),
                ("examples", 1))
TOP_FILES = ("manifests/site.pp", "hiera.yaml", "environment.conf", "README.md",
             "hieradata/common.yaml", "scripts/deploy.sh")


# --- the repository ------------------------------------------------------------------------

Tree = dict[str, tuple[str, bytes]]  # path -> (git mode, content)


@dataclass
class Repository:
    """The generated remote and what the benchmark knows of it."""

    path: Path
    files: Tree  # production's
    branch_changes: dict[str, dict[str, bytes]]  # feature branch -> path -> content
    one_line_path: str
    stats: dict[str, Any] = field(default_factory=dict)


def generate_tree(shape: Shape, rng: random.Random) -> Tree:
    """Production's files: modules in Puppet's layout, hieradata, a few executables and
    symlinks; sizes log-normal, scaled to ``shape.tree_bytes``; contents random words."""
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
                  for _ in range(20_000)]
    paths = [*TOP_FILES, *(f"hieradata/nodes/node{n:04d}.yaml" for n in range(shape.node_files))]
    for module in range(shape.modules):
        for directory, count in MODULE_FILES:
            paths += [f"modules/m{module:03d}/{directory}/f{n:02d}.pp" for n in range(count)]
    weights = [rng.lognormvariate(0, 1.0) for _ in paths]
    scale = shape.tree_bytes / sum(weights)
    tree: Tree = {}
    for path, weight in zip(paths, weights, strict=True):
        words = rng.choices(vocabulary, k=max(int(weight * scale) // 7, 4))
        lines = [" ".join(words[start:start + 10]) for start in range(0, len(words), 10)]
        executable = path.endswith(".sh") or (path.endswith("files/f00.pp")
                                              and int(path[9:12]) % 10 == 0)
        tree[path] = ("100755" if executable else "100644",
                      f"# {path}\n{chr(10).join(lines)}\n".encode())
    for link, target in (("scripts/deploy", "deploy.sh"), ("README", "README.md"),
                         ("hieradata/nodes/default.yaml", "../common.yaml"),
                         ("modules/m000/files/templates", "../templates"),
                         ("modules/m000/templates/legacy.pp", "f00.pp"),
                         ("modules/m001/README.md", "../../README.md")):
        tree[link] = ("120000", target.encode())
    return tree


def change_line(content: bytes, line: int, text: str) -> bytes:
    lines = content.split(b"\n")
    lines[line] = text.encode()
    return b"\n".join(lines)


def feature_changes(tree: Tree, rng: random.Random) -> dict[str, dict[str, bytes]]:
    """Each feature branch's commit: one changed line in each of 1 to 3 files."""
    candidates = sorted(path for path, (mode, content) in tree.items()
                        if mode == "100644" and content.count(b"\n") > 4)
    return {f"feature_{number:02d}": {
        path: change_line(tree[path][1], 2, f"# feature_{number:02d} changes {path}")
        for path in rng.sample(candidates, rng.randint(1, 3))}
        for number in range(1, FEATURE_BRANCHES + 1)}


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _commit(ref: str, when: int, message: str, parent: str | None) -> bytes:
    """A commit command of a fast-import stream; the first one of a stream is mark 1."""
    header = f"commit {ref}\nmark :1\ncommitter Bench <bench@example.org> {when} +0000\n"
    return header.encode() + _data(message.encode()) + (f"from {parent}\n".encode()
                                                         if parent else b"")


def fast_import(remote: Path, stream: bytes) -> None:
    with tempfile.TemporaryFile() as handle:
        handle.write(stream)
        handle.seek(0)
        git(f"--git-dir={remote}", "fast-import", "--quiet", stdin=handle)


def build_repository(workdir: Path, shape: Shape) -> Repository:
    """Generate the tree and write the bare remote with git fast-import; prints its size."""
    started = time.perf_counter()
    rng = random.Random(SEED)  # noqa: S311 - reproducible test data, not secrets
    tree = generate_tree(shape, rng)
    changes = feature_changes(tree, rng)
    remote = workdir / "remote.git"
    git("init", "--quiet", "--bare", str(remote))
    git(f"--git-dir={remote}", "symbolic-ref", "HEAD", "refs/heads/production")
    stream = [_commit("refs/heads/production", BASE_TIME, "Initial import", None)]
    stream += [f"M {mode} inline {path}\n".encode() + _data(content)
               for path, (mode, content) in sorted(tree.items())]
    for number, (branch, changed) in enumerate(sorted(changes.items()), start=1):
        stream.append(b"\n" + _commit(f"refs/heads/{branch}", BASE_TIME + number,
                                      f"{branch}: a small change", ":1").replace(
                                          b"mark :1\n", b""))
        stream += [f"M 100644 inline {path}\n".encode() + _data(content)
                   for path, content in sorted(changed.items())]
    fast_import(remote, b"".join(stream) + b"\n")
    git(f"--git-dir={remote}", "repack", "-a", "-d", "-q")  # as a served repository is
    directories = {path.rsplit("/", depth)[0] for path in tree for depth in
                   range(1, path.count("/") + 1)}
    stats = {"files": len(tree), "directories": len(directories),
             "executables": sum(mode == "100755" for mode, _ in tree.values()),
             "symlinks": sum(mode == "120000" for mode, _ in tree.values()),
             "tree_mb": sum(len(content) for _, content in tree.values()) / MB,
             "bare_mb": sum(f.stat().st_size for f in remote.rglob("*") if f.is_file()) / MB,
             "branches": 1 + len(changes)}
    print(f"repository: {stats['files']:,} files ({stats['executables']} executable, "
          f"{stats['symlinks']} symlinks) in {stats['directories']:,} directories, "
          f"{stats['tree_mb']:.1f} MB in the tree, bare repository {stats['bare_mb']:.1f} MB, "
          f"{stats['branches']} branches; made in {time.perf_counter() - started:.1f} s")
    one_line_path = "modules/m001/manifests/f00.pp"
    return Repository(remote, tree, changes, one_line_path, stats)


def push_one_line_change(repository: Repository, number: int) -> bytes:
    """Commit a one-line change to production on the remote; the file's new content."""
    path = repository.one_line_path
    mode, content = repository.files[path]
    changed = change_line(content, 1, f"# one-line change {number}")
    repository.files[path] = (mode, changed)
    fast_import(repository.path, _commit("refs/heads/production", BASE_TIME + 1000 + number,
                                         f"One-line change {number}", "refs/heads/production^0")
                + f"M {mode} inline {path}\n".encode() + _data(changed) + b"\n")
    return changed


# --- the floor -----------------------------------------------------------------------------


def write_floor_spec(workdir: Path, repository: Repository) -> Path:
    """The floor's store (every distinct content once, written now, untimed) and its spec:
    each branch's directories, hard links and symlinks."""
    store = workdir / "floor-store"
    store.mkdir()
    objects: dict[bytes, str] = {}

    def stored(content: bytes) -> str:
        if content not in objects:
            objects[content] = f"{len(objects)}"
            (store / objects[content]).write_bytes(content)
        return objects[content]

    base = {path: ("link", content.decode()) if mode == "120000" else ("file", stored(content))
            for path, (mode, content) in repository.files.items()}
    spec = {"store": str(store), "base": base, "branches": {
        "production": {},
        **{branch: {path: ("file", stored(content)) for path, content in changed.items()}
           for branch, changed in repository.branch_changes.items()}}}
    path = workdir / "floor.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def run_floor(spec_path: str, destination: str) -> int:
    """``--floor SPEC DESTINATION``: make every branch's tree below DESTINATION with the
    calls alone, in a tight loop; print their wall and CPU seconds as JSON."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    plans = []
    for branch, changed in spec["branches"].items():  # untimed: what to call
        entries = {**spec["base"], **changed}
        directories = sorted({path.rsplit("/", depth)[0] for path in entries
                              for depth in range(1, path.count("/") + 1)},
                             key=lambda path: path.count("/"))
        plans.append((branch, directories, [(kind, value, path) for path, (kind, value)
                                            in entries.items()]))
    os.mkdir(destination)
    store = os.open(spec["store"], os.O_RDONLY | os.O_DIRECTORY)
    wall, cpu = time.perf_counter(), time.process_time()
    for branch, directories, entries in plans:
        os.mkdir(f"{destination}/{branch}")
        tree = os.open(f"{destination}/{branch}", os.O_RDONLY | os.O_DIRECTORY)
        for directory in directories:
            os.mkdir(directory, 0o755, dir_fd=tree)
        for kind, value, path in entries:
            if kind == "file":
                os.link(value, path, src_dir_fd=store, dst_dir_fd=tree)
            else:
                os.symlink(value, path, dir_fd=tree)
        os.close(tree)
    print(json.dumps({"seconds": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
    return 0


# --- the tools -----------------------------------------------------------------------------


@dataclass
class Workspace:
    """One tool's directories for one phase, and its deploy command (of every branch)."""

    tool: str
    root: Path
    environments: Path
    cache: Path
    command: list[str]

    def one(self) -> list[str]:
        """The command deploying production only."""
        return [*self.command, "production"]


class Bench:
    """The tools, their environment, the repository, and every sample taken."""

    def __init__(self, workdir: Path, repository: Repository, floor_spec: Path) -> None:
        self.workdir = workdir
        self.repository = repository
        self.floor_spec = floor_spec
        self.opslab = find_script("opslab")
        self.r10k = find_r10k()
        # No stray opslab configuration or git repository variables in the tools' way.
        self.environment = bytecode_environment(
            workdir / "pycache", drop=("OPSLAB_CONFIG", *GIT_REPOSITORY_VARIABLES))
        self.samples: dict[str, dict[str, list[Run]]] = {}
        # opslab's own account of each sample: its sync record's seconds by phase.
        self.phases: dict[str, dict[str, list[dict[str, float]]]] = {}
        self.extra: dict[str, Any] = {}
        self.deleted_at = 0.0

    def workspace(self, tool: str, phase: str) -> Workspace:
        """Fresh, empty directories for ``tool`` (``opslab``, ``opslab-spare`` or ``r10k``)."""
        root = self.workdir / f"{tool}-{phase}"
        environments, cache = root / "environments", root / "cache"
        environments.mkdir(parents=True)
        cache.mkdir()
        config = root / ("r10k.yaml" if tool == "r10k" else "opslab.yaml")
        url = self.repository.path.as_uri()
        if tool == "r10k":
            config.write_text(f":cachedir: {json.dumps(str(cache))}\nsources:\n  bench:\n"
                              f"    remote: {json.dumps(url)}\n"
                              f"    basedir: {json.dumps(str(environments))}\n")
            return Workspace(tool, root, environments, cache,
                             [self.r10k, "deploy", "environment", "-c", str(config)])
        branches = {"remote": url, "environments": str(environments), "cache": str(cache)}
        if tool == "opslab-spare":
            branches.update(keep_seconds=0, keep_previous=0)
        config.write_text(json.dumps({"branches": branches}))  # JSON is YAML
        return Workspace(tool, root, environments, cache,
                         [self.opslab, "--config", str(config), "branch", "sync", "--json"])

    def run(self, command: list[str], what: str) -> Run:
        """One deploy as a measured process, on a settled disk (see :meth:`settle`)."""
        self.settle()
        return succeeded(run_measured(command, DEPLOY_TIMEOUT, self.environment, self.workdir),
                         what)

    def record(self, measure: str, tool: str, result: Run,
               space: Workspace | None = None) -> None:
        """Keep a sample; for opslab (``space``), also its sync record's phases."""
        self.samples.setdefault(measure, {}).setdefault(tool, []).append(result)
        if space is not None and space.tool != "r10k":
            record = json.loads((space.environments / ".opslab/records/last-sync.json")
                                .read_text(encoding="utf-8"))
            self.phases.setdefault(measure, {}).setdefault(tool, []).append(record["seconds"])

    def settle(self) -> None:
        """What the previous command left dirty is written back now, untimed (opslab
        fsyncs nothing of its trees, r10k nothing at all); and no command runs within
        SETTLE_SECONDS of a large delete of the benchmark's own, whose freed inodes
        ext4 without a journal skips, one lookup each, when it allocates new ones."""
        os.sync()
        time.sleep(max(0.0, self.deleted_at + SETTLE_SECONDS - time.time()))

    def delete(self, *paths: Path) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
        os.sync()
        self.deleted_at = time.time()


def find_r10k() -> str:
    """r10k, installed from Debian's package if it is missing and we may; else the benchmark
    is skipped (BenchmarkError would make it fail, so this raises Skipped)."""
    path = shutil.which("r10k")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("r10k not found: installing Debian's r10k package")
        run_measured(["apt-get", "install", "-y", "-q", "--no-install-recommends", "r10k"],
                     900.0, {**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = shutil.which("r10k")
    if path is None:
        raise Skipped("r10k is not installed and could not be (Debian: apt-get install r10k, "
                      "as root); the comparison needs it")
    return path


class Skipped(Exception):
    """The benchmark cannot compare: a tool is missing."""


# --- checks --------------------------------------------------------------------------------

# path -> ("dir", None) | ("file", (executable, size)) | ("link", target)
Listing = dict[str, tuple[str, Any]]


def archive_listing(remote: Path, commit: str) -> Listing:
    """What ``git archive`` says ``commit`` holds."""
    listing: Listing = {}
    with tempfile.TemporaryFile() as archive:
        archive.write(git(f"--git-dir={remote}", "archive", "--format=tar", commit))
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            for member in tar:
                path = member.name.rstrip("/")
                if member.type == tarfile.XGLTYPE:  # the pax header with the commit id
                    continue
                if member.isdir():
                    listing[path] = ("dir", None)
                elif member.issym():
                    listing[path] = ("link", member.linkname)
                else:
                    listing[path] = ("file", (bool(member.mode & 0o111), member.size))
    return listing


def tree_listing(root: Path, ignore: tuple[str, ...] = ()) -> Listing:
    """The same listing of a deployed environment, following only its top-level link."""
    listing: Listing = {}
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = prefix + entry.name
                if path in ignore:
                    continue
                if entry.is_symlink():
                    listing[path] = ("link", os.readlink(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    listing[path] = ("dir", None)
                    pending.append((Path(entry.path), path + "/"))
                else:
                    info = entry.stat(follow_symlinks=False)
                    listing[path] = ("file", (bool(info.st_mode & 0o111), info.st_size))
    return listing


def check_tree(bench: Bench, space: Workspace, environment: str, commit: str) -> None:
    """The environment against ``git archive`` of ``commit``: wrong is fatal for opslab,
    a warning for r10k (whose trees hold its own files too)."""
    ignore = (".git", ".r10k-deploy.json") if space.tool == "r10k" else ()
    expected = archive_listing(bench.repository.path, commit)
    actual = tree_listing(space.environments / environment, ignore)
    problems = [f"missing {path}" for path in sorted(expected.keys() - actual.keys())][:3]
    problems += [f"unexpected {path}" for path in sorted(actual.keys() - expected.keys())][:3]
    problems += [f"{path}: expected {expected[path]}, found {actual[path]}"
                 for path in sorted(expected.keys() & actual.keys())
                 if expected[path] != actual[path]][:3]
    if not problems:
        return
    message = f"{space.tool} {environment} differs from git archive {commit}: {problems}"
    if space.tool == "r10k":
        print(f"  WARNING: {message}")
        return
    raise WrongResult(message)


def check_content(space: Workspace, environment: str, path: str, expected: bytes) -> None:
    try:
        actual = (space.environments / environment / path).read_bytes()
    except OSError as error:
        actual = f"<{error}>".encode()
    if actual != expected:
        message = f"{space.tool}: {environment}/{path} does not hold the expected content"
        if space.tool == "r10k":
            print(f"  WARNING: {message}")
            return
        raise WrongResult(message)


def opslab_records(result: Run, expected: dict[str, str]) -> dict[str, dict[str, Any]]:
    """opslab's records (``--json``), each environment's result as ``expected`` says."""
    records = {record["environment"]: record for record in map(json.loads,
                                                                result.stdout.splitlines())}
    got = {environment: record["result"] for environment, record in records.items()}
    if got != expected:
        raise WrongResult(f"opslab reported {got}, expected {expected}")
    return records


def head(bench: Bench, branch: str) -> str:
    return git(f"--git-dir={bench.repository.path}", "rev-parse", branch).decode().strip()


# --- the measures --------------------------------------------------------------------------


def measure_first(bench: Bench, rounds: int) -> dict[str, Workspace]:
    """(1) production from cold, fresh directories each round; the last round's
    workspaces go on to (2) and (3)."""
    print(f"\n(1) first deploy of production, from cold ({rounds} rounds)")
    spaces: dict[str, Workspace] = {}
    for number in range(rounds):
        for tool in rotated(["opslab", "r10k"], number):
            spaces[tool] = bench.workspace(tool, f"first-{number}")
            result = bench.run(spaces[tool].one(), f"{tool} first deploy")
            if tool == "opslab":
                opslab_records(result, {"production": "deployed"})
            bench.record("first", tool, result, spaces[tool])
    for space in spaces.values():
        check_tree(bench, space, "production", head(bench, "production"))
    show(bench, "first")
    return spaces


def measure_no_change(bench: Bench, spaces: dict[str, Workspace], rounds: int) -> None:
    """(2) production again, nothing changed."""
    print(f"\n(2) redeploy production, nothing changed ({rounds} rounds)")
    for number in range(rounds):
        for tool in rotated(["opslab", "r10k"], number):
            result = bench.run(spaces[tool].one(), f"{tool} no-change redeploy")
            if tool == "opslab":
                opslab_records(result, {"production": "unchanged"})
            bench.record("no_change", tool, result, spaces[tool])
    show(bench, "no_change")


def measure_one_line(bench: Bench, spaces: dict[str, Workspace], rounds: int) -> None:
    """(3) a one-line commit to production, then each tool redeploys it."""
    print(f"\n(3) redeploy production after a one-line commit ({rounds} rounds, after one "
          "untimed change)")
    spaces["opslab-spare"] = bench.workspace("opslab-spare", "one-line")
    bench.run(spaces["opslab-spare"].one(), "opslab (spare) first deploy")
    tools = ["opslab-spare", "opslab", "r10k"]
    for number in range(rounds + 1):
        content = push_one_line_change(bench.repository, number)
        commit = head(bench, "production")
        for tool in rotated(tools, number):
            result = bench.run(spaces[tool].one(), f"{tool} one-line redeploy")
            if tool != "r10k":
                record = opslab_records(result, {"production": "deployed"})["production"]
                # The spare tree is used from the second change on; defaults never use one.
                if (record["recycled_from"] is not None) != (tool == "opslab-spare"
                                                             and number > 0):
                    raise WrongResult(f"{tool}: recycled_from {record['recycled_from']} in "
                                      f"round {number}")
                check_tree(bench, spaces[tool], "production", commit)
            check_content(spaces[tool], "production", bench.repository.one_line_path, content)
            if number:  # the first change is the untimed one
                bench.record("one_line", tool, result, spaces[tool])
    print("  check: every opslab tree matches git archive of its commit after every round")
    show(bench, "one_line")


def measure_all(bench: Bench, rounds: int) -> None:
    """(4) every branch from cold: opslab, r10k and the floor; then disk and files."""
    branches = ["production", *sorted(bench.repository.branch_changes)]
    print(f"\n(4) all {len(branches)} branches from cold ({rounds} rounds)")
    for number in range(rounds):
        spaces = {tool: bench.workspace(tool, f"all-{number}") for tool in ("opslab", "r10k")}
        floor = bench.workdir / f"floor-{number}"
        for tool in rotated(["opslab", "floor", "r10k"], number):
            if tool == "floor":
                result = bench.run([sys.executable, __file__, "--floor", str(bench.floor_spec),
                                    str(floor)], "the floor")
                calls = json.loads(result.stdout)
                # The calls alone: not the interpreter's start nor the spec's reading.
                result = Run(calls["seconds"], calls["cpu"], 0, "", "")
                bench.record("all", tool, result)
            else:
                result = bench.run(spaces[tool].command, f"{tool} deploy of every branch")
                bench.record("all", tool, result, spaces[tool])
            print(f"  round {number + 1}: {tool:6} {result.seconds:7.1f} s (CPU "
                  f"{result.cpu:.1f} s)", flush=True)
        check_all(bench, spaces, branches)
        if number == rounds - 1:
            for tool, space in spaces.items():
                bench.extra[tool] = {"disk_mb": disk_kib(space.environments, space.cache) / 1024,
                                     **count_files(space.environments, space.cache)}
        bench.delete(floor, *(space.root for space in spaces.values()))
    show(bench, "all")


def check_all(bench: Bench, spaces: dict[str, Workspace], branches: list[str]) -> None:
    """opslab: every environment, each with its branch's change, two in full."""
    opslab = spaces["opslab"]
    environments = [environment_for_branch(branch) for branch in branches]
    opslab_records(bench.samples["all"]["opslab"][-1], dict.fromkeys(environments, "deployed"))
    for branch, changed in bench.repository.branch_changes.items():
        for path, content in changed.items():
            check_content(opslab, branch, path, content)
    for branch in ("production", "feature_01"):
        check_tree(bench, opslab, branch, head(bench, branch))
    present = [path.name for path in spaces["r10k"].environments.iterdir()]
    if len(present) != len(branches):
        print(f"  WARNING: r10k deployed {len(present)} environments, not {len(branches)}")


def disk_kib(*paths: Path) -> int:
    """``du -skc`` over ``paths``: KiB on disk, each hard-linked inode once."""
    result = succeeded(run_measured(["du", "-skc", *map(str, paths)], 600.0), "du")
    return int(result.stdout.strip().splitlines()[-1].split()[0])


def count_files(*roots: Path) -> dict[str, int]:
    """Entries below ``roots`` (symlinks not followed), and the distinct file inodes."""
    counts = {"files": 0, "symlinks": 0, "directories": 0}
    inodes: set[int] = set()
    pending = list(roots)
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    counts["symlinks"] += 1
                elif entry.is_dir(follow_symlinks=False):
                    counts["directories"] += 1
                    pending.append(Path(entry.path))
                else:
                    counts["files"] += 1
                    inodes.add(entry.inode())
    return {**counts, "file_inodes": len(inodes)}


# --- the report ----------------------------------------------------------------------------


def medians(bench: Bench, measure: str, tool: str) -> tuple[float, float]:
    """Median wall and CPU seconds of ``tool``'s samples of ``measure``."""
    runs = bench.samples[measure][tool]
    return (statistics.median(run.seconds for run in runs),
            statistics.median(run.cpu for run in runs))


def ratio(bench: Bench, measure: str, tool: str, other: str = "r10k") -> tuple[float, float]:
    """``other`` / ``tool``: of the medians, and the median of the rounds' own ratios."""
    mine, theirs = bench.samples[measure][tool], bench.samples[measure][other]
    return (medians(bench, measure, other)[0] / medians(bench, measure, tool)[0],
            statistics.median(b.seconds / a.seconds for a, b in zip(mine, theirs, strict=True)))


def phase_medians(bench: Bench, measure: str, tool: str) -> dict[str, float]:
    """Median seconds of each phase opslab's sync records give for ``measure``."""
    records = bench.phases.get(measure, {}).get(tool, [])
    return {phase: statistics.median(record[phase] for record in records)
            for phase in (records[0] if records else {})}


def show(bench: Bench, measure: str) -> None:
    """Each tool's median and every round, wall and CPU; opslab's phases."""
    for tool, runs in bench.samples[measure].items():
        wall, cpu = medians(bench, measure, tool)
        print(f"  {tool:13} median {wall:8.3f} s (CPU {cpu:7.3f} s)   rounds "
              + " ".join(f"{run.seconds:.3f}" for run in runs))
        phases = phase_medians(bench, measure, tool)
        if any(phases.values()):
            print(f"  {'':13} its phases (medians): "
                  + ", ".join(f"{phase} {value:.3f} s" for phase, value in phases.items()))


def report(bench: Bench) -> dict[str, Any]:
    rows = [("first", "opslab", "first deploy of production, cold"),
            ("no_change", "opslab", "redeploy, nothing changed"),
            ("one_line", "opslab-spare", "one-line change, the spare tree brought up to date"),
            ("one_line", "opslab", "one-line change, a new tree (defaults)"),
            ("all", "opslab", "all 41 branches from cold")]
    print(f"\n{'measure':52} {'opslab':>9} {'r10k':>9} {'r10k/opslab':>11} {'per round':>9}")
    table = []
    for measure, tool, label in rows:
        mine, theirs = medians(bench, measure, tool)[0], medians(bench, measure, "r10k")[0]
        of_medians, per_round = ratio(bench, measure, tool)
        print(f"{label:52} {mine:8.3f}s {theirs:8.3f}s {of_medians:10.2f}x {per_round:8.2f}x")
        table.append({"measure": label, "tool": tool, "opslab_s": mine, "r10k_s": theirs,
                      "ratio": of_medians, "ratio_per_round": per_round})
    floor, floor_cpu = medians(bench, "all", "floor")
    (opslab, opslab_cpu), r10k = medians(bench, "all", "opslab"), medians(bench, "all", "r10k")[0]
    print(f"floor of all 41 trees (the mkdir, link and symlink calls alone): {floor:.1f} s "
          f"(CPU {floor_cpu:.1f} s); opslab {opslab / floor:.2f}x the "
          f"floor (+{opslab - floor:.1f} s; CPU {opslab_cpu:.1f} s, +{opslab_cpu - floor_cpu:.1f}"
          f" s), r10k {r10k / floor:.2f}x; r10k / floor is the most any tree per environment "
          "could reach")
    phases = phase_medians(bench, "all", "opslab")
    print("opslab's all-branches deploy by phase (medians of its sync records): "
          + ", ".join(f"{phase} {value:.1f} s" for phase, value in phases.items()))
    for tool, extra in bench.extra.items():
        print(f"all 41 branches, {tool:6}: {extra['disk_mb']:,.0f} MB on disk (environments + "
              f"cache), {extra['files']:,} files in {extra['file_inodes']:,} inodes, "
              f"{extra['symlinks']:,} symlinks, {extra['directories']:,} directories")
    first, spare, every = (ratio(bench, measure, tool)[0] for measure, tool in (
        ("first", "opslab"), ("one_line", "opslab-spare"), ("all", "opslab")))
    no_change = medians(bench, "no_change", "opslab")[0]
    targets = print_targets({
        f"first deploy: r10k/opslab at least {TARGETS['first']:g}x": (
            first >= TARGETS["first"], f"{first:.2f}x"),
        f"nothing changed: opslab under {TARGET_NO_CHANGE_S:g} s": (
            no_change < TARGET_NO_CHANGE_S, f"{no_change:.3f} s"),
        f"one-line change, spare tree: r10k/opslab at least {TARGETS['one_line_spare']:g}x": (
            spare >= TARGETS["one_line_spare"], f"{spare:.2f}x"),
        f"all 41 branches from cold: r10k/opslab at least {TARGETS['all']:g}x": (
            every >= TARGETS["all"], f"{every:.2f}x (r10k/floor {r10k / floor:.2f}x)"),
    })
    return {"table": table, "targets": targets, "floor_s": floor, "floor_cpu_s": floor_cpu,
            "all_branches": bench.extra,
            "phases": {measure: {tool: records for tool, records in tools.items()}
                       for measure, tools in bench.phases.items()},
            "samples": {measure: {tool: [[run.seconds, run.cpu] for run in runs]
                                  for tool, runs in tools.items()}
                        for measure, tools in bench.samples.items()}}


# --- main ----------------------------------------------------------------------------------


def benchmark(arguments: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    shape = QUICK if arguments.quick else FULL
    print_environment()
    repository = build_repository(workdir, shape)
    bench = Bench(workdir, repository, write_floor_spec(workdir, repository))
    for command in ([bench.opslab, "--help"], [bench.opslab, "branch", "sync", "--help"],
                    [bench.r10k, "version"]):  # untimed: bytecode and page cache
        print(succeeded(run_measured(command, 120.0, bench.environment), command[-1])
              .stdout.strip().splitlines()[0])
    spaces = measure_first(bench, shape.rounds["first"])
    measure_no_change(bench, spaces, shape.rounds["no_change"])
    measure_one_line(bench, spaces, shape.rounds["one_line"])
    bench.delete(*(space.root for space in spaces.values()),
                 *workdir.glob("*-first-*"))
    measure_all(bench, shape.rounds["all"])
    return {"quick": arguments.quick, "repository": repository.stats, **report(bench)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="a repository a tenth of the size and fewer rounds, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (printed at the end)")
    parser.add_argument("--floor", nargs=2, metavar=("SPEC", "DESTINATION"),
                        help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.floor:
        return run_floor(*arguments.floor)
    workdir = Path(tempfile.mkdtemp(prefix="opslab-branch-bench-"))
    try:
        write_results(arguments.json, benchmark(arguments, workdir))
        return 0
    except Skipped as skipped:
        print(f"SKIPPED: {skipped}")
        return 0
    except WrongResult as error:
        print(f"\nopslab's result is WRONG: {error}", file=sys.stderr)
        return 1
    except BenchmarkError as error:
        print(f"\nthe benchmark could not run: {error}", file=sys.stderr)
        return 1
    finally:
        if arguments.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
