"""Local instances: containers on this machine, booted by systemd-nspawn.

Each instance boots systemd as its PID 1 (``systemd-nspawn --boot``) on an
overlay of its own over one shared, read-only base image
(:mod:`opslab.instances.image`): ``--read-only --overlay=IMAGE:UPPER:/``, so
what an instance writes lands in its own upper directory and the image is
never changed. It runs Debian's real cloud-init, with a NoCloud seed written
into the upper directory before boot: the user-data exactly as launched, and
meta-data with the instance id and the host name.

Its network is a network namespace of its own (``ip netns``) with one veth
pair: the host end gets the first address of a /30 in a private range, the
instance's ``eth0`` the second, set from the host before boot (cloud-init's
own network configuration is turned off). The host reaches each instance's
address; an instance reaches this machine and nothing else (no forwarding,
no NAT), not even another instance.

No systemd is needed on the host: nspawn runs with ``--register=no
--keep-unit``, as a child of the process that creates the instance, in a
session of its own, its output (the container's console) in a log file. So
no machined scope limits an instance: a flavor's cores and memory are
reported, not enforced (nspawn says "--property= settings will have no
effect" without registration).

Everything about an instance lives in its directory under ``ROOT/instances``
(its record, the nspawn process, the console log, the upper directory), so
another process, or this one after a restart, knows every instance. The
instance is ACTIVE once its sshd answers on its address: after cloud-init's
first stages, before its final stage (user-data's ``runcmd``) has finished.

Deleting stops nspawn with SIGTERM (nspawn asks the container's systemd to
power off); past a share of the deadline it kills the container's whole PID
namespace. SIGKILL of nspawn alone would not do: the container's PID 1 would
be left running, reparented to the host's init. The container's processes
are found by the instance's network namespace (only the instance's processes
are in it) and its PID namespace, never by name, and a namespace that is this
process's own is never swept.
"""

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import yaml

from opslab.files import write_atomic
from opslab.lock import FileLock, LockHeld
from opslab.process import TimedOut, run

from .provider import (
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
    from opslab.config import InstanceSettings

# Where instances and the default image live (the image: ROOT/image).
ROOT = "/var/lib/opslab/instances"
# The private range the /30 of each instance comes from; it exists only on this
# machine's own veth links.
SUBNET = "10.213.0.0/16"
# One lock for the whole machine: two providers with different roots must not
# hand out the same subnet or name.
LOCK = "/run/lock/opslab-local-instances.lock"
# The image names Launch.image may give besides an absolute path: the provider's image.
IMAGE_NAMES = ("debian-12", "default")
# (cores, RAM in MB): reported, not enforced (see the module's doc).
FLAVORS = {"small": (1, 512), "medium": (2, 2048), "large": (4, 4096)}

SSH_PORT = 22
LOCK_TIMEOUT = 30.0
COMMAND_TIMEOUT = 15.0
# A record still "creating" past this was left by a creator that stopped half-way.
CREATE_GRACE = 60.0
# The share of delete's deadline given to a clean shutdown, and its cap.
SHUTDOWN_SHARE, SHUTDOWN_MAX = 0.5, 30.0
POLL = 0.1

_ID = re.compile(r"i-[0-9a-f]{8}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
# The cloud-init settings every instance gets: the NoCloud seed only; /etc/hosts
# names the host (else sudo and hostname -f fail); a locale the image has; the
# address is the host's to set.
CLOUD_CFG = {"datasource_list": ["NoCloud", "None"], "manage_etc_hosts": True,
             "locale": "C.UTF-8", "network": {"config": "disabled"}}


class Record(NamedTuple):
    """What the provider keeps about an instance (its directory's instance.json)."""

    id: str
    name: str
    metadata: dict[str, str]
    flavor: str
    cores: int
    ram_mb: int
    image: str
    slot: int  # which /30 of SUBNET
    host_address: str
    address: str
    netns: str
    veth: str
    created: float  # time.time()


class LocalProvider:
    """Instances as systemd-nspawn containers on this machine (see the module's doc)."""

    name = "local"

    def __init__(self, settings: "InstanceSettings", *, root: str | os.PathLike[str] = ROOT,
                 image: str | os.PathLike[str] | None = None, subnet: str = SUBNET,
                 lock: str = LOCK) -> None:
        self.settings = settings
        self.root = Path(root)
        self.image = Path(image) if image is not None else self.root / "image"
        # The images a launch may name: the image under each of IMAGE_NAMES (an
        # operator or a test may add more, by name).
        self.images: dict[str, Path] = dict.fromkeys(IMAGE_NAMES, self.image)
        self.subnet = ipaddress.IPv4Network(subnet)
        self.lock = lock
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._guard = threading.Lock()

    # -- the Provider interface -------------------------------------------------------

    def create(self, launch: Launch) -> Server:
        if not _HOSTNAME.fullmatch(launch.name):
            raise ProviderError(f"{launch.name!r:.80} is not a host name for a local instance")
        cores, ram_mb = self.flavor(launch.flavor)
        image = self._image_for(launch.image)
        instances = self.root / "instances"
        instances.mkdir(parents=True, exist_ok=True)
        Path(self.lock).parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(self.lock, "creating a local instance", timeout=LOCK_TIMEOUT):
                record = self._allocate(launch, image, cores, ram_mb, instances)
                try:
                    self._start(record, launch.user_data)
                except BaseException as error:
                    with contextlib.suppress(ProviderError):  # the first failure is the news
                        self._destroy(record, time.monotonic() + COMMAND_TIMEOUT * 4)
                    if isinstance(error, OSError):
                        raise ProviderError(f"could not start {record.id}: {error}") from error
                    raise
        except LockHeld as error:
            raise ProviderUnavailable(str(error)) from None
        return self._server(record)

    def wait(self, server_id: str, deadline: float) -> Server:
        end = time.monotonic() + deadline
        while True:
            server = self.get(server_id)
            if server is None:
                raise ProviderError(f"there is no local instance {server_id}")
            if server.state in (ACTIVE, ERROR):
                return server
            if time.monotonic() >= end:
                raise ProviderUnavailable(f"{server_id} was still {server.state} after "
                                          f"{deadline:g} s")
            time.sleep(POLL * 2)

    def get(self, server_id: str) -> Server | None:
        record = self._record(server_id)
        return None if record is None else self._server(record)

    def delete(self, server_id: str, deadline: float) -> None:
        end = time.monotonic() + deadline
        record = self._record(server_id)
        if record is None:
            if _ID.fullmatch(server_id) and self._directory(server_id).is_dir():
                # Its creator stopped before writing the record: nothing started.
                shutil.rmtree(self._directory(server_id), ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            write_atomic(str(self._directory(server_id) / "deleting"), f"{time.time()}\n",
                         0o644, durable=False)
        self._destroy(record, end)

    def servers(self, installation: str) -> list[Server]:
        return [self._server(record) for record in self.records()
                if record.metadata.get(INSTALLATION) == installation]

    def flavor(self, name: str) -> tuple[int, int]:
        try:
            return FLAVORS[name]
        except KeyError:
            raise ProviderError(f"no flavor {name!r:.40} (the local flavors: "
                                f"{', '.join(FLAVORS)})") from None

    # -- more than the interface: for operators and tests -------------------------------

    def records(self) -> list[Record]:
        """Every instance under this provider's root, whatever its installation."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(self.root / "instances")):
                record = self._record(entry) if _ID.fullmatch(entry) else None
                if record is not None:
                    found.append(record)
        return found

    def leader(self, server_id: str) -> int | None:
        """The host's PID of the container's PID 1 (its systemd), or None if it is not running.
        ``nsenter --target PID --all`` runs a command inside."""
        record = self._record(server_id)
        if record is None:
            return None
        netns = namespace_of(f"/run/netns/{record.netns}")
        return None if netns is None else _leader_in(netns)

    def console(self, server_id: str) -> str:
        """The container's console output so far (nspawn's and systemd's messages)."""
        with contextlib.suppress(FileNotFoundError):
            return (self._directory(server_id) / "console.log").read_text("utf-8", "replace")
        return ""

    # -- creating -------------------------------------------------------------------------

    def _image_for(self, name: str) -> Path:
        # By name only: a launch's image comes from a member's request, and a path
        # would let them boot any directory of this machine (its / too) as root.
        if not name:
            image = self.image
        elif name in self.images:
            image = self.images[name]
        else:
            raise ProviderError(f"no image {name!r:.80} here (the local provider boots "
                                f"{', '.join(sorted(self.images))})")
        if not image.is_dir():
            raise ProviderError(f"the image {image} is not there (build it with "
                                f"python -m opslab.instances.image {image})")
        return image

    def _allocate(self, launch: Launch, image: Path, cores: int, ram_mb: int,
                  instances: Path) -> Record:
        """A new id, its directory and a free /30; the record, written. Under the lock."""
        while True:
            server_id = f"i-{secrets.token_hex(4)}"
            if os.path.lexists(f"/run/netns/opslab-{server_id}"):
                continue
            with contextlib.suppress(FileExistsError):
                (instances / server_id).mkdir(mode=0o700)
                break
        taken = {record.slot for record in self.records()} | self._indexes_on_links()
        count = self.subnet.num_addresses // 4
        index = next((i for i in range(count) if i not in taken), None)
        if index is None:
            shutil.rmtree(instances / server_id, ignore_errors=True)
            raise ProviderError(f"no free /30 left in {self.subnet}")
        base = self.subnet.network_address + 4 * index
        record = Record(
            id=server_id, name=launch.name,
            metadata={INSTALLATION: launch.installation, PROJECT: launch.project,
                      HOST: launch.name},
            flavor=launch.flavor, cores=cores, ram_mb=ram_mb, image=str(image), slot=index,
            host_address=str(base + 1), address=str(base + 2),
            netns=f"opslab-{server_id}", veth=f"ol-{server_id[2:]}", created=time.time())
        write_atomic(str(instances / server_id / "instance.json"),
                     json.dumps(record._asdict(), indent=1) + "\n", 0o600)
        return record

    def _indexes_on_links(self) -> set[int]:
        """The /30s of SUBNET that an address of this machine is in (another root's, or
        anything else's)."""
        result = _command(["ip", "-o", "-4", "addr", "show"], "list the addresses")
        taken = set()
        for found in re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)", result):
            address = ipaddress.IPv4Address(found)
            if address in self.subnet:
                taken.add((int(address) - int(self.subnet.network_address)) // 4)
        return taken

    def _start(self, record: Record, user_data: str) -> None:
        directory = self._directory(record.id)
        self._network(record)
        upper = directory / "root"
        self._seed(record, upper, user_data)
        command = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
                   f"--machine={record.id}", f"--hostname={record.name.split('.')[0]}",
                   f"--directory={record.image}", "--read-only",
                   f"--overlay={record.image}:{upper}:/", "--link-journal=no",
                   f"--network-namespace-path=/run/netns/{record.netns}", "--boot"]
        with open(directory / "console.log", "ab") as log:
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, cwd="/",
                                           start_new_session=True)
            except OSError as error:
                raise ProviderError(f"systemd-nspawn could not start: {error}") from None
        with self._guard:
            self._children[record.id] = process
        write_atomic(str(directory / "nspawn.pid"), f"{process.pid} {_started(process.pid)}\n",
                     0o644)

    def _network(self, record: Record) -> None:
        netns, veth = record.netns, record.veth
        for command in (
            ["ip", "netns", "add", netns],
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
            ["ip", "addr", "add", f"{record.host_address}/30", "dev", veth],
            ["ip", "link", "set", veth, "up"],
            ["ip", "-n", netns, "link", "set", "lo", "up"],
            ["ip", "-n", netns, "addr", "add", f"{record.address}/30", "dev", "eth0"],
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
            ["ip", "-n", netns, "route", "add", "default", "via", record.host_address],
        ):
            _command(command, "set up the instance's network")

    def _seed(self, record: Record, upper: Path, user_data: str) -> None:
        """The instance's own files, in its upper directory before it boots."""
        seed = upper / "var/lib/cloud/seed/nocloud"
        cloud_cfg = upper / "etc/cloud/cloud.cfg.d"
        for directory in (seed, cloud_cfg):
            _directories(upper, directory)
        meta_data = {"instance-id": record.id, "local-hostname": record.name}
        write_atomic(str(seed / "meta-data"), yaml.safe_dump(meta_data), 0o600)
        write_atomic(str(seed / "user-data"), user_data, 0o600)
        write_atomic(str(cloud_cfg / "90-opslab-local.cfg"),
                     yaml.safe_dump(CLOUD_CFG, default_flow_style=False), 0o644)
        write_atomic(str(upper / "etc/machine-id"), f"{uuid.uuid4().hex}\n", 0o444)

    # -- state ------------------------------------------------------------------------------

    def _directory(self, server_id: str) -> Path:
        return self.root / "instances" / server_id

    def _record(self, server_id: str) -> Record | None:
        if not _ID.fullmatch(server_id):
            return None
        try:
            text = (self._directory(server_id) / "instance.json").read_text("utf-8")
            return Record(**json.loads(text))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:
            raise ProviderError(f"the record of {server_id} is unreadable: {error}") from None

    def _server(self, record: Record) -> Server:
        state, fault = self._state(record)
        return Server(id=record.id, name=record.name, state=state, addresses=[record.address],
                      fault=fault, metadata=dict(record.metadata), cores=record.cores,
                      ram_mb=record.ram_mb)

    def _state(self, record: Record) -> tuple[str, str | None]:
        directory = self._directory(record.id)
        if (directory / "deleting").exists():
            return DELETING, None
        status = self._nspawn_status(record)
        if status == "none":
            if time.time() - record.created < CREATE_GRACE:
                return BUILDING, None
            return ERROR, "the instance was never started (its creation was interrupted)"
        if status != "running":
            return ERROR, f"systemd-nspawn {status}: {self._log_tail(record.id)}"
        if (directory / "active").exists():
            return ACTIVE, None
        if _ssh_answers(record.address):
            with contextlib.suppress(FileNotFoundError):
                write_atomic(str(directory / "active"), f"{time.time()}\n", 0o644,
                             durable=False)
            return ACTIVE, None
        return BUILDING, None

    def _nspawn_status(self, record: Record) -> str:
        """"running", "none" (not started yet), or how nspawn ended ("exited with status 1",
        "was killed by signal 9", "exited")."""
        directory = self._directory(record.id)
        with self._guard:
            process = self._children.get(record.id)
        if process is not None:
            returncode = process.poll()
            if returncode is None:
                return "running"
            ended = (f"was killed by signal {-returncode}" if returncode < 0
                     else f"exited with status {returncode}")
            with contextlib.suppress(FileNotFoundError):
                write_atomic(str(directory / "exit-status"), f"{ended}\n", 0o644,
                             durable=False)
            return ended
        with contextlib.suppress(FileNotFoundError):
            return (directory / "exit-status").read_text("utf-8").strip() or "exited"
        pid = self._nspawn_pid(record.id)
        if pid is None:
            return "none"
        return "running" if pid > 0 else "exited"

    def _nspawn_pid(self, server_id: str) -> int | None:
        """nspawn's PID while it runs; 0 once it is gone; None if it never started."""
        try:
            pid, started = (self._directory(server_id) / "nspawn.pid").read_text().split()
        except FileNotFoundError:
            return None
        except ValueError:
            return 0
        return int(pid) if _started(int(pid)) == started else 0

    def _log_tail(self, server_id: str, lines: int = 6) -> str:
        text = [line.strip() for line in self.console(server_id).splitlines() if line.strip()]
        return " / ".join(text[-lines:])[-800:] or "(no output)"

    # -- deleting ---------------------------------------------------------------------------

    def _destroy(self, record: Record, end: float) -> None:
        """Stop the container, then take away its network and its directory."""
        netns = namespace_of(f"/run/netns/{record.netns}")
        pidns = _pid_namespace(netns)
        pid = self._nspawn_pid(record.id)
        with self._guard:
            process = self._children.get(record.id)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # nspawn: SIGRTMIN+3 to systemd, a clean poweroff
            grace = time.monotonic() + min(SHUTDOWN_MAX,
                                           max(0.0, end - time.monotonic()) * SHUTDOWN_SHARE)
            while time.monotonic() < grace and self._nspawn_alive(record.id, process):
                time.sleep(POLL)
            if self._nspawn_alive(record.id, process):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if process is not None:
            try:
                process.wait(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ProviderUnavailable(f"systemd-nspawn of {record.id} did not end") from None
        # What nspawn leaves behind when it was killed: the container's PID 1, reparented to
        # the host's init, and everything under it. Killing PID 1 of a PID namespace kills
        # every process in it.
        pidns = pidns or _pid_namespace(netns)
        while True:
            left = _processes(netns, pidns)
            if not left:
                break
            if time.monotonic() >= end:
                raise ProviderUnavailable(f"{len(left)} processes of {record.id} were still "
                                          f"running at the deadline")
            for found in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(found, signal.SIGKILL)
            time.sleep(POLL)
        with self._guard:
            self._children.pop(record.id, None)
        if os.path.lexists(f"/run/netns/{record.netns}"):
            _command(["ip", "netns", "delete", record.netns], "delete the network namespace")
        # Deleting the namespace deletes eth0 and so its peer, a moment later.
        gone = time.monotonic() + 1.0
        while os.path.exists(f"/sys/class/net/{record.veth}") and time.monotonic() < gone:
            time.sleep(POLL / 4)
        if os.path.exists(f"/sys/class/net/{record.veth}"):
            with contextlib.suppress(ProviderError):  # gone since
                _command(["ip", "link", "delete", record.veth], "delete the veth link")
            if os.path.exists(f"/sys/class/net/{record.veth}"):
                raise ProviderUnavailable(f"the link {record.veth} of {record.id} is still there")
        # nspawn removes it on a normal exit only (and refuses to where /run is not a tmpfs).
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{record.id}", ignore_errors=True)
        shutil.rmtree(self._directory(record.id), ignore_errors=True)
        if self._directory(record.id).exists():
            raise ProviderUnavailable(f"the directory of {record.id} could not be removed")

    def _nspawn_alive(self, server_id: str, process: "subprocess.Popen[bytes] | None") -> bool:
        if process is not None:
            return process.poll() is None
        return bool(self._nspawn_pid(server_id))


# -- processes and namespaces --------------------------------------------------------------

Namespace = tuple[int, int]  # (st_dev, st_ino) of a namespace file


def namespace_of(path: str) -> Namespace | None:
    """The namespace the file ``path`` is (/proc/PID/ns/net, /run/netns/NAME), or None."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


_OWN_PID_NAMESPACE = namespace_of("/proc/self/ns/pid")


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _in_namespace(pid: int, kind: str, namespace: Namespace) -> bool:
    return namespace_of(f"/proc/{pid}/ns/{kind}") == namespace


def _leader_in(netns: Namespace) -> int | None:
    """The PID 1 of a PID namespace other than ours, among the processes in ``netns``."""
    for pid in _pids():
        if not _in_namespace(pid, "net", netns):
            continue
        if namespace_of(f"/proc/{pid}/ns/pid") in (None, _OWN_PID_NAMESPACE):
            continue  # nspawn's first child, still in the host's PID namespace
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            match = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
            if match and match[1].split()[-1] == "1" and len(match[1].split()) > 1:
                return pid
    return None


def _pid_namespace(netns: Namespace | None) -> Namespace | None:
    """The container's PID namespace, found through its PID 1 in ``netns``."""
    if netns is None:
        return None
    leader = _leader_in(netns)
    namespace = None if leader is None else namespace_of(f"/proc/{leader}/ns/pid")
    return None if namespace == _OWN_PID_NAMESPACE else namespace


def _processes(netns: Namespace | None, pidns: Namespace | None) -> list[int]:
    """The living processes in the instance's network namespace or its PID namespace (never
    ours), PID 1 of the container first: killing it kills the rest of its namespace."""
    if pidns == _OWN_PID_NAMESPACE:
        pidns = None
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        inside = ((netns is not None and _in_namespace(pid, "net", netns))
                  or (pidns is not None and _in_namespace(pid, "pid", pidns)))
        if inside and _state_of(pid) not in ("Z", None):
            found.append(pid)
    leaders = [pid for pid in found if _nspid(pid) == 1]
    return leaders + [pid for pid in found if pid not in leaders]


def _state_of(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def _nspid(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if match and len(match[1].split()) > 1:
            return int(match[1].split()[-1])
    return None


def _started(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot), which tells a process from a later
    one with the same PID; "" if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[19]


def _ssh_answers(address: str) -> bool:
    """Whether an sshd greets on ``address``."""
    try:
        with socket.create_connection((address, SSH_PORT), timeout=0.5) as connection:
            connection.settimeout(1.0)
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _command(command: list[str], what: str) -> str:
    try:
        result = run(command, COMMAND_TIMEOUT, stderr=subprocess.STDOUT, text=True)
    except (TimedOut, OSError) as error:
        raise ProviderError(f"could not {what}: {error}") from None
    if result.returncode != 0:
        raise ProviderError(f"could not {what} ({' '.join(command)}): "
                            f"{str(result.stdout).strip()}")
    return str(result.stdout)


def _directories(top: Path, path: Path) -> None:
    """``path`` and its parents up to ``top``, each root's and mode 0755 as in an OS tree
    (in an overlay's upper directory, a directory's mode is the merged one's)."""
    parts = path.relative_to(top).parts
    for depth in range(len(parts) + 1):
        directory = top.joinpath(*parts[:depth])
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)  # noqa: S103 (as in any OS tree)
