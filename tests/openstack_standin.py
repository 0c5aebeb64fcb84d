"""A stand-in for an OpenStack cloud: Keystone v3, Nova v2.1, Glance v2 and Neutron v2.0,
enough of each for openstacksdk, on a loopback port in a thread of this process.

It follows the project's wire contract for OpenStack
(contracts/gerrit-jenkins-openstack.md, sections 6 and 7: what openstacksdk 4.22 sends
and expects) and checks what it receives as the real services do: a token from its
Keystone on every call but discovery and the token request itself, the user and password
of its one account, Nova's schema for a server (name, base64 ``user_data`` of at most
65535 characters, metadata keys of ``[a-zA-Z0-9-_:. ]{1,255}`` and values of at most 255
characters, at most 128 of them), an image, flavor and network that exist, Nova's
compute microversion range, and 404 for what it does not know. Servers live in memory.

What becomes of a created server is a test's to decide: ``StandIn.on_create`` gets the
request (:class:`Created`, the user-data decoded) and returns a :class:`Fate`: by
default it turns ACTIVE with an address after a short time; ``Fate.error`` ends in
ERROR with a fault, ``Fate.stuck`` stays in BUILD. ``max_instances`` is the quota Nova
refuses past (403 "Quota exceeded for instances: ..."), ``hang`` makes requests wait
before they are answered, ``delete_after`` is how long a deleted server stays
"deleting" before it is gone (404).

Booting mode: ``StandIn(boot=provider)`` (or ``openstack_cloud(boot=provider)``) boots
every server created through Nova as an instance of ``provider``, a
:class:`~opslab.instances.local.LocalProvider` configured as the caller likes (the
``local_provider`` fixture of tests/local_instances.py, or one with a root, an image and
images of its own). The local instance gets the server's name as its host name and the
server's user-data exactly (decoded from base64); its image is the one the Glance image's
name gives in ``provider.images`` (add a Glance image to ``StandIn.images`` and, if it is
to boot, the same name to ``provider.images``), its flavor the one ``local_flavors``
maps the Nova flavor's name to. Then the server follows its local instance, as Nova shows
its servers (contract section 6.5): BUILD while it builds, ACTIVE with its address in
``addresses`` once it is active, ERROR with a ``fault`` (code 500, the local provider's
message) if the local create fails or the instance ends in error. ``DELETE`` deletes the
local instance; the server is "deleting" until it is gone, then 404. One thread per server
creates, follows and deletes its local instance, so no request waits for a boot;
``local_id`` names the local instance of a server (for ``inside()`` and the like).
``stop`` deletes every local instance still there, joins every thread, and raises if a
local instance could not be deleted. ``on_create`` is still called (a test may record what
was asked), but its :class:`Fate` is not used; servers made with ``add_server`` do not
boot.

Use it through the ``openstack_cloud`` fixture (a factory, see
:func:`openstack_cloud_fixture`; every stand-in it made is
stopped after the test) or as a context manager; ``clouds_yaml`` writes the
``clouds.yaml`` that points openstacksdk at it.
"""

import base64
import binascii
import itertools
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest
import yaml
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from opslab.instances.provider import ACTIVE, BUILDING, ERROR, Launch, Provider, Server

USERNAME = "opslab"
PROJECT = "opslab-project"
DOMAIN = "Default"
REGION = "RegionOne"
MAX_MICROVERSION = (2, 96)  # what the stand-in's Nova supports, as in the contract's probe
MAX_USER_DATA = 65535  # Nova's schema: user_data maxLength, after base64
MAX_METADATA_ITEMS = 128  # Nova's default quota maxServerMeta
METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")  # Nova's parameter_types.metadata
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
STOP_DEADLINE = 10.0
DISCOVERY = ("/identity", "/identity/v3", "/compute", "/compute/v2.1", "/image", "/network")

# Booting mode: the Nova flavors' names and the local provider's flavors they boot as.
LOCAL_FLAVORS = {"m1.small": "small", "m1.large": "large"}
LOCAL_INSTALLATION = "openstack-standin"  # the local instances' opslab-installation
FOLLOW_INTERVAL = 0.2  # seconds between looks at a local instance being followed
LOCAL_DELETE_DEADLINE = 60.0
# Stopping in booting mode: a local create under way (the local provider's lock, its
# commands), then the deletion of what it made.
BOOT_STOP_DEADLINE = 120.0

IMAGE_ID = "11111111-1111-4111-8111-111111111111"
NETWORK_ID = "22222222-2222-4222-8222-222222222222"


def image(image_id: str, name: str) -> dict[str, Any]:
    """A Glance v2 image as ``GET /v2/images/ID`` shows it."""
    return {"id": image_id, "name": name, "status": "active", "visibility": "public",
            "disk_format": "qcow2", "container_format": "bare", "min_disk": 0, "min_ram": 0,
            "size": 1, "protected": False, "tags": [], "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image", "self": f"/v2/images/{image_id}", "owner": "p1",
            "os_hidden": False,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}


def flavor(flavor_id: str, name: str, vcpus: int, ram: int, disk: int = 20) -> dict[str, Any]:
    """A Nova flavor (microversion 2.61: with extra_specs)."""
    return {"id": flavor_id, "name": name, "ram": ram, "disk": disk, "vcpus": vcpus,
            "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "os-flavor-access:is_public": True,
            "rxtx_factor": 1.0, "description": None, "extra_specs": {}, "links": []}


def network(network_id: str, name: str) -> dict[str, Any]:
    """A Neutron network."""
    return {"id": network_id, "name": name, "status": "ACTIVE", "subnets": [],
            "admin_state_up": True, "shared": False, "router:external": False,
            "project_id": "p1", "tenant_id": "p1", "mtu": 1450, "tags": []}


@dataclass(frozen=True)
class Created:
    """What Nova was asked to create, as a test's hook sees it."""

    id: str
    name: str
    metadata: dict[str, str]
    user_data: str | None  # decoded (UTF-8) text, None when none was sent
    image_id: str
    flavor_id: str
    networks: list[str] | str  # network ids, or "auto"/"none"


@dataclass(frozen=True)
class Fate:
    """What a created server becomes ``after`` seconds in BUILD."""

    status: str = "ACTIVE"  # "ACTIVE", "ERROR", or "BUILD" (stays building)
    after: float = 0.2
    addresses: tuple[str, ...] | None = None  # None: one address of its network
    fault: str = NO_VALID_HOST  # the fault's message in ERROR

    @classmethod
    def active(cls, after: float = 0.2, addresses: tuple[str, ...] | None = None) -> "Fate":
        return cls("ACTIVE", after, addresses)

    @classmethod
    def error(cls, fault: str = NO_VALID_HOST, after: float = 0.2) -> "Fate":
        return cls("ERROR", after, (), fault)

    @classmethod
    def stuck(cls) -> "Fate":
        return cls("BUILD", 0.0, ())


@dataclass
class Booting:
    """A server's local instance in booting mode; its thread keeps it, under the lock."""

    launch: Launch
    status: str = "BUILD"  # the Nova status it gives the server
    fault: str | None = None
    addresses: tuple[str, ...] = ()
    local_id: str | None = None
    deleted: threading.Event = field(default_factory=threading.Event)  # delete it now


@dataclass
class StoredServer:
    created: Created
    fate: Fate
    born: float  # time.monotonic() of its creation
    address: str
    tenant_id: str = "p1"
    deleted_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    booting: Booting | None = None  # booting mode: its local instance decides its status


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request (``StandIn.requests`` records them)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _nova_error(status: int, message: str) -> tuple[Response, int]:
    kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 406: "notAcceptable",
            413: "overLimit"}.get(status, "computeFault")
    return jsonify({kind: {"code": status, "message": message}}), status


def _invalid(field_name: str, value: object, reason: str) -> tuple[Response, int]:
    """Nova's answer to a request its JSON schema refuses."""
    shown = str(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    return _nova_error(400, f"Invalid input for field/attribute {field_name}. "
                            f"Value: {shown}. {reason}")


def _microversion(value: str | None) -> tuple[int, int]:
    if not value:
        return (2, 1)
    text = value.split()[-1]
    if text == "latest":
        return MAX_MICROVERSION
    major, _, minor = text.partition(".")
    return (int(major), int(minor))


class StandIn:
    """One cloud: its account, images, flavors, networks and servers."""

    def __init__(self, boot: Provider | None = None) -> None:
        """``boot``: booting mode, every server created through Nova an instance of it."""
        self.boot = boot
        self.local_flavors = dict(LOCAL_FLAVORS)
        self.password = "pw-" + secrets.token_hex(12)
        self.tokens: set[str] = set()
        self.images = [image(IMAGE_ID, "debian-12")]
        self.flavors = [flavor("f1", "m1.small", 1, 2048), flavor("f2", "m1.large", 4, 8192, 80)]
        self.networks = [network(NETWORK_ID, "private")]
        self.servers: dict[str, StoredServer] = {}
        self.on_create: Callable[[Created], Fate] = lambda created: Fate()
        self.max_instances: int | None = 10
        self.delete_after = 0.2  # seconds a deleted server stays "deleting"
        self.page_size = 1000  # Nova's osapi_max_limit
        # (predicate on (method, path), seconds): requests that wait before any answer.
        self.hangs: list[tuple[Callable[[str, str], bool], float]] = []
        self.requests: list[tuple[str, str, bool]] = []  # (method, full path, had a token)
        self.refused: list[tuple[str, str, int]] = []  # what the stand-in refused, and how
        self._lock = threading.Lock()
        self._boots: list[tuple[Booting, threading.Thread]] = []
        self._boot_failures: list[str] = []  # local instances their thread could not delete
        self._addresses = itertools.count(5)
        self._stopping = threading.Event()
        self.app = self._make_app()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True,
                                   request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="openstack-standin")
        self._thread.start()

    # -- for tests -----------------------------------------------------------

    def clouds_yaml(self, path: Path, cloud: str = "standin",
                    password: str | None = None) -> Path:
        """Write a clouds.yaml naming this stand-in as ``cloud``; returns ``path``."""
        path.write_text(yaml.safe_dump({"clouds": {cloud: {
            "auth": {"auth_url": f"{self.url}/identity/v3", "username": USERNAME,
                     "password": self.password if password is None else password,
                     "project_name": PROJECT, "user_domain_name": DOMAIN,
                     "project_domain_name": DOMAIN},
            "region_name": REGION, "interface": "public", "identity_api_version": 3}}}))
        return path

    def hang(self, seconds: float,
             when: Callable[[str, str], bool] = lambda method, path: True) -> None:
        """Requests for which ``when(method, path)`` holds wait ``seconds`` before their answer
        (cut short when the stand-in stops)."""
        self.hangs.append((when, seconds))

    def add_server(self, name: str, metadata: dict[str, str], status: str = "ACTIVE",
                   tenant_id: str = "p1") -> str:
        """A server that exists without anyone asking this cloud's API (another
        installation's, a leftover); returns its id."""
        sid = str(uuid.uuid4())
        created = Created(sid, name, dict(metadata), None, IMAGE_ID, "f1", [NETWORK_ID])
        fate = Fate(status, 0.0, None if status == "ACTIVE" else ())
        with self._lock:
            self.servers[sid] = StoredServer(created, fate, time.monotonic(),
                                             self._next_address(), tenant_id)
        return sid

    def status(self, sid: str) -> str | None:
        """The server's Nova status now, None once it is gone."""
        with self._lock:
            stored = self._live(sid)
            return None if stored is None else self._status(stored)

    def local_id(self, sid: str) -> str | None:
        """Booting mode: the id of the server's local instance, None while it has none."""
        with self._lock:
            stored = self.servers.get(sid)
            return None if stored is None or stored.booting is None \
                else stored.booting.local_id

    def stop(self) -> None:
        """Release hanging requests, stop serving and join the thread; in booting mode,
        delete every local instance and join the threads that boot them (RuntimeError
        naming what could not be deleted)."""
        with self._lock:  # one with create_server's check: no boot starts after this
            self._stopping.set()
            boots = list(self._boots)
        for booting, _ in boots:
            booting.deleted.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_DEADLINE)
        end = time.monotonic() + BOOT_STOP_DEADLINE
        for _, thread in boots:
            thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            failures, self._boot_failures = self._boot_failures, []
        failures += [f"the thread of local instance {booting.local_id} ({thread.name}) did "
                     f"not end within {BOOT_STOP_DEADLINE:g} s"
                     for booting, thread in boots if thread.is_alive()]
        if failures:
            raise RuntimeError("the stand-in left local instances: " + "; ".join(failures))

    def __enter__(self) -> "StandIn":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------

    def _next_address(self) -> str:
        return f"10.0.0.{next(self._addresses)}"

    def _live(self, sid: str) -> StoredServer | None:
        stored = self.servers.get(sid)
        if stored is None:
            return None
        # A booting server is gone when its thread has deleted its local instance.
        if stored.booting is None and stored.deleted_at is not None and \
                time.monotonic() >= stored.deleted_at:
            del self.servers[sid]
            return None
        return stored

    @staticmethod
    def _status(stored: StoredServer) -> str:
        if stored.booting is not None:
            return stored.booting.status
        if time.monotonic() - stored.born < stored.fate.after:
            return "BUILD"
        return stored.fate.status

    def _network_name(self, created: Created) -> str:
        """The name of the server's network, the key of its ``addresses`` (contract 6.5):
        its first network's, or for "auto" (Nova picks) the stand-in's first."""
        ids = created.networks if isinstance(created.networks, list) else []
        return str(next(n["name"] for n in self.networks if not ids or n["id"] == ids[0]))

    # -- booting mode ----------------------------------------------------------------

    def _launch(self, created: Created) -> Launch:
        """What the local provider is asked for a server: its name as the host name, its
        user-data exactly, the local image named as the Glance image and the local flavor
        of the Nova flavor."""
        image_name = next(i["name"] for i in self.images if i["id"] == created.image_id)
        flavor_name = next(f["name"] for f in self.flavors if f["id"] == created.flavor_id)
        return Launch(name=created.name, project=PROJECT, image=image_name,
                      flavor=self.local_flavors.get(flavor_name, flavor_name),
                      user_data=created.user_data or "", installation=LOCAL_INSTALLATION)

    def _boot(self, sid: str, booting: Booting, provider: Provider) -> None:
        """The thread of a server in booting mode: create its local instance, follow its
        state until the server is deleted (or the stand-in stops), then delete it, and
        only then is the server gone (contract section 6.5, Delete)."""
        try:
            local = provider.create(booting.launch)
            with self._lock:
                booting.local_id = local.id
            while not booting.deleted.is_set():
                self._follow(booting, provider.get(local.id))
                booting.deleted.wait(FOLLOW_INTERVAL)
        except Exception as error:  # any failed build is ERROR with a fault, as in Nova
            with self._lock:
                booting.status, booting.fault = "ERROR", str(error) or type(error).__name__
        booting.deleted.wait()
        if booting.local_id is not None:
            try:
                provider.delete(booting.local_id, LOCAL_DELETE_DEADLINE)
            except Exception as error:  # stop() says so; the server stays "deleting"
                with self._lock:
                    self._boot_failures.append(f"{booting.local_id} of server {sid}: {error}")
                return
        with self._lock:
            self.servers.pop(sid, None)

    def _follow(self, booting: Booting, local: Server | None) -> None:
        """The server's Nova status from its local instance's state (contract 6.5,
        Statuses): addresses filled in when it turns ACTIVE (openstacksdk deletes an
        ACTIVE server without them), a fault with ERROR."""
        with self._lock:
            if local is None:  # deleted behind Nova's back
                booting.status = "ERROR"
                booting.fault = f"its local instance {booting.local_id} is gone"
            elif local.state == ACTIVE:
                booting.status, booting.addresses = "ACTIVE", tuple(local.addresses)
            elif local.state == ERROR:
                booting.status, booting.fault = "ERROR", local.fault
            elif local.state == BUILDING:
                booting.status = "BUILD"
            # DELETING (by someone else): Nova's status stays what it was meanwhile.

    def _view(self, stored: StoredServer, microversion: tuple[int, int]) -> dict[str, Any]:
        """The server as Nova shows it (GET /servers/ID, /servers/detail)."""
        created = stored.created
        status = self._status(stored)
        addresses: dict[str, list[dict[str, Any]]] = {}
        if status == "ACTIVE":
            listed = (stored.booting.addresses if stored.booting is not None
                      else stored.fate.addresses if stored.fate.addresses is not None
                      else (stored.address,))
            addresses = {self._network_name(created): [
                {"version": 6 if ":" in addr else 4, "addr": addr, "OS-EXT-IPS:type": "fixed",
                 "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"} for addr in listed]}
        the_flavor = next(f for f in self.flavors if f["id"] == created.flavor_id)
        links = [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{created.id}"},
                 {"rel": "bookmark", "href": f"{self.url}/compute/servers/{created.id}"}]
        view: dict[str, Any] = {
            "id": created.id, "name": created.name, "status": status,
            "metadata": dict(created.metadata), "tenant_id": stored.tenant_id, "user_id": "u1",
            "hostId": "", "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z",
            "image": {"id": created.image_id, "links": []},
            "flavor": ({"original_name": the_flavor["name"], "vcpus": the_flavor["vcpus"],
                        "ram": the_flavor["ram"], "disk": the_flavor["disk"], "ephemeral": 0,
                        "swap": 0, "extra_specs": {}}
                       if microversion >= (2, 47) else {"id": the_flavor["id"], "links": []}),
            "addresses": addresses, "accessIPv4": "", "accessIPv6": "", "key_name": None,
            "security_groups": [{"name": "default"}], "config_drive": "", "locked": False,
            "description": None, "progress": 0, "links": links,
            "OS-EXT-STS:vm_state": {"BUILD": "building", "ACTIVE": "active",
                                    "ERROR": "error"}.get(status, status.lower()),
            "OS-EXT-STS:task_state": ("deleting" if stored.deleted_at is not None
                                      else "spawning" if status == "BUILD" else None),
            "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 0,
            "OS-EXT-AZ:availability_zone": "nova",
        }
        if microversion >= (2, 26):
            view["tags"] = []
        if status == "ERROR":
            view["fault"] = {"code": 500, "created": "2026-01-01T00:00:00Z",
                             "message": (stored.booting.fault if stored.booting is not None
                                         else stored.fate.fault),
                             "details": "stand-in"}
        return view

    # -- the services --------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask(__name__)
        standin = self

        def base() -> str:
            return request.host_url.rstrip("/")

        def refuse(status: int, answer: tuple[Response, int]) -> tuple[Response, int]:
            standin.refused.append((request.method, request.full_path.rstrip("?"), status))
            return answer

        @app.before_request
        def check() -> tuple[Response, int] | None:
            path = request.path.rstrip("/")
            token = request.headers.get("X-Auth-Token")
            standin.requests.append((request.method, request.full_path.rstrip("?"),
                                     token is not None))
            for when, seconds in standin.hangs:
                if when(request.method, path):
                    standin._stopping.wait(seconds)
            if (request.method == "GET" and path in DISCOVERY) or \
                    path == "/identity/v3/auth/tokens":
                return None
            if token not in standin.tokens:
                return refuse(401, (jsonify({"error": {
                    "code": 401, "title": "Unauthorized",
                    "message": "The request you have made requires authentication."}}), 401))
            if path.startswith("/compute/"):
                # openstacksdk sends both headers; Nova reads either.
                asked = request.headers.get("OpenStack-API-Version") or \
                    request.headers.get("X-OpenStack-Nova-API-Version")
                try:
                    version = _microversion(asked)
                except ValueError:
                    return refuse(400, _nova_error(400, f"Invalid API version {asked!r}"))
                if not (2, 1) <= version <= MAX_MICROVERSION:
                    return refuse(406, _nova_error(
                        406, f"Version {asked} is not supported by the API. Minimum is 2.1 "
                        f"and maximum is {MAX_MICROVERSION[0]}.{MAX_MICROVERSION[1]}."))
            return None

        # ---- Keystone ----
        def v3_version() -> dict[str, Any]:
            return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                    "links": [{"rel": "self", "href": f"{base()}/identity/v3/"}],
                    "media-types": [{"base": "application/json",
                                     "type": "application/vnd.openstack.identity-v3+json"}]}

        @app.get("/identity")
        @app.get("/identity/")
        def identity_root() -> tuple[Response, int]:
            return jsonify({"versions": {"values": [v3_version()]}}), 300

        @app.get("/identity/v3")
        @app.get("/identity/v3/")
        def identity_v3() -> Response:
            return jsonify({"version": v3_version()})

        @app.post("/identity/v3/auth/tokens")
        def tokens() -> tuple[Response, int]:
            body = request.get_json(silent=True) or {}
            auth = body.get("auth", {})
            user = auth.get("identity", {}).get("password", {}).get("user", {})
            project = auth.get("scope", {}).get("project", {})
            if (auth.get("identity", {}).get("methods") != ["password"]
                    or user.get("name") != USERNAME or user.get("password") != standin.password
                    or user.get("domain", {}).get("name") != DOMAIN
                    or project.get("name") != PROJECT
                    or project.get("domain", {}).get("name") != DOMAIN):
                return refuse(401, (jsonify({"error": {
                    "code": 401, "title": "Unauthorized",
                    "message": "The request you have made requires authentication."}}), 401))
            token = "tok-" + secrets.token_hex(16)
            standin.tokens.add(token)
            b = base()

            def service(kind: str, name: str, url: str) -> dict[str, Any]:
                return {"type": kind, "name": name, "id": f"{kind}-id", "endpoints": [
                    {"id": f"{kind}-{interface}", "interface": interface, "region": REGION,
                     "region_id": REGION, "url": url}
                    for interface in ("public", "internal", "admin")]}

            response = jsonify({"token": {
                "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                "issued_at": "2026-01-01T00:00:00.000000Z", "audit_ids": ["a1"],
                "user": {"id": "u1", "name": USERNAME,
                         "domain": {"id": "default", "name": DOMAIN},
                         "password_expires_at": None},
                "project": {"id": "p1", "name": PROJECT,
                            "domain": {"id": "default", "name": DOMAIN}},
                "roles": [{"id": "r1", "name": "member"}], "is_domain": False,
                "catalog": [service("compute", "nova", f"{b}/compute/v2.1"),
                            service("image", "glance", f"{b}/image"),
                            service("network", "neutron", f"{b}/network"),
                            service("identity", "keystone", f"{b}/identity")]}})
            response.headers["X-Subject-Token"] = token
            return response, 201

        # ---- Nova ----
        def compute_version() -> dict[str, Any]:
            return {"id": "v2.1", "status": "CURRENT",
                    "version": f"{MAX_MICROVERSION[0]}.{MAX_MICROVERSION[1]}",
                    "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                    "links": [{"rel": "self", "href": f"{base()}/compute/v2.1/"}]}

        @app.get("/compute")
        @app.get("/compute/")
        def compute_root() -> Response:
            return jsonify({"versions": [compute_version()]})

        @app.get("/compute/v2.1")
        @app.get("/compute/v2.1/")
        def compute_v21() -> Response:
            return jsonify({"version": compute_version()})

        def microversion() -> tuple[int, int]:
            return _microversion(request.headers.get("OpenStack-API-Version")
                                 or request.headers.get("X-OpenStack-Nova-API-Version"))

        @app.get("/compute/v2.1/flavors/<flavor_id>")
        def get_flavor(flavor_id: str) -> Response | tuple[Response, int]:
            for f in standin.flavors:
                if f["id"] == flavor_id:
                    return jsonify({"flavor": f})
            return _nova_error(404, f"Flavor {flavor_id} could not be found.")

        @app.get("/compute/v2.1/flavors/detail")
        def list_flavors() -> Response:
            return jsonify({"flavors": standin.flavors})

        @app.get("/compute/v2.1/limits")
        def limits() -> Response:
            with standin._lock:
                used = [s for s in list(standin.servers) if standin._live(s)]
            cap = standin.max_instances if standin.max_instances is not None else -1
            return jsonify({"limits": {"rate": [], "absolute": {
                "maxTotalInstances": cap, "maxTotalCores": -1, "maxTotalRAMSize": -1,
                "maxServerMeta": MAX_METADATA_ITEMS, "maxImageMeta": 128,
                "totalInstancesUsed": len(used), "totalCoresUsed": 0, "totalRAMUsed": 0}}})

        @app.post("/compute/v2.1/servers")
        def create_server() -> tuple[Response, int]:
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("server"), dict):
                return refuse(400, _nova_error(400, "Invalid input for field/attribute "
                                                    "server. Value: None. 'server' is required"))
            server = body["server"]
            answer = validate(server)
            if answer is not None:
                return refuse(answer[1], answer)
            with standin._lock:
                live = [s for s in list(standin.servers) if standin._live(s)]
                if standin.max_instances is not None and \
                        len(live) + 1 > standin.max_instances:
                    return refuse(403, _nova_error(
                        403, f"Quota exceeded for instances: Requested 1, but already used "
                        f"{len(live)} of {standin.max_instances} instances"))
                sid = str(uuid.uuid4())
                raw = server.get("user_data")
                networks = server.get("networks")
                created = Created(
                    sid, server["name"], dict(server.get("metadata") or {}),
                    None if raw is None else base64.b64decode(raw).decode("utf-8"),
                    server["imageRef"], str(server["flavorRef"]),
                    networks if isinstance(networks, str)
                    else [n["uuid"] for n in networks or []])
                address = standin._next_address()
            fate = standin.on_create(created)
            with standin._lock:
                if standin._stopping.is_set():  # stop() joins only the boots it saw
                    return refuse(503, _nova_error(503, "The service is stopping."))
                stored = StoredServer(created, fate, time.monotonic(), address)
                standin.servers[sid] = stored
                if standin.boot is not None:
                    # Booting mode: the answer comes now, with the server in BUILD; its
                    # thread boots the local instance while openstacksdk polls.
                    stored.booting = Booting(standin._launch(created))
                    thread = threading.Thread(
                        target=standin._boot, args=(sid, stored.booting, standin.boot),
                        name=f"openstack-standin-boot-{sid}", daemon=True)
                    standin._boots.append((stored.booting, thread))
                    thread.start()
            location = f"{base()}/compute/v2.1/servers/{sid}"
            response = jsonify({"server": {
                "id": sid, "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": "default"}],
                "adminPass": secrets.token_urlsafe(9),
                "links": [{"rel": "self", "href": location},
                          {"rel": "bookmark", "href": f"{base()}/compute/servers/{sid}"}]}})
            response.headers["Location"] = location
            return response, 202

        def validate(server: dict[str, Any]) -> tuple[Response, int] | None:
            """Nova's checks of a server create request, in its words."""
            name = server.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 255 or \
                    name != name.strip():
                return _invalid("name", name, "is not a valid name")
            raw = server.get("user_data")
            if raw is not None:
                if not isinstance(raw, str):
                    return _invalid("user_data", raw, f"{raw!r} is not of type 'string'")
                if len(raw) > MAX_USER_DATA:
                    return _invalid("user_data", raw, "is too long")
                try:
                    base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    return _invalid("user_data", raw, f"{raw!r} is not a 'base64'")
            metadata = server.get("metadata", {})
            if not isinstance(metadata, dict):
                return _invalid("metadata", metadata, "is not of type 'object'")
            for key, value in metadata.items():
                if not METADATA_KEY.match(key):
                    return _invalid("metadata", metadata,
                                    f"Additional properties are not allowed ({key!r})")
                if not isinstance(value, str) or len(value) > 255:
                    return _invalid(f"metadata/{key}", value,
                                    "is not a string of at most 255 characters")
            if len(metadata) > MAX_METADATA_ITEMS:
                return _nova_error(403, "Quota exceeded for metadata items: Maximum number "
                                        f"of metadata items exceeds {MAX_METADATA_ITEMS}")
            image_ref = server.get("imageRef")
            if not any(i["id"] == image_ref for i in standin.images):
                return _nova_error(400, f"Image {image_ref} could not be found.")
            flavor_ref = server.get("flavorRef")
            if not any(f["id"] == str(flavor_ref) for f in standin.flavors):
                return _nova_error(400, f"Flavor {flavor_ref} could not be found.")
            networks = server.get("networks")
            if networks is None and microversion() >= (2, 37):
                return _invalid("networks", None, "'networks' is a required property")
            if isinstance(networks, str):
                if networks not in ("auto", "none"):
                    return _invalid("networks", networks, "is not one of ['auto', 'none']")
            elif networks is not None:
                for entry in networks:
                    net = entry.get("uuid") if isinstance(entry, dict) else None
                    if not any(n["id"] == net for n in standin.networks):
                        return _nova_error(400, f"Network {net} could not be found.")
            return None

        @app.get("/compute/v2.1/servers/<sid>")
        def get_server(sid: str) -> Response | tuple[Response, int]:
            with standin._lock:
                stored = standin._live(sid)
                if stored is not None:
                    return jsonify({"server": standin._view(stored, microversion())})
            return _nova_error(404, f"Instance {sid} could not be found.")

        @app.delete("/compute/v2.1/servers/<sid>")
        def delete_server(sid: str) -> tuple[str | Response, int]:
            with standin._lock:
                stored = standin._live(sid)
                if stored is None:
                    return _nova_error(404, f"Instance {sid} could not be found.")
                if stored.deleted_at is None:
                    stored.deleted_at = time.monotonic() + standin.delete_after
                if stored.booting is not None:
                    stored.booting.deleted.set()  # its thread deletes the local instance
            return "", 204

        @app.get("/compute/v2.1/servers/detail")
        @app.get("/compute/v2.1/servers")
        def list_servers() -> Response | tuple[Response, int]:
            version = microversion()
            with standin._lock:
                found = [stored for sid in sorted(standin.servers)
                         if (stored := standin._live(sid)) is not None]
            name = request.args.get("name")
            if name:
                found = [s for s in found if re.search(name, s.created.name)]
            status = request.args.get("status")
            if status:
                found = [s for s in found if standin._status(s) == status.upper()]
            marker = request.args.get("marker")
            if marker:
                ids = [s.created.id for s in found]
                if marker not in ids:
                    return _nova_error(400, f"marker [{marker}] not found")
                found = found[ids.index(marker) + 1:]
            limit = min(int(request.args.get("limit", standin.page_size)), standin.page_size)
            page = found[:limit]
            with standin._lock:
                servers = [standin._view(s, version) for s in page]
            if request.path.endswith("/servers"):
                servers = [{"id": s["id"], "name": s["name"], "links": s["links"]}
                           for s in servers]
            answer: dict[str, Any] = {"servers": servers}
            if len(page) == limit and page:
                answer["servers_links"] = [{"rel": "next", "href": (
                    f"{base()}{request.path}?limit={limit}&marker={page[-1].created.id}")}]
            return jsonify(answer)

        # ---- Glance ----
        @app.get("/image")
        @app.get("/image/")
        def image_root() -> tuple[Response, int]:
            return jsonify({"versions": [{
                "id": "v2.15", "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{base()}/image/v2/"}]}]}), 300

        @app.get("/image/v2/images/<image_id>")
        def get_image(image_id: str) -> Response | tuple[str, int, dict[str, str]]:
            for i in standin.images:
                if i["id"] == image_id:
                    return jsonify(i)
            return (f"404 Not Found\n\nNo image found with ID {image_id}\n\n", 404,
                    {"Content-Type": "text/plain"})

        @app.get("/image/v2/images")
        def list_images() -> Response:
            name = request.args.get("name")
            hidden = request.args.get("os_hidden", "false").lower() == "true"
            found = [i for i in standin.images
                     if (name is None or i["name"] == name) and i["os_hidden"] == hidden]
            return jsonify({"images": found, "first": "/v2/images",
                            "schema": "/v2/schemas/images"})

        # ---- Neutron ----
        @app.get("/network")
        @app.get("/network/")
        def network_root() -> Response:
            return jsonify({"versions": [{
                "id": "v2.0", "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{base()}/network/v2.0/"}]}]})

        @app.get("/network/v2.0/networks/<net_id>")
        def get_network(net_id: str) -> Response | tuple[Response, int]:
            for n in standin.networks:
                if n["id"] == net_id:
                    return jsonify({"network": n})
            return jsonify({"NeutronError": {
                "type": "NetworkNotFound", "detail": "",
                "message": f"Network {net_id} could not be found."}}), 404

        @app.get("/network/v2.0/networks")
        def list_networks() -> Response:
            name = request.args.get("name")
            return jsonify({"networks": [n for n in standin.networks
                                         if name is None or n["name"] == name]})

        @app.get("/network/v2.0/subnets")
        def subnets() -> Response:
            return jsonify({"subnets": []})

        @app.get("/network/v2.0/ports")
        def ports() -> Response:
            return jsonify({"ports": []})

        @app.get("/network/v2.0/floatingips")
        def floatingips() -> Response:
            return jsonify({"floatingips": []})

        return app


class MakeCloud(Protocol):
    """The ``openstack_cloud`` fixture: a stand-in, in booting mode if ``boot`` is given."""

    def __call__(self, boot: Provider | None = None) -> StandIn: ...


@pytest.fixture(name="openstack_cloud")
def openstack_cloud_fixture() -> Iterator[MakeCloud]:
    """``openstack_cloud``: a factory of stand-in clouds; each is stopped when the test ends
    (in booting mode: its local instances deleted, passed or failed).

    A test module gets it with ``from tests.openstack_standin import
    openstack_cloud_fixture  # noqa: F401`` (a name of its own, so the test's
    ``openstack_cloud`` argument redefines nothing)."""
    made: list[StandIn] = []

    def make(boot: Provider | None = None) -> StandIn:
        standin = StandIn(boot)
        made.append(standin)
        return standin

    yield make
    errors = []
    for standin in made:  # every one stopped, whichever fails
        try:
            standin.stop()
        except RuntimeError as error:
            errors.append(str(error))
    assert not errors, errors
