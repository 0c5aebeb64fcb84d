"""Writing files so that a crash leaves the old version or the new one, never half."""

import contextlib
import os
import tempfile


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``: temp file beside it, fsync, rename."""
    directory = os.path.dirname(path) or "."
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_secret(path: str) -> str:
    """The secret (a password, a token) held in the file ``path``.

    The one rule for every secret file: its text, without the line break
    an editor or ``echo`` leaves at its end; nothing else is taken off.
    Raises OSError (and UnicodeDecodeError for a file that is not text).
    """
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    return text.removesuffix("\n").removesuffix("\r")
