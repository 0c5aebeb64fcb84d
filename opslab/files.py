"""Writing files so that a crash leaves the old version or the new one, never half."""

import contextlib
import os

# Tries at a free temporary name: with 64 random bits, a second is already
# a sign that something else is wrong.
_NAME_TRIES = 3


def write_atomic(path: str, content: str | bytes, mode: int = 0o600, *,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``content`` (text as UTF-8): a temporary file beside it, then
    rename(2), so that a reader or a killed writer sees the old file or the new one.

    ``durable`` fsyncs the file before the rename, so that a power cut cannot
    leave the new name with its data missing. Callers that write thousands of
    files turn it off and check what they find instead (the branch runner's
    object store compares each object's size with git's).
    """
    data = content.encode() if isinstance(content, str) else content
    descriptor, temporary = _create_beside(path)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _create_beside(path: str) -> tuple[int, str]:
    """A new file for writing, mode 0600, in the directory of ``path``: its descriptor and
    name (``.NAME.`` and random hex, as tempfile.mkstemp would make it, without the
    import time of tempfile, shutil and random on every command's start-up path)."""
    directory, name = os.path.split(path)
    for _ in range(_NAME_TRIES):
        temporary = os.path.join(directory, f".{name}.{os.urandom(8).hex()}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(temporary, flags, 0o600), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def read_secret(path: str) -> str:
    """The secret (a password, a token) held in the file ``path``.

    The one rule for every secret file: its text, without the line break
    an editor or ``echo`` leaves at its end; nothing else is taken off.
    Raises OSError (and UnicodeDecodeError for a file that is not text).
    """
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    return text.removesuffix("\n").removesuffix("\r")
