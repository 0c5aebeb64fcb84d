"""git as a subprocess: every call with a timeout, no prompts, no secrets in messages.

The bare mirror is the only git repository opslab keeps: environments are
built from its objects and never contain a ``.git`` of their own unless
``branches.git_metadata`` asks for one.
"""

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

from opslab import process
from opslab.names import has_control_characters, validate_branch

if TYPE_CHECKING:
    from pathlib import Path

# Never ask for credentials on a terminal; a timer or CI would hang forever.
_GIT_ENVIRONMENT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
# Compiled at its first use (re's cache), only when a message is being made.
_USERINFO = r"(?<=://)[^/@\s]+@"


class GitError(Exception):
    """A git command failed or timed out."""


def redact(text: str) -> str:
    """``text`` with any user:password@ of a URL taken out."""
    return re.sub(_USERINFO, "***@", text)


def _environment() -> dict[str, str]:
    return {**os.environ, **_GIT_ENVIRONMENT}


def checked_remote(remote: str) -> str:
    """``remote`` if git can be given it as a URL or path, else GitError.

    It reaches git as an argument, so a leading '-' would read as an option.
    """
    if not remote or remote.startswith("-") or has_control_characters(remote):
        raise GitError(f"remote {redact(remote)!r} is not a usable git URL or path")
    return remote


def _git(arguments: list[str], timeout: float, git_dir: str | None = None,
         work_tree: str | None = None) -> bytes:
    """Run ``git ARGUMENTS`` (in ``git_dir``); its output, or GitError with a redacted message.

    git runs in a process group of its own, so a timeout also stops the
    helpers it started (``git-remote-http`` of a fetch from a hanging server).
    """
    name = arguments[0]
    command = ["git", *([f"--git-dir={git_dir}"] if git_dir else []),
               *([f"--work-tree={work_tree}"] if work_tree else []), *arguments]
    try:
        result = process.run(command, timeout, env=_environment())
    except process.TimedOut:
        raise GitError(f"git {name} timed out after {timeout:g} s") from None
    except OSError as error:
        raise GitError(f"git {name} could not run: {error}") from None
    return _output(name, result.returncode, result.stdout, result.stderr)


def _output(name: str, returncode: int, stdout: bytes, stderr: bytes) -> bytes:
    """A finished ``git NAME``'s output, or GitError with its redacted message."""
    if returncode != 0:
        message = redact(stderr.decode(errors="replace").strip()[-1500:])
        raise GitError(f"git {name} failed: {message}")
    return stdout


class _Started:
    """``git ARGUMENTS`` started as :func:`_git` runs it, to be finished (:meth:`output`)
    while something else runs: side by side without a thread."""

    def __init__(self, arguments: list[str], timeout: float) -> None:
        self.name = arguments[0]
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        try:
            self.process = subprocess.Popen(["git", *arguments], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=_environment(),
                                            start_new_session=True)
        except OSError as error:
            raise GitError(f"git {self.name} could not run: {error}") from None

    def output(self) -> bytes:
        """Its output once it has finished, or GitError (and its group stopped at the
        deadline)."""
        try:
            stdout, stderr = self.process.communicate(
                timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise GitError(f"git {self.name} timed out after {self.timeout:g} s") from None
        except BaseException:  # interrupted: leave nothing running
            self.stop()
            raise
        return _output(self.name, self.process.returncode, stdout, stderr)

    def stop(self) -> None:
        """Stop it, unfinished, and reap it."""
        process.stop(self.process)


def remote_heads(remote: str, timeout: float) -> dict[str, str]:
    """Every branch of ``remote`` and its commit (``git ls-remote --heads``), fetching nothing."""
    return _heads(_git(["ls-remote", "--heads", checked_remote(remote)], timeout), "\t")


def _heads(output: bytes, separator: str) -> dict[str, str]:
    """Branch name -> commit, from lines of a commit, ``separator`` and ``refs/heads/NAME``."""
    listing = {}
    for line in output.decode("utf-8", errors="surrogateescape").splitlines():
        commit, _, ref = line.partition(separator)
        listing[ref.removeprefix("refs/heads/")] = commit
    return listing


class TreeEntry:
    """One file of a commit, as ``git ls-tree -r`` lists it (size -1: not listed)."""

    __slots__ = ("mode", "path", "sha", "size")

    def __init__(self, mode: str, sha: str, size: int, path: str) -> None:
        self.mode = mode
        self.sha = sha
        self.size = size
        self.path = path

    @property
    def executable(self) -> bool:
        return self.mode == "100755"

    @property
    def symlink(self) -> bool:
        return self.mode == "120000"

    @property
    def submodule(self) -> bool:
        return self.mode == "160000"


class Change(NamedTuple):
    """One path that differs between two commits: what it was, what it is (None: absent)."""

    path: str
    old: TreeEntry | None
    new: TreeEntry | None


class Mirror:
    """A bare mirror of the remote's branches: ``refs/heads/*`` as they are there.

    Paths are plain strings: pathlib's import alone is a tenth of the time
    a sync that finds nothing changed may take.
    """

    def __init__(self, path: "str | os.PathLike[str]", remote: str, timeout: float) -> None:
        self.directory = os.fspath(path)
        self.remote = checked_remote(remote)
        self.timeout = timeout

    @property
    def path(self) -> "Path":
        """The mirror's directory, as a Path for callers that want one."""
        from pathlib import Path

        return Path(self.directory)

    def _git(self, *arguments: str) -> bytes:
        return _git(list(arguments), self.timeout, self.directory)

    def prepare(self) -> None:
        """Create the mirror if needed, point it at the remote, clear stale git locks.

        Only called under the sync lock: a ``*.lock`` file in the mirror can
        then only be left over from a git killed mid-fetch, and would make
        every later fetch fail.
        """
        if not os.path.exists(f"{self.directory}/HEAD"):
            import shutil  # only the first sync makes a mirror: the others skip these imports
            import tempfile

            parent = os.path.dirname(self.directory)
            try:
                os.makedirs(parent, exist_ok=True)
                staging = tempfile.mkdtemp(prefix=".mirror-", dir=parent)
            except OSError as error:
                raise GitError(f"cannot create the mirror {self.directory}: {error}") from None
            try:
                _git(["init", "--quiet", "--bare", staging], self.timeout)
                shutil.rmtree(self.directory, ignore_errors=True)  # a half-made one from a crash
                os.rename(staging, self.directory)
            except (GitError, OSError) as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise GitError(f"cannot create the mirror {self.directory}: {error}") from None
        top = next(os.walk(self.directory))
        for folder, _, names in [top, *os.walk(f"{self.directory}/refs")]:
            for name in names:
                if name.endswith(".lock"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{folder}/{name}")
        # Remember the URL we configured, to spare a git call on every sync.
        configured = f"{self.directory}/opslab-remote-url"
        try:
            with open(configured, encoding="utf-8") as stream:
                current = stream.read()
        except FileNotFoundError:
            current = None
        if current != self.remote:
            self._git("config", "remote.origin.url", self.remote)
            with open(configured, "w", encoding="utf-8") as stream:
                stream.write(self.remote)

    def fetch(self, branches: Iterable[str] | None = None) -> None:
        """Fetch all branches (pruning deleted ones), or only the named ones."""
        if branches is None:
            refspecs = ["--prune", "+refs/heads/*:refs/heads/*"]
        else:
            refspecs = [f"+refs/heads/{validate_branch(b)}:refs/heads/{b}" for b in branches]
        self._git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", *refspecs)

    def branches(self) -> dict[str, str]:
        """Every branch in the mirror and its commit."""
        return _heads(self._git("for-each-ref", "--format=%(objectname) %(refname)",
                                "refs/heads/"), " ")

    def remote_branches(self) -> dict[str, str]:
        """Every branch of the remote and its commit, without fetching anything."""
        return remote_heads(self.remote, self.timeout)

    def both_branches(self) -> tuple[dict[str, str], dict[str, str]]:
        """:meth:`branches` and :meth:`remote_branches`, the two git calls side by side:
        each is mostly a process start, and together they are most of what a sync that
        finds nothing changed does."""
        remote = _Started(["ls-remote", "--heads", self.remote], self.timeout)
        try:
            mirrored = self.branches()
        except BaseException:
            remote.stop()
            raise
        return mirrored, _heads(remote.output(), "\t")

    def tree(self, commit: str) -> list[TreeEntry]:
        """Every file, symlink and submodule of ``commit`` with its size, in git's order."""
        output = self._git("ls-tree", "-r", "-z", "-l", "--full-tree", commit)
        entries = []
        for record in output.decode("utf-8", errors="surrogateescape").split("\0"):
            if not record:
                continue
            meta, _, path = record.partition("\t")
            mode, _, sha, size = meta.split(maxsplit=3)
            entries.append(TreeEntry(mode, sha, int(size) if size != "-" else 0, path))
        return entries

    def changes(self, old: str, new: str) -> list[Change]:
        """What differs between commits ``old`` and ``new``, file by file, in git's order.

        A file that became a directory is its own deletion and the additions
        below it; sizes are not listed (-1).
        """
        output = self._git("diff-tree", "-r", "-z", "--no-renames", old, new)
        fields = output.decode("utf-8", errors="surrogateescape").split("\0")
        changes = []
        for meta, path in zip(fields[0:-1:2], fields[1::2], strict=True):
            old_mode, new_mode, old_sha, new_sha, _ = meta.lstrip(":").split(" ")
            changes.append(Change(
                path,
                TreeEntry(old_mode, old_sha, -1, path) if old_mode != "000000" else None,
                TreeEntry(new_mode, new_sha, -1, path) if new_mode != "000000" else None))
        return changes

    def blobs(self, shas: list[str]) -> Iterator[tuple[str, bytes]]:
        """The content of each blob, streamed from one ``git cat-file --batch``.

        A watchdog kills git's process group at the timeout, so a wedged git
        cannot hang a sync.
        """
        try:
            cat_file = subprocess.Popen(
                ["git", f"--git-dir={self.directory}", "cat-file", "--batch"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=_environment(), start_new_session=True,
            )
        except OSError as error:
            raise GitError(f"git cat-file could not run: {error}") from None
        if cat_file.stdin is None or cat_file.stdout is None:
            raise GitError("git cat-file started without pipes")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            process.kill_group(cat_file)

        watchdog = threading.Timer(self.timeout, kill)
        watchdog.start()

        def feed(stdin: IO[bytes]) -> None:
            with contextlib.suppress(BrokenPipeError), stdin:
                stdin.write("".join(f"{sha}\n" for sha in shas).encode())

        feeder = threading.Thread(target=feed, args=(cat_file.stdin,), daemon=True)
        feeder.start()
        try:
            for sha in shas:
                header = cat_file.stdout.readline().split()
                if timed_out.is_set():
                    raise GitError(f"git cat-file timed out after {self.timeout:g} s")
                if len(header) != 3 or header[1] != b"blob":
                    found = b" ".join(header).decode(errors="replace") or "git exited"
                    raise GitError(f"git cat-file: no blob {sha} in the mirror ({found})")
                size = int(header[2])
                content = cat_file.stdout.read(size)
                cat_file.stdout.read(1)  # the newline after each object
                if len(content) != size:
                    raise GitError(f"git cat-file stopped in the middle of blob {sha}"
                                   + (f" (timed out after {self.timeout:g} s)"
                                      if timed_out.is_set() else ""))
                yield sha, content
        finally:
            watchdog.cancel()
            process.kill_group(cat_file)
            cat_file.wait()
            feeder.join(timeout=5)
            cat_file.stdout.close()

    def add_worktree_metadata(self, tree: "str | os.PathLike[str]", commit: str) -> None:
        """Give a built tree a ``.git`` that shares the mirror's objects (git_metadata)."""
        tree = os.fspath(tree)
        git_dir = f"{tree}/.git"
        _git(["init", "--quiet", tree], self.timeout)
        with open(f"{git_dir}/objects/info/alternates", "w", encoding="utf-8") as stream:
            stream.write(f"{os.path.realpath(self.directory)}/objects\n")
        with open(f"{git_dir}/HEAD", "w", encoding="utf-8") as stream:
            stream.write(f"{commit}\n")
        for arguments in (["read-tree", commit], ["update-index", "-q", "--refresh"]):
            _git(arguments, self.timeout, git_dir, work_tree=tree)
