"""port: something listens on a TCP or UDP port.

    port: {port: 8181}                      # TCP, on any address
    port: {port: 53, protocol: udp, address: 127.0.0.1}

From inside, the kernel's socket tables say whether a socket listens
(``/proc/net/tcp``, ``tcp6``, ``udp``, ``udp6``): a socket bound to the
wildcard address listens on every address, so it satisfies any
``address``. From outside (``outside: true``, run with a target) a TCP
connection to the target's port is opened: a firewall or a service bound
to the loopback only makes the check fail, as it would for a user. A UDP
port cannot be seen from outside (nothing answers an empty datagram), so
such a check is refused when the checks are read.
"""

import ipaddress
import socket

from . import Context, Failed, Field, quoted

FIELDS = {
    "port": Field((int,), required=True, minimum=1, maximum=65535),
    "protocol": Field((str,), choices=("tcp", "udp")),
    "address": Field((str,)),
}
# The socket states of /proc/net/*: TCP's LISTEN; a UDP socket is "listening"
# once bound, which shows as state 07 (TCP_CLOSE).
_LISTENING = {"tcp": "0A", "udp": "07"}


def check(values: dict[str, object], context: Context) -> str:
    port = int(values["port"])  # type: ignore[call-overload]
    protocol = str(values.get("protocol", "tcp"))
    if context.target is not None:
        return _reach(context.target, port, context.left())
    wanted = _wanted(values.get("address"))
    found = _listening(protocol, port)
    if not found:
        raise Failed(f"nothing listens on {protocol} port {port}")
    if wanted is None:
        return f"{protocol} port {port} listens on {', '.join(sorted(map(str, found)))}"
    for bound in found:
        # A wildcard socket listens on every address of its family; an IPv6 one
        # (not IPV6_V6ONLY, Linux's default) on IPv4 addresses too.
        if bound == wanted or (bound.is_unspecified
                               and (bound.version == wanted.version or bound.version == 6)):
            return f"{protocol} port {port} listens on {bound}"
    raise Failed(f"{protocol} port {port} listens on {', '.join(sorted(map(str, found)))}, "
                 f"not on {wanted}")


def problem(values: dict[str, object], outside: bool) -> str | None:
    """What the fields cannot mean together, or None (checked when the checks are read)."""
    if outside and values.get("protocol") == "udp":
        return "a UDP port cannot be seen from outside: leave outside off"
    address = values.get("address")
    if isinstance(address, str) and "${" not in address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return f"address {address!r} is not an IP address"
    return None


def _wanted(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address asked for; one filled in from a reference is only known to be a text."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(str(address))
    except ValueError:
        raise Failed(f"address {quoted(address)} is not an IP address") from None


def _reach(target: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((target, port), timeout=timeout):
            return f"{target} port {port} accepts connections"
    except TimeoutError:
        raise Failed(f"{target} port {port}: no answer within {timeout:g} s") from None
    except OSError as error:
        raise Failed(f"{target} port {port}: {error.strerror or error}") from None


def _listening(protocol: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in (protocol, protocol + "6"):
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as stream:
                lines = stream.read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        # The port as the table prints it, after its address: most lines are not about
        # it, and splitting every line of a busy host's tables is most of the check's time.
        wanted = f":{port:04X} "
        for line in lines:
            if wanted not in line:
                continue
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_address, _, hex_port = local.partition(":")
            if state == _LISTENING[protocol] and int(hex_port, 16) == port:
                found.add(_address(hex_address))
    return found


def _address(hexadecimal: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net prints it: 32-bit words in the host's byte order."""
    raw = bytes.fromhex(hexadecimal)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) \
        if socket.htonl(1) != 1 else raw
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
