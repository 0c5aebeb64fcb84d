"""The OpenStack provider: servers on a cloud named in a ``clouds.yaml``, through openstacksdk.

openstacksdk is the ``cloud`` extra, imported only when a provider is made, so this
module (and :mod:`opslab.instances.provider`) import without it.

Every request has ``instances.request_timeout`` (keystoneauth's session timeout, which
covers authentication and version discovery too); waits poll with their deadline and
never sleep past it. The proxy layer is used, not the cloud layer: it sends what it is
given (the user-data is base64-encoded here) and neither waits nor deletes on its own.
Servers are found by their metadata (:data:`~opslab.instances.provider.TAGS`), filtered
here from a full listing, since Nova cannot filter by metadata.

Errors: a cloud that cannot be reached or does not answer in time, or answers 5xx, is
:class:`ProviderUnavailable`; a refusal (4xx: quota, a bad image, unknown names) is
:class:`ProviderError` with the cloud's own message. Messages never carry the password,
a token or credentials in a URL, and the library's exception is not chained (its
message may name URLs).
"""

import base64
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opslab.config import InstanceSettings
from opslab.instances.provider import (
    ACTIVE,
    BUILDING,
    DELETING,
    ERROR,
    HOST,
    INSTALLATION,
    PROJECT,
    Launch,
    ProviderError,
    ProviderUnavailable,
    Server,
)

if TYPE_CHECKING:
    from openstack.compute.v2.server import Server as NovaServer
    from openstack.connection import Connection

# Nova's statuses (its API reference, "Server status"), in opslab's words. Statuses on
# the way back to ACTIVE count as building; a server that is stopped, paused, shelved,
# in rescue or unknown is not usable: error, with its status as the fault.
_BUILDING = {"BUILD", "REBUILD", "REBOOT", "HARD_REBOOT", "PASSWORD", "RESIZE",
             "VERIFY_RESIZE", "REVERT_RESIZE", "MIGRATING"}
_GONE = {"DELETED", "SOFT_DELETED"}
MAX_USER_DATA = 65535  # Nova's limit on user_data, after base64
POLL_INTERVAL = 2.0  # seconds between looks at a server being waited for
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class OpenStackProvider:
    """Servers on the cloud ``settings.cloud`` of ``settings.clouds_file``."""

    name = "openstack"

    def __init__(self, settings: InstanceSettings, poll_interval: float = POLL_INTERVAL) -> None:
        """Reads the cloud's configuration; nothing is sent until the first call."""
        self.settings = settings
        self.poll_interval = poll_interval
        self._secrets: list[str] = []
        self._conn = self._connect()

    def _connect(self) -> "Connection":
        try:
            from openstack import connection
            from openstack.config import loader
        except ImportError:
            raise ProviderError("the openstack provider needs openstacksdk: install "
                                "opslab[cloud]") from None
        settings = self.settings
        try:
            # A clouds_file of opslab's configuration is the one read: no OS_* variable
            # (OS_CLIENT_CONFIG_FILE included) overrides it.
            config = loader.OpenStackConfig(
                config_files=[settings.clouds_file] if settings.clouds_file else None,
                load_envvars=settings.clouds_file is None)
            region = config.get_one(cloud=settings.cloud, api_timeout=settings.request_timeout)
        except Exception as error:  # openstacksdk's ConfigException, keystoneauth's option errors
            raise ProviderError(f"cloud {settings.cloud!r} in "
                                f"{settings.clouds_file or 'clouds.yaml'}: "
                                f"{self._scrub(str(error))}") from None
        auth: dict[str, Any] = region.config.get("auth") or {}
        self._secrets = [str(auth[key]) for key in
                         ("password", "token", "application_credential_secret")
                         if auth.get(key)]
        return connection.Connection(config=region)

    # -- the Provider protocol --------------------------------------------------

    def create(self, launch: Launch) -> Server:
        image_name = launch.image or self.settings.image
        flavor_name = launch.flavor or self.settings.flavor
        if not image_name or not flavor_name:
            raise ProviderError(f"{launch.name}: no image or flavor given and no "
                                "instances.image/instances.flavor configured")
        user_data = base64.b64encode(launch.user_data.encode("utf-8")).decode("ascii")
        if len(user_data) > MAX_USER_DATA:
            raise ProviderError(f"{launch.name}: the user-data is {len(user_data)} bytes in "
                                f"base64, more than Nova's {MAX_USER_DATA}")
        metadata = {INSTALLATION: launch.installation, PROJECT: launch.project,
                    HOST: launch.name}
        with self._calls(f"creating {launch.name}"):
            image = self._find("image", image_name, f"creating {launch.name}")
            flavor = self._find("flavor", flavor_name, f"creating {launch.name}")
            networks: list[dict[str, str]] | str = "auto"  # Nova picks (2.37+)
            if self.settings.network:
                network = self._find("network", self.settings.network,
                                     f"creating {launch.name}")
                networks = [{"uuid": str(network.id)}]
            created = self._conn.compute.create_server(
                name=launch.name, image_id=image.id, flavor_id=flavor.id, networks=networks,
                user_data=user_data, metadata=metadata)
        return Server(id=str(created.id), name=launch.name, state=BUILDING, addresses=[],
                      fault=None, metadata=metadata, cores=_int(flavor.vcpus),
                      ram_mb=_int(flavor.ram))

    def get(self, server_id: str) -> Server | None:
        from openstack import exceptions

        with self._calls(f"server {server_id}"):
            try:
                found = self._conn.compute.get_server(server_id)
            except exceptions.NotFoundException:
                return None
        return _server(found)

    def wait(self, server_id: str, deadline: float) -> Server:
        end = time.monotonic() + deadline
        while True:
            server = self.get(server_id)
            if server is None:
                raise ProviderError(f"server {server_id} is gone (deleted while it was "
                                    "being waited for)")
            if server.state in (ACTIVE, ERROR):
                return server
            left = end - time.monotonic()
            if left <= 0:
                raise ProviderUnavailable(f"server {server_id} ({server.name}) is still "
                                          f"{server.state} after {deadline:g} seconds")
            time.sleep(min(self.poll_interval, left))

    def delete(self, server_id: str, deadline: float) -> None:
        end = time.monotonic() + deadline
        with self._calls(f"deleting server {server_id}"):
            self._conn.compute.delete_server(server_id, ignore_missing=True)
        while True:
            server = self.get(server_id)
            if server is None:
                return
            left = end - time.monotonic()
            if left <= 0:
                raise ProviderUnavailable(f"server {server_id} ({server.name}) is still there "
                                          f"({server.state}) {deadline:g} seconds after its "
                                          "deletion")
            time.sleep(min(self.poll_interval, left))

    def servers(self, installation: str) -> list[Server]:
        found: list[Server] = []
        with self._calls("listing servers"):
            # The metadata is checked here, on every server: Nova filters by tags and
            # names, never by metadata, and a filter the SDK or a cloud ignored would
            # hand back other installations' servers.
            for listed in self._conn.compute.servers(details=True):
                server = _server(listed)
                if server is not None and server.metadata.get(INSTALLATION) == installation:
                    found.append(server)
        return found

    def flavor(self, name: str) -> tuple[int, int]:
        with self._calls(f"flavor {name}"):
            found = self._find("flavor", name, f"flavor {name}")
        cores, ram = _int(found.vcpus), _int(found.ram)
        if cores is None or ram is None:
            raise ProviderError(f"flavor {name!r} has no vcpus or ram")
        return cores, ram

    def _find(self, kind: str, name_or_id: str, what: str) -> Any:
        """The image, flavor or network by id or name (openstacksdk tries it as an id,
        then lists by name); ProviderError naming it if there is none."""
        from openstack import exceptions

        finders = {"image": self._conn.image.find_image,
                   "flavor": self._conn.compute.find_flavor,
                   "network": self._conn.network.find_network}
        try:
            return finders[kind](name_or_id, ignore_missing=False)
        except exceptions.NotFoundException:
            raise ProviderError(f"{what}: no {kind} {name_or_id!r}") from None
        except exceptions.DuplicateResource:
            raise ProviderError(f"{what}: more than one {kind} is named {name_or_id!r}; "
                                "give its id") from None

    # -- errors -------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = _URL_CREDENTIALS.sub("", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn openstacksdk's and keystoneauth's exceptions into the provider's."""
        from keystoneauth1 import exceptions as ksa
        from openstack import exceptions as sdk

        cloud = self.settings.cloud or "the cloud"
        try:
            yield
        except ProviderError:
            raise
        except sdk.HttpException as error:
            status = error.status_code
            said = self._scrub(str(error.details or error.message or "").strip())
            message = f"{what}: {cloud} answered {status}" + (f": {said}" if said else "")
            if status is None or status >= 500 or status == 429:
                raise ProviderUnavailable(message) from None
            raise ProviderError(message) from None
        except ksa.ConnectionError as error:
            # ConnectFailure, ConnectTimeout (a read timeout too), SSLError, ...
            raise ProviderUnavailable(f"{what}: {cloud} did not answer "
                                      f"({type(error).__name__}: {self._scrub(str(error))})"
                                      ) from None
        except ksa.HttpError as error:  # from Keystone, during authentication
            status = error.http_status
            said = self._scrub(str(error.message or ""))
            message = f"{what}: {cloud}'s identity service answered {status}: {said}"
            if status >= 500:
                raise ProviderUnavailable(message) from None
            raise ProviderError(message) from None
        except (ksa.ClientException, sdk.SDKException) as error:
            # Discovery failures, a missing endpoint, a name matching several resources.
            # keystoneauth turns an identity service it cannot reach into a
            # DiscoveryFailure raised while handling the ConnectionError.
            if _caused_by(error, ksa.ConnectionError):
                raise ProviderUnavailable(f"{what}: {cloud} did not answer "
                                          f"({type(error).__name__}: "
                                          f"{self._scrub(str(error))})") from None
            raise ProviderError(f"{what}: {cloud}: {type(error).__name__}: "
                                f"{self._scrub(str(error))}") from None


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` was raised from or while handling an exception of ``kind``."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _server(nova: "NovaServer") -> Server | None:
    """A Nova server in opslab's words; None when it is deleted."""
    status = str(nova.status or "").upper()
    if status in _GONE:
        return None
    fault: str | None = None
    if nova.task_state == "deleting":
        state = DELETING
    elif status == "ACTIVE":
        state = ACTIVE
    elif status in _BUILDING:
        state = BUILDING
    else:
        state = ERROR
        fault_body: Any = nova.fault
        message = fault_body.get("message") if isinstance(fault_body, dict) else None
        fault = str(message) if message else f"the server's status is {status or 'unknown'}"
    addresses: list[str] = []
    for entries in (nova.addresses or {}).values():
        for entry in entries:
            if isinstance(entry, dict) and entry.get("addr"):
                addresses.append(str(entry["addr"]))
    flavor: Any = nova.flavor
    cores = _int(getattr(flavor, "vcpus", None)) if flavor is not None else None
    ram = _int(getattr(flavor, "ram", None)) if flavor is not None else None
    metadata = {str(key): str(value) for key, value in (nova.metadata or {}).items()}
    return Server(id=str(nova.id), name=str(nova.name), state=state, addresses=addresses,
                  fault=fault, metadata=metadata, cores=cores, ram_mb=ram)
