"""A real git remote on disk, and a work tree to commit and push to it."""

import os
import subprocess
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "opslab tests", "GIT_AUTHOR_EMAIL": "tests@example.org",
    "GIT_COMMITTER_NAME": "opslab tests", "GIT_COMMITTER_EMAIL": "tests@example.org",
}


class Remote:
    """A bare repository (``url``) and a clone of it to make commits in."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.bare = root / "remote.git"
        self.work = root / "work"
        self.git("init", "--quiet", "--bare", str(self.bare), cwd=root)
        self.git("init", "--quiet", "-b", "production", str(self.work), cwd=root)
        self.git("remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return str(self.bare)

    def git(self, *arguments: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            ["git", *arguments], cwd=cwd or self.work, capture_output=True, text=True,
            timeout=120, env={**os.environ, **GIT_IDENTITY}, check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"git {' '.join(arguments)}: {result.stderr}")
        return result.stdout.strip()

    def commit(self, branch: str, files: dict[str, str | None], message: str = "change",
               base: str | None = None) -> str:
        """Commit ``files`` (path -> content, None deletes) on ``branch`` and push it.

        A new branch starts from ``base`` (default: the current HEAD).
        """
        existing = self.git("branch", "--list", branch)
        if existing:
            self.git("checkout", "--quiet", branch)
        else:
            self.git("checkout", "--quiet", "-b", branch, *([base] if base else []))
        for path, content in files.items():
            target = self.work / path
            if content is None:
                self.git("rm", "--quiet", "-r", path)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        self.git("push", "--quiet", "--force", "origin", f"{branch}:{branch}")
        return self.head(branch)

    def head(self, branch: str) -> str:
        return self.git("rev-parse", branch)

    def delete(self, branch: str) -> None:
        self.git("push", "--quiet", "origin", f":{branch}")

    def set_ref(self, branch: str, commit: str) -> None:
        """Point a branch of the remote at ``commit`` directly (any name git allows)."""
        self.git("update-ref", f"refs/heads/{branch}", commit, cwd=self.bare)
