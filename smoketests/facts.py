"""The facts checks can refer to: a few basic ones, and the host's external facts.

Basic facts, named as Facter names them: ``hostname``, ``fqdn`` (the
certname when known: that is the name the host is managed by), ``domain``,
``ipaddress`` and ``ipaddress6`` (the first global address of each family,
as ``ip`` lists them). External facts as Facter reads them, without running
anything: ``key=value`` lines of ``*.txt`` and the mappings of ``*.yaml`` and
``*.json`` in its facts.d folders, then ``FACTER_NAME`` environment
variables, each later one winning. Facter itself is not run: it takes
seconds, and checks must be quick.
"""

import json
import os
import socket
import subprocess
from typing import Any

import yaml

from opslab import process

FACTS_DIRECTORIES = ("/etc/facter/facts.d", "/etc/puppetlabs/facter/facts.d")
MAX_FACTS_FILE = 1024 * 1024
IP_TIMEOUT = 5.0


def gather(certname: str | None, directories: tuple[str, ...] = FACTS_DIRECTORIES) -> \
        dict[str, Any]:
    """This host's facts, for checks."""
    facts = named(certname or socket.gethostname())
    facts.update(_addresses())
    for directory in directories:
        facts.update(_external(directory))
    facts.update({name[len("FACTER_"):].lower(): value for name, value in os.environ.items()
                  if name.startswith("FACTER_") and len(name) > len("FACTER_")})
    return facts


def named(fqdn: str) -> dict[str, Any]:
    """The facts a host's name alone gives: ``hostname``, ``fqdn`` and ``domain``. They are
    all an observer from outside has of the host it looks at: its own facts (addresses,
    external facts, FACTER_ variables of the CI host) are not the target's, and a project's
    outside check must not be able to send them to its instance."""
    return {"hostname": fqdn.partition(".")[0], "fqdn": fqdn, "domain": fqdn.partition(".")[2]}


def _addresses() -> dict[str, str]:
    """The first global IPv4 and IPv6 addresses (``ip -json address``)."""
    try:
        listed = process.run(["ip", "-json", "address", "show", "scope", "global"], IP_TIMEOUT,
                             stderr=subprocess.DEVNULL, text=True)
        interfaces = json.loads(listed.stdout) if listed.returncode == 0 else []
    except (OSError, process.TimedOut, ValueError):
        return {}
    found: dict[str, str] = {}
    for interface in interfaces if isinstance(interfaces, list) else []:
        for address in interface.get("addr_info") or []:
            name = {"inet": "ipaddress", "inet6": "ipaddress6"}.get(address.get("family"))
            if name and name not in found and address.get("local"):
                found[name] = str(address["local"])
    return found


def _external(directory: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return facts
    for name in names:
        path = os.path.join(directory, name)
        try:
            if not os.path.isfile(path) or os.path.getsize(path) > MAX_FACTS_FILE:
                continue
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except (OSError, UnicodeDecodeError):
            continue
        if name.endswith(".txt"):
            for line in text.splitlines():
                key, equals, value = line.partition("=")
                if equals and key.strip():
                    facts[key.strip()] = value.strip()
        elif name.endswith((".yaml", ".yml", ".json")):
            try:
                document = yaml.safe_load(text) if not name.endswith(".json") \
                    else json.loads(text)
            except (yaml.YAMLError, ValueError):
                continue
            if isinstance(document, dict):
                facts.update({str(key): value for key, value in document.items()})
    return facts
