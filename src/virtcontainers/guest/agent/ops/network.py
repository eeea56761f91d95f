"""configure_network: the VM's NICs, found by MAC, their addresses, and routes.

The host gives the VM one virtio-net NIC per interface of the pod's network
namespace, with that interface's MAC.  This sets each NIC's MTU, brings it
(and ``lo``) up, adds its addresses, then adds the routes, all in the guest's
root network namespace, which containers without a network namespace of their
own share (crun leaves them in it).

The work is done by ``ip`` (busybox's applet in the guest), one command at a
time from the event loop, with ``replace`` rather than ``add`` so that the
same configuration can be applied again.  Every argument is checked before
the first command runs.

A NIC the host has just hot-plugged shows up a moment later (the guest's
PCIe hot-plug driver powers its slot on, then virtio_net probes it): with
``wait`` seconds the NICs are looked for again every
:data:`POLL_INTERVAL` until they are all there, without blocking the loop.
"""

from __future__ import annotations

import os

from ..args import AgentError, invalid
from ..osutil import read_text, write_file
from ..runtime import RuntimeCall

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterator, Mapping

    from ..core import Agent
    from ..model import Reply

MAX_INTERFACES = 16
MAX_ADDRESSES = 64
"""Per interface."""
MAX_ROUTES = 256
MTU_MIN = 68  # IPv4's minimum (RFC 791)
MTU_MIN_IPV6 = 1280  # below it the kernel turns IPv6 off on the device (RFC 8200)
MTU_MAX = 65535
MAX_WAIT = 120
POLL_INTERVAL = 0.05
SYS_NET = "/sys/class/net"
IFF_UP = 0x1
_HEX = frozenset("0123456789abcdef")
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")
_TEXT_LIMIT = 64  # beyond any address or network in CIDR form: refused before parsing


class Interface:
    """One checked entry of ``interfaces``."""

    __slots__ = ("addresses", "mac", "mtu")

    def __init__(self, mac: str, mtu: int, addresses: list[tuple[int, str]]) -> None:
        self.mac = mac
        self.mtu = mtu
        self.addresses = addresses  # (IP version, "addr/prefixlen")


class Route:
    """One checked entry of ``routes``."""

    __slots__ = ("destination", "gateway", "mac", "version")

    def __init__(self, version: int, destination: str, gateway: str | None, mac: str) -> None:
        self.version = version
        self.destination = destination  # "default" or a network in CIDR form
        self.gateway = gateway
        self.mac = mac


def configure_network(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    """Check every argument, find each NIC by its MAC (waiting up to ``wait``
    seconds for those not there yet), then run the ip commands.

    Answers AgentError: "invalid", "not_found" (no NIC has a MAC), "network".
    """
    _check_fields(args, "args", ("interfaces", "routes"), optional=("wait",))
    wait = _wait(args.get("wait", 0))
    items = _list(args["interfaces"], "interfaces", MAX_INTERFACES)
    interfaces = [_interface(item, f"interfaces[{i}]") for i, item in enumerate(items)]
    macs = [nic.mac for nic in interfaces]
    if len(set(macs)) != len(macs):
        raise invalid("interfaces must have distinct MACs")
    items = _list(args["routes"], "routes", MAX_ROUTES)
    routes = [_route(item, f"routes[{i}]", macs) for i, item in enumerate(items)]
    missing: list[AgentError] = []  # the last "not found", said when the wait is over

    def configure() -> bool:
        try:
            names = find_interfaces(macs)
        except AgentError as exc:
            if exc.kind == "not_found":
                missing[:] = [exc]
                return False
            reply.error(exc.kind, exc.message)
            return True
        try:
            for nic in interfaces:
                if any(version == 6 for version, _ in nic.addresses):
                    _skip_dad(names[nic.mac])
        except AgentError as exc:
            reply.error(exc.kind, exc.message)
            return True
        run_in_turn(agent, reply, ip_commands(interfaces, routes, names))
        return True

    def gave_up() -> None:
        waited = f" (after waiting {wait:g}s for it)" if wait else ""
        reply.error("not_found", missing[-1].message + waited)

    agent.loop.poll(configure, wait, POLL_INTERVAL, gave_up)


# ------------------------------------------------------------------- validation


def _show(value: object) -> str:
    return repr(value)[:80]


def _check_fields(
    item: object, what: str, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Mapping[str, object]:
    """item as an object with exactly these fields (and maybe the optional ones)."""
    if not isinstance(item, dict):
        raise invalid(f"{what} must be an object")
    unknown = sorted(str(key) for key in set(item) - set(names) - set(optional))
    if unknown:
        raise invalid(f"{what} has unknown field(s): {', '.join(unknown)}")
    missing = [name for name in names if name not in item]
    if missing:
        raise invalid(f"{what} lacks field(s): {', '.join(missing)}")
    return item


def _wait(value: object) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 <= value <= MAX_WAIT  # also refuses NaN
    ):
        raise invalid(f"wait must be a number of seconds in 0..{MAX_WAIT}, not {_show(value)}")
    return float(value)


def _list(value: object, what: str, limit: int) -> list[object]:
    if not isinstance(value, list) or len(value) > limit:
        raise invalid(f"{what} must be a list of at most {limit} items")
    return value


def _mac(value: object, what: str) -> str:
    """A unicast MAC, lower case as in /sys/class/net/*/address."""
    text = value.lower() if isinstance(value, str) else ""
    octets = text.split(":")
    if len(octets) != 6 or not all(len(o) == 2 and set(o) <= _HEX for o in octets):
        raise invalid(f"{what} must be a MAC like 02:00:00:00:00:01, not {_show(value)}")
    if int(octets[0], 16) & 1 or text == "00:00:00:00:00:00":
        raise invalid(f"{what} {text} is not the MAC of a NIC (multicast or zero)")
    return text


def _interface(item: object, what: str) -> Interface:
    fields = _check_fields(item, what, ("mac", "mtu", "addresses"))
    mac = _mac(fields["mac"], f"{what}.mac")
    mtu = fields["mtu"]
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not MTU_MIN <= mtu <= MTU_MAX:
        raise invalid(f"{what}.mtu must be an integer in {MTU_MIN}..{MTU_MAX}")
    items = _list(fields["addresses"], f"{what}.addresses", MAX_ADDRESSES)
    addresses = [_address(text, f"{what}.addresses[{i}]") for i, text in enumerate(items)]
    if mtu < MTU_MIN_IPV6 and any(version == 6 for version, _ in addresses):
        raise invalid(f"{what}.mtu must be at least {MTU_MIN_IPV6} for IPv6 addresses")
    return Interface(mac, mtu, addresses)


def _text(value: object, what: str, example: str, cidr: bool) -> str:
    """Address-like text, its characters checked before ipaddress parses it (no
    scope ids, no netmask form, no giant strings)."""
    if not isinstance(value, str) or len(value) > _TEXT_LIMIT:
        raise invalid(f"{what} must be {example}, not {_show(value)}")
    address, slash, prefix = value.partition("/")
    if (
        not address
        or not set(address) <= _ADDRESS_CHARS
        or bool(slash) != cidr
        or (cidr and not (prefix.isascii() and prefix.isdigit()))
    ):
        raise invalid(f"{what} must be {example}, not {_show(value)}")
    return value


def _address(value: object, what: str) -> tuple[int, str]:
    import ipaddress  # lazily: pods without networking never pay for it at boot

    text = _text(value, what, "an address in CIDR form like 10.1.2.3/24", cidr=True)
    try:
        address = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise invalid(f"{what}: {exc}") from None
    if address.ip.is_multicast or address.ip.is_unspecified:
        raise invalid(f"{what} {text} cannot be an interface's address")
    return address.version, str(address)


def _route(item: object, what: str, macs: list[str]) -> Route:
    import ipaddress  # lazily, as in _address

    fields = _check_fields(item, what, ("destination", "gateway", "mac"))
    version = 0  # unknown for "default" until the gateway says
    destination = "default"
    if fields["destination"] != "default":
        text = _text(fields["destination"], f"{what}.destination", '"default" or a CIDR', cidr=True)
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:  # also host bits set: 10.1.2.3/24 is not a network
            raise invalid(f"{what}.destination: {exc}") from None
        version, destination = network.version, str(network)
    gateway: str | None = None
    if fields["gateway"] is not None:
        gateway_ip = _gateway(fields["gateway"], f"{what}.gateway")
        if version and gateway_ip.version != version:
            raise invalid(f"{what}.gateway {gateway_ip} is not of the destination's IP version")
        version, gateway = gateway_ip.version, str(gateway_ip)
    if not version:
        raise invalid(f"{what}: a default route without a gateway must be 0.0.0.0/0 or ::/0")
    mac = _mac(fields["mac"], f"{what}.mac")
    if mac not in macs:
        raise invalid(f"{what}.mac {mac} is not the MAC of one of the interfaces")
    return Route(version, destination, gateway, mac)


def _gateway(value: object, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    import ipaddress  # lazily, as in _address

    text = _text(value, what, "null or an address like 10.1.2.1", cidr=False)
    try:
        gateway = ipaddress.ip_address(text)
    except ValueError as exc:
        raise invalid(f"{what}: {exc}") from None
    if gateway.is_multicast or gateway.is_unspecified:
        raise invalid(f"{what} {text} cannot be a gateway")
    return gateway


# ------------------------------------------------------------------- the guest's side


def find_interfaces(macs: list[str]) -> dict[str, str]:
    """The name of the interface with each MAC, from /sys/class/net/*/address.

    Raises AgentError: not_found when no interface has a MAC.
    """
    by_mac: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(SYS_NET))
    except OSError as exc:
        raise AgentError("network", f"cannot list {SYS_NET}: {exc}") from None
    for name in names:
        try:
            address = read_text(f"{SYS_NET}/{name}/address", 64).strip().lower()
        except OSError:
            continue  # gone meanwhile, or no address at all
        by_mac.setdefault(address, []).append(name)
    found: dict[str, str] = {}
    for mac in macs:
        owners = by_mac.get(mac, [])
        if not owners:
            raise AgentError("not_found", f"no network interface has MAC {mac}")
        if len(owners) > 1:
            raise AgentError("network", f"interfaces {', '.join(owners)} all have MAC {mac}")
        found[mac] = owners[0]
    return found


def _skip_dad(name: str) -> None:
    """No duplicate address detection for name's IPv6 addresses: the host's
    namespace already owns them, and detection would keep them unusable
    (tentative) for a second after configure_network has answered."""
    try:
        write_file(f"/proc/sys/net/ipv6/conf/{name}/accept_dad", b"0")
    except OSError as exc:
        raise AgentError("network", f"cannot turn off IPv6 DAD on {name}: {exc}") from None


def _is_up(name: str) -> bool:
    try:
        return bool(int(read_text(f"{SYS_NET}/{name}/flags", 64), 16) & IFF_UP)
    except (OSError, ValueError):
        return False  # `ip link set` will say what is wrong


def ip_commands(
    interfaces: list[Interface], routes: list[Route], names: dict[str, str]
) -> list[list[str]]:
    """The ip commands, in order: links up (with their MTU), addresses, routes.

    Routes come last and in the order given: a gateway must be reachable
    through an address's prefix, or an earlier route, when its route is added.
    """
    commands = [] if _is_up("lo") else [["ip", "link", "set", "dev", "lo", "up"]]
    for nic in interfaces:
        name = names[nic.mac]
        commands.append(["ip", "link", "set", "dev", name, "mtu", str(nic.mtu), "up"])
        for version, address in nic.addresses:
            commands.append(["ip", f"-{version}", "addr", "replace", address, "dev", name])
    for route in routes:
        via = ["via", route.gateway] if route.gateway else []
        device = ["dev", names[route.mac]]
        commands.append(
            ["ip", f"-{route.version}", "route", "replace", route.destination, *via, *device]
        )
    return commands


def run_in_turn(agent: Agent, reply: Reply, commands: list[list[str]]) -> None:
    """Run each command once the one before has succeeded; answer {} after the
    last, or a "network" error with the first failure's command and stderr."""
    pending: Iterator[list[str]] = iter(commands)

    def step(call: RuntimeCall | None) -> None:
        if call is not None and not call.ok:
            reply.error("network", f"{' '.join(call.argv)}: {call.error_text()}")
            return
        argv = next(pending, None)
        if argv is None:
            reply.ok({})
            return
        try:
            RuntimeCall(agent, argv, step)
        except AgentError as exc:  # ip cannot be started at all
            reply.error("network", exc.message)

    step(None)
