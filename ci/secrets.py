"""What a change adds that looks like a secret: private keys, passwords, tokens.

The seeds' near miss was a wildcard certificate's private key pushed to the public Puppet
repository. The scan is detect-secrets' (its plugins and filters, Yelp's well-kept
rules), run on the lines the patch set *adds* relative to its first parent, so a secret
already in the tree is not blamed on every change.

False positives are allowed with detect-secrets' own baseline, ``.secrets.baseline`` at
the root of the repository (``detect-secrets scan > .secrets.baseline``), or an inline
``pragma: allowlist secret`` comment. The baseline is read from the **parent** commit:
a change cannot allowlist the secret it adds, and only the baseline's results are used,
never its plugin settings (a change to the baseline could otherwise turn the scan off).

A :class:`SecretFound` names the file, the line and the kind; the secret itself is never
kept, logged or reported.
"""

import json
import os
import tempfile

from opslab import process

from .result import SecretFound
from .source import Fetched, SourceError

BASELINE = ".secrets.baseline"
# git's empty tree: what a root commit is compared with.
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# A diff larger than this is not scanned (it would be held in memory whole).
MAX_DIFF_BYTES = 64 * 1024 * 1024
_ENVIRONMENT = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ATTR_NOSYSTEM": "1"}


class ScanError(Exception):
    """The change could not be scanned; the message says why."""


def scan(fetched: Fetched, timeout: float) -> list[SecretFound]:
    """The secrets the patch set ``fetched`` adds, by file and line, in file order."""
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import default_settings, get_filters, get_settings

    diff = _diff(fetched, timeout)
    allowed = _allowed(fetched, timeout)
    found = SecretsCollection()
    with default_settings():
        # That filter drops every name that is not a file under the current directory:
        # the lines come from the diff, wherever the checkout is.
        get_settings().disable_filters("detect_secrets.filters.common.is_invalid_file")
        get_filters.cache_clear()
        try:
            found.scan_diff(diff)
        except Exception as error:  # unidiff's parse errors have no common base
            raise ScanError(f"the change's diff could not be read: {error}") from None
    secrets = [SecretFound(file=filename, line=secret.line_number or 0, kind=secret.type)
               for filename, secret in found
               # The baseline holds hashes of secrets, high in entropy and harmless.
               if filename != BASELINE
               and (filename, secret.type, secret.secret_hash) not in allowed]
    return sorted(set(secrets), key=lambda item: (item.file, item.line, item.kind))


def _diff(fetched: Fetched, timeout: float) -> str:
    base = fetched.parent or _EMPTY_TREE
    # Added lines only matter; renames found (a renamed file's lines are not new), no text
    # conversion or external diff a repository could configure, and every file as text:
    # the change's own .gitattributes (`*.key -diff`) or a NUL byte must not hide a key.
    command = ["git", "-c", "core.attributesFile=/dev/null", "-C", str(fetched.directory),
               "diff", "--text", "--no-color", "--no-ext-diff", "--no-textconv",
               "--find-renames", "--unified=3", base, fetched.revision, "--"]
    with tempfile.TemporaryFile() as output:
        try:
            result = process.run(command, timeout, env={**os.environ, **_ENVIRONMENT},
                                 stdout=output)
        except process.TimedOut:
            raise ScanError(f"git diff timed out after {timeout:g} s") from None
        except OSError as error:
            raise ScanError(f"git diff could not run: {error}") from None
        if result.returncode != 0:
            raise ScanError(f"git diff failed: {result.stderr.decode(errors='replace')[-500:]}")
        size = output.seek(0, os.SEEK_END)
        if size > MAX_DIFF_BYTES:
            raise ScanError(f"the change's diff is {size // (1024 * 1024)} MiB, over the "
                            f"{MAX_DIFF_BYTES // (1024 * 1024)} MiB the secret scan reads")
        output.seek(0)
        return output.read().decode("utf-8", errors="replace")


def _allowed(fetched: Fetched, timeout: float) -> set[tuple[str, str, str]]:
    """(file, kind, hashed secret) of the parent's baseline results."""
    if fetched.parent is None:
        return set()
    command = ["git", "-C", str(fetched.directory), "show", f"{fetched.parent}:{BASELINE}"]
    try:
        result = process.run(command, timeout, env={**os.environ, **_ENVIRONMENT})
    except (process.TimedOut, OSError) as error:
        raise SourceError(f"reading {BASELINE} failed: {error}") from None
    if result.returncode != 0:
        return set()  # no baseline: nothing allowed
    try:
        document = json.loads(result.stdout)
        return {(str(filename), str(item["type"]), str(item["hashed_secret"]))
                for filename, items in document["results"].items() for item in items}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ScanError(f"{BASELINE} of the target branch is not a detect-secrets "
                        "baseline (a JSON object with results by file)") from None

