"""``opslab keys``: your SSH public keys, which let you in to your projects' instances.

    opslab keys add FILE           add the public key in FILE (a .pub file; - for stdin)
    opslab keys list [UID]         your keys (or UID's): type, size, fingerprint, comment
    opslab keys remove FINGERPRINT remove the key of that fingerprint (SHA256:...)

``add`` and ``remove`` change your own keys; operations may give ``--person
UID`` for someone else's. A private key is refused here, before anything is
sent. Every action takes ``--json`` and ``--timeout SECONDS``. Exit
statuses: see :mod:`opslab.client.session`.
"""

import argparse
import sys

from . import output, session
from .session import PersonClient, UsageError, part

MAX_KEY_FILE = 65536


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab keys ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab keys", description="Your SSH public keys.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a public key")
    add.add_argument("file", help="the public key's file (id_ed25519.pub), or - for stdin")
    listing = actions.add_parser("list", help="the keys")
    listing.add_argument("uid", nargs="?", help="whose keys (default: yours)")
    remove = actions.add_parser("remove", help="remove a key by its fingerprint")
    remove.add_argument("fingerprint", help="SHA256:..., as keys list shows it")
    for each in (add, remove):
        each.add_argument("--person", metavar="UID",
                          help="someone else's keys (operations only)")
    for each in (add, listing, remove):
        session.common(each)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def read_key(name: str) -> str:
    """The one public key line of the file ``name`` (``-``: stdin); never a private key."""
    try:
        if name == "-":
            text = sys.stdin.read(MAX_KEY_FILE + 1)
        else:
            with open(name, encoding="utf-8") as stream:
                text = stream.read(MAX_KEY_FILE + 1)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not a public key (not text)") from None
    if "PRIVATE KEY" in text:
        raise UsageError(f"{name} is a private key: it was not sent, and must never be. Give "
                         "the public key (the .pub file beside it)")
    if len(text) > MAX_KEY_FILE:
        raise UsageError(f"{name} is too large to be a public key")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise UsageError(f"{name} holds {len(lines)} keys: give a file with exactly one")
    return lines[0]


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    if arguments.action == "list":
        uid = arguments.uid or client.user or ""
        person = client.call("GET", f"/v1/people/{part(uid)}")
        keys = person.get("ssh_keys", [])
        if arguments.json:
            output.print_json(keys)
        else:
            output.table(["TYPE", "BITS", "FINGERPRINT", "COMMENT"],
                         [[key.get("type", "(unreadable)"), key.get("bits"),
                           key.get("fingerprint"), key.get("comment", "")] for key in keys])
        return 0
    uid = arguments.person or client.user or ""
    path = f"/v1/people/{part(uid)}/keys"
    if arguments.action == "add":
        key = client.call("POST", path, {"key": read_key(arguments.file)})
        if arguments.json:
            output.print_json(key)
        else:
            output.message(f"added {output.shown(key.get('fingerprint'))} "
                           f"({output.shown(key.get('type'))}) to {output.shown(uid)}'s keys")
        return 0
    client.call("DELETE", f"{path}/{part(arguments.fingerprint)}")
    if arguments.json:
        output.print_json({"removed": arguments.fingerprint})
    else:
        output.message(f"removed {output.shown(arguments.fingerprint)} from "
                       f"{output.shown(uid)}'s keys")
    return 0
