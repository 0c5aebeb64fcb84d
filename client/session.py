"""One command's talk with the API: the credentials, the client, the answer as JSON,
and the exit status every refusal and failure gets.

    0  EXIT_DONE         done
    1  EXIT_REFUSED      the API refused (a 4xx): ``opslab: HTTP 403: <the API's reason>``
    2  EXIT_USAGE        bad usage (argparse's own status), or no usable credentials
    3  EXIT_UNAVAILABLE  the API did not answer in full within the timeout, answered a 5xx
                         or a 429, redirected, or answered something that is not its JSON
                         (not JSON, or JSON of another shape)
"""

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from opslab import __version__
from opslab.apiclient import ApiRedirected, ApiRefused, ApiUnavailable, Client, document

from .credentials import Credentials, CredentialsError
from .credentials import load as load_credentials
from .output import shown

EXIT_DONE = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"opslab-client/{__version__}"


class UsageError(Exception):
    """A command line the client cannot carry out (found after argparse): exit 2."""


class NotJson(ApiUnavailable):
    """The answer is not the API's JSON (the URL names something else)."""


class PersonClient(Client):
    """:class:`Client` as a person (HTTP Basic), with the password held in memory: it was
    read once, from the environment's password file or the credentials file, both
    checked to be readable by their owner alone (:mod:`.credentials`)."""

    def __init__(self, credentials: Credentials, timeout: float) -> None:
        super().__init__(credentials.url, credentials.source, timeout, USER_AGENT,
                         who="opslab", user=credentials.user)
        self._password = credentials.password

    def _token(self) -> str:
        return self._password

    def call(self, method: str, path: str, body: Any = None,
             query: dict[str, Any] | None = None) -> Any:
        """``METHOD path?query`` with ``body``; the answer's JSON (None for no body)."""
        if query:
            pairs = [(key, item) for key, value in query.items() if value is not None
                     for item in (value if isinstance(value, list) else [value])]
            if pairs:
                path = f"{path}?{urlencode(pairs)}"
        answer = self.request(method, path, body)
        if not answer.body:
            return None
        found = document(answer.body)
        if found is None:
            raise NotJson(f"{self.url}: the answer to {method} {path} is not JSON: is this "
                          "the API's URL?")
        return found


def part(value: str) -> str:
    """``value`` as one segment of a path (``/`` and everything else escaped)."""
    return quote(value, safe="")


def common(parser: argparse.ArgumentParser, json_option: bool = True) -> None:
    """The options every command has: ``--json`` and ``--timeout``."""
    if json_option:
        parser.add_argument("--json", action="store_true",
                            help="print the API's answer as JSON, for scripts")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on an answer after this long (default "
                             f"{DEFAULT_TIMEOUT:g})")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("the timeout must be above 0 and at most 3600")
    return value


def limit(text: str) -> int:
    """``--limit``'s value: a whole number from 1 to 1000, as the API takes it."""
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number from 1 to 1000")
    return int(text)


def run(arguments: argparse.Namespace,
        action: Callable[[PersonClient, argparse.Namespace], int | None]) -> int:
    """Carry out ``action`` as the person the credentials name; the exit status."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        credentials = load_credentials(dict(os.environ))
    except CredentialsError as error:
        return fail(EXIT_USAGE, str(error))
    client = PersonClient(credentials, arguments.timeout)
    try:
        return action(client, arguments) or EXIT_DONE
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    except ApiRefused as error:
        return fail(EXIT_REFUSED, f"HTTP {error.status}: {error.reason}")
    except ApiRedirected:
        return fail(EXIT_UNAVAILABLE, f"the API is unavailable: {credentials.url} answered "
                    "with a redirect, which the client never follows (your password would go "
                    "along): set OPSLAB_API_URL, or url in the credentials file, to the API's "
                    "own URL")
    except ApiUnavailable as error:
        return fail(EXIT_UNAVAILABLE, f"the API is unavailable: {error}")
    except (KeyError, TypeError, AttributeError):
        return fail(EXIT_UNAVAILABLE, f"the API is unavailable: {credentials.url} answered "
                    "JSON that is not what this client expects: is this the API's URL, and "
                    "of the client's version?")


def fail(status: int, text: str) -> int:
    """``opslab: TEXT`` on stderr, escaped (it may quote the API, or input); ``status``."""
    sys.stderr.write(f"opslab: {shown(text)}\n")
    return status
