"""The one interface every instance provider implements, and what it hands back.

A provider launches a server for a host with the host's cloud-init
user-data, says what became of it, lists the servers of this opslab
installation (for the reaper), and deletes them. Every server carries
metadata naming the installation, project and host it belongs to
(:data:`TAGS`), so a server is never mistaken for another installation's.

Providers never block without a deadline: :meth:`Provider.wait` and
:meth:`Provider.delete` take one, and every call to a cloud has a timeout.
"""

from typing import NamedTuple, Protocol

# Metadata keys on every server opslab launches.
INSTALLATION = "opslab-installation"
PROJECT = "opslab-project"
HOST = "opslab-host"
TAGS = (INSTALLATION, PROJECT, HOST)

# What became of a server, in opslab's words (each provider maps its own).
BUILDING, ACTIVE, ERROR, DELETING = "building", "active", "error", "deleting"
STATES = (BUILDING, ACTIVE, ERROR, DELETING)


class ProviderError(Exception):
    """The provider refused or failed (quota, a fault, a bad image); the message says why."""


class ProviderUnavailable(ProviderError):
    """The cloud could not be reached or did not answer in time: nothing is known."""


class Launch(NamedTuple):
    """What to launch: a server named ``name`` (the host's certname)."""

    name: str
    project: str
    image: str
    flavor: str
    user_data: str  # the cloud-init user-data, as text
    installation: str


class Server(NamedTuple):
    """A server as the provider reports it."""

    id: str
    name: str
    state: str  # one of STATES
    addresses: list[str]  # IPv4 and IPv6, as text
    fault: str | None  # why it is in ERROR
    metadata: dict[str, str]
    cores: int | None = None
    ram_mb: int | None = None


class Provider(Protocol):
    """A place where instances run."""

    name: str

    def create(self, launch: Launch) -> Server:
        """Start creating a server; it may still be building when this returns."""

    def wait(self, server_id: str, deadline: float) -> Server:
        """The server once it is ACTIVE or in ERROR; ProviderUnavailable past ``deadline``
        (seconds from now)."""

    def get(self, server_id: str) -> Server | None:
        """The server, or None if it is gone."""

    def delete(self, server_id: str, deadline: float) -> None:
        """Delete the server and wait until it is gone (ProviderUnavailable past
        ``deadline``); nothing if it is gone already."""

    def servers(self, installation: str) -> list[Server]:
        """Every server of ``installation`` (by its metadata)."""

    def flavor(self, name: str) -> tuple[int, int]:
        """(cores, RAM in MB) of the flavor ``name``; ProviderError if there is none."""
