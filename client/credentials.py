"""Where the API is and who is asking: ``url``, ``user`` and ``password``.

Each from the environment first, else from the credentials file:

- ``OPSLAB_API_URL``, ``OPSLAB_USER``, ``OPSLAB_PASSWORD_FILE`` (a file holding
  the password alone, as :func:`opslab.files.read_secret` reads it);
- the credentials file ``OPSLAB_CREDENTIALS``, else
  ``$XDG_CONFIG_HOME/opslab/credentials``, else ``~/.config/opslab/credentials``:
  YAML (a mapping) or INI (a section ``[opslab]``) with ``url``, ``user`` and
  ``password``.

A file that holds a password must be a regular file owned by the user who
runs the command and readable by nobody else (no permission for group or
others: 0600 or 0400), or it is refused before it is read. There is no
password option: a command line is visible to every user of the machine
(``ps``) and stays in shell histories. No message ever quotes the password,
nor a line of the file (a parse error names the line by its number only).
"""

import configparser
import os
import stat
from typing import NamedTuple
from urllib.parse import urlsplit

import yaml

from opslab.config import is_loopback
from opslab.files import read_secret
from opslab.names import InvalidName, validate_user_name

FIELDS = ("url", "user", "password")


class CredentialsError(Exception):
    """No usable credentials: the message says what to fix (never the password)."""


class Credentials(NamedTuple):
    url: str
    user: str
    password: str
    source: str  # where the password came from, for messages

    def __repr__(self) -> str:  # never the password, not even in a traceback
        return f"Credentials(url={self.url!r}, user={self.user!r}, source={self.source!r})"


def default_file(environ: dict[str, str]) -> str:
    """The credentials file: ``OPSLAB_CREDENTIALS``, else the XDG configuration's."""
    if environ.get("OPSLAB_CREDENTIALS"):
        return environ["OPSLAB_CREDENTIALS"]
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "opslab", "credentials")


def load(environ: dict[str, str]) -> Credentials:
    """The credentials ``environ`` and the credentials file give; CredentialsError if
    something is missing or a file is refused."""
    url = environ.get("OPSLAB_API_URL") or None
    user = environ.get("OPSLAB_USER") or None
    password = None
    source = ""
    if environ.get("OPSLAB_PASSWORD_FILE"):
        source = environ["OPSLAB_PASSWORD_FILE"]
        check_private(source, "OPSLAB_PASSWORD_FILE")
        try:
            password = read_secret(source)
        except (OSError, UnicodeDecodeError) as error:
            raise CredentialsError(f"cannot read OPSLAB_PASSWORD_FILE {source}: "
                                   f"{getattr(error, 'strerror', None) or 'not text'}") from None
    if url is None or user is None or password is None:
        path = default_file(environ)
        if not os.path.lexists(path):
            missing = [name for name, value in (("OPSLAB_API_URL", url), ("OPSLAB_USER", user),
                                                ("OPSLAB_PASSWORD_FILE", password))
                       if value is None]
            raise CredentialsError(
                f"no credentials: set {', '.join(missing)}, or write url, user and password "
                f"to {path} (mode 0600)")
        found = read_file(path)
        url = url or found.get("url")
        user = user or found.get("user")
        if password is None:
            password, source = found.get("password"), path
        for name, value in (("url", url), ("user", user), ("password", password)):
            if not value:
                raise CredentialsError(f"{path} has no {name} (nor does the environment)")
    if url is None or user is None or password is None:  # said above, for mypy
        raise CredentialsError("no credentials")
    try:
        validate_user_name(user)
    except InvalidName as error:
        raise CredentialsError(str(error)) from None
    if not password:
        raise CredentialsError(f"the password in {source} is empty")
    return Credentials(check_url(url), user, password, source)


def check_private(path: str, what: str) -> os.stat_result:
    """The status of ``path`` if it is a regular file of this user that nobody else may
    read or write; CredentialsError otherwise."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise CredentialsError(f"cannot read {what} {path}: {error.strerror}") from None
    _check_status(status, path, what)
    return status


def _check_status(status: os.stat_result, path: str, what: str) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise CredentialsError(f"{what} {path} is not a regular file")
    if status.st_uid != os.getuid():
        raise CredentialsError(f"{what} {path} is not yours (owner uid {status.st_uid}): "
                               "a file that holds your password must be owned by you")
    if status.st_mode & 0o077:
        raise CredentialsError(
            f"{what} {path} has mode {stat.S_IMODE(status.st_mode):04o}: others may read or "
            f"change it, so it is not used (and the password in it should be changed if "
            f"anyone did). Run: chmod 600 {path}")


def read_file(path: str) -> dict[str, str]:
    """The credentials file's fields (YAML or INI), checked as :func:`check_private` says,
    on the file opened (so that it cannot be swapped between the check and the read)."""
    what = "the credentials file"
    try:
        with open(path, encoding="utf-8") as stream:
            _check_status(os.fstat(stream.fileno()), path, what)
            text = stream.read(65536)
    except OSError as error:
        raise CredentialsError(f"cannot read {what} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"{what} {path} is not UTF-8 text") from None
    first = next((line.strip() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith(("#", ";"))), "")
    found = _ini(text, path) if first.startswith("[") else _yaml(text, path)
    unknown = sorted(set(found) - set(FIELDS))
    if unknown:
        raise CredentialsError(f"{what} {path}: unknown keys {', '.join(unknown)} "
                               f"(it holds {', '.join(FIELDS)})")
    for name, value in found.items():
        if not isinstance(value, str):
            raise CredentialsError(f"{what} {path}: {name} must be text (quote it in YAML)")
    return found


def _yaml(text: str, path: str) -> dict[str, str]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        # The problem's own text quotes the file: never shown, it may be the password.
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CredentialsError(f"the credentials file {path} is not valid YAML{where}") \
            from None
    if not isinstance(document, dict):
        raise CredentialsError(f"the credentials file {path} is not a YAML mapping of url, "
                               "user and password, nor INI with a section [opslab]")
    return {str(key): value for key, value in document.items()}


def _ini(text: str, path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as error:
        errors = getattr(error, "errors", None)  # ParsingError: (line number, line) each
        line = errors[0][0] if errors else getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        raise CredentialsError(f"the credentials file {path} is not valid INI{where}") \
            from None
    if not parser.has_section("opslab"):
        raise CredentialsError(f"the credentials file {path} has no section [opslab]")
    return dict(parser.items("opslab"))


def check_url(url: str) -> str:
    """``url`` if it is the API's http:// or https:// URL; cleartext only to this machine,
    since the password goes with every request."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and \
            (parts.port or 0) >= 0 and not any(char.isspace() for char in url)
    except ValueError:
        usable = False
    if not usable:
        raise CredentialsError(f"the API's URL {url[:200]!r} is not an http:// or https:// "
                               "URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CredentialsError("the API's URL must not carry a user or password: give them "
                               "as user and password")
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise CredentialsError(f"the API's URL {url[:200]!r} is cleartext to {parts.hostname}: "
                               "your password would travel readable. Use https://")
    return url
