"""Local accounts for tests that need sshd or sudo to resolve a name (``useradd``, as root).

A person's local account must have the person's ``uidNumber`` (opslab.accounts),
so tests create theirs with a uid they choose, and remove them afterwards.
"""

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator

import pytest

# Within accounts.min_uid .. accounts.max_uid (1000 .. 60000 by default), well
# above the uids Debian's adduser hands out first.
FIRST_TEST_UID = 42000


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may create local accounts (useradd)")


def free_uids(count: int, start: int = FIRST_TEST_UID) -> list[int]:
    """``count`` uids from ``start`` up that no local account has."""
    free: list[int] = []
    uid = start
    while len(free) < count:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            free.append(uid)
        uid += 1
    return free


@contextlib.contextmanager
def local_account(name: str, uid: int, login_shell: str = "/usr/sbin/nologin") -> Iterator[None]:
    """The local account ``name`` with ``uid`` while the block runs (removed after it)."""
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/", "--shell", login_shell,
                    "--uid", str(uid), "--comment", "opslab test", name],
                   check=True, capture_output=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)
