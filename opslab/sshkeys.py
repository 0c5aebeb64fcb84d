"""SSH public keys people log in with: what is accepted, and in what form it is kept.

A key reaches ``authorized_keys`` (through ``opslab-ssh-keys``) exactly as
stored, so a stored key must be one public key and nothing else:

* **One line, a known key type first.** An ``authorized_keys`` line may start
  with options (``command="..."``, ``from=``, ``environment=``); a key
  handed to us never does, so that nobody stores a forced command or an
  ``environment=`` under a person's name.
* **Never a private key.** Whoever pastes one has leaked it; refusing it
  (and saying so) is the last chance to notice.
* **Parsed by OpenSSH itself** (``ssh-keygen -l``), which also gives its
  size and fingerprint: what OpenSSH cannot read is refused.
* **Not too weak:** DSA (which OpenSSH no longer accepts by default) and RSA
  below :data:`MIN_RSA_BITS` are refused.

A key is kept as ``TYPE BASE64 COMMENT``; the comment is free text without
control characters, and is what people see next to the fingerprint.

ssh-keygen reads a given key once per process (:data:`KEYGEN_CACHE_SIZE`
keys are kept): showing a person reads their stored keys again, and each
reading would be a process.
"""

import functools
import re
import subprocess
from typing import NamedTuple

from opslab.names import has_control_characters, has_format_characters

# The types OpenSSH 8.2+ accepts for user keys by default (sshd_config(5),
# PubkeyAcceptedAlgorithms); ssh-dss is gone from that list.
TYPES = {
    "ssh-ed25519": "ED25519",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    "ssh-rsa": "RSA",
}
# NIST SP 800-57: 2048-bit RSA is acceptable until 2030.
MIN_RSA_BITS = 2048
MAX_LENGTH = 8192  # a 16384-bit RSA key is about 2,800 characters
MAX_COMMENT = 200
KEYGEN_TIMEOUT = 10.0
# Bounded, so that a flood of distinct keys cannot grow the process: at most
# this many MAX_LENGTH texts (8 MiB), far more than the keys a worker shows.
KEYGEN_CACHE_SIZE = 1024
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# ssh-keygen -l: "BITS FINGERPRINT COMMENT (TYPE)"
_LISTING = re.compile(
    r"(?P<bits>\d+) (?P<fingerprint>SHA256:[A-Za-z0-9+/]+) .*\((?P<type>[A-Z0-9-]+)\)")


class InvalidKey(ValueError):
    """Not a public key opslab accepts; the message says why."""


class PublicKey(NamedTuple):
    type: str
    blob: str
    comment: str
    bits: int
    fingerprint: str  # SHA256:..., as ssh and ssh-keygen print it

    @property
    def line(self) -> str:
        """The key as stored and as ``authorized_keys`` gets it."""
        return f"{self.type} {self.blob} {self.comment}".rstrip()


def parse(text: str) -> PublicKey:
    """The public key ``text`` holds; InvalidKey if it is not one opslab accepts."""
    text = text.strip()
    if "PRIVATE KEY" in text:
        raise InvalidKey("this is a private key: never give it to anyone; make a new key "
                         "pair (the old one is leaked) and give its .pub file")
    if len(text) > MAX_LENGTH:
        raise InvalidKey(f"a public key is at most {MAX_LENGTH} characters")
    if "\n" in text or "\r" in text:
        raise InvalidKey("give one key, on one line")
    if has_control_characters(text):
        raise InvalidKey("a public key holds no control characters")
    key_type, _, rest = text.partition(" ")
    blob, _, comment = rest.strip().partition(" ")
    if key_type not in TYPES:
        if key_type == "ssh-dss":
            raise InvalidKey("DSA keys are too weak (OpenSSH refuses them); use ssh-ed25519")
        raise InvalidKey(f"a key starts with its type ({', '.join(sorted(TYPES))}), without "
                         f"options; this one starts with {key_type[:40]!r}")
    if not _BASE64.fullmatch(blob):
        raise InvalidKey("the key's second field must be its base64 data")
    comment = " ".join(comment.split())[:MAX_COMMENT]
    if has_format_characters(comment):
        raise InvalidKey("the key's comment holds invisible formatting (such as a "
                         "right-to-left override)")
    # ssh-keygen also refuses data of another type than the line says.
    listed = _keygen(f"{key_type} {blob}")
    if listed is None:
        raise InvalidKey("OpenSSH cannot read this public key (ssh-keygen -l refuses it)")
    bits, fingerprint, listed_type = listed
    if listed_type == "RSA" and bits < MIN_RSA_BITS:
        raise InvalidKey(f"an RSA key of {bits} bits is too weak; use at least "
                         f"{MIN_RSA_BITS} bits, or ssh-ed25519")
    return PublicKey(key_type, blob, comment, bits, fingerprint)


# The answer depends only on the text (and the installed ssh-keygen), so a
# refusal (None) is kept as well as a listing; both are immutable, as every
# caller shares them. What is not an answer about the key (no ssh-keygen, a
# timeout) raises, and is not kept.
@functools.lru_cache(maxsize=KEYGEN_CACHE_SIZE)
def _keygen(line: str) -> tuple[int, str, str] | None:
    """ssh-keygen -l's (bits, fingerprint, type) of the key ``line``; None if it refuses it."""
    try:
        listed = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=line + "\n",
                                capture_output=True, text=True, timeout=KEYGEN_TIMEOUT,
                                check=False)
    except FileNotFoundError:
        raise RuntimeError("ssh-keygen is not installed (Debian: openssh-client)") from None
    match = _LISTING.fullmatch(listed.stdout.strip()) if listed.returncode == 0 else None
    if match is None:
        return None
    return int(match["bits"]), match["fingerprint"], match["type"]
