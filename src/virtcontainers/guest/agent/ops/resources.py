"""A container's resources: change its limits, and read what it uses.

Both act on the container's cgroup v2 directory, found when it was created
(the parent of its ``memory.events``).  Limits change through ``crun update``,
so crun keeps its own view of the container; usage is read straight from the
cgroup's files.
"""

from __future__ import annotations

import json
import os

from ..args import AgentError, check_keys, invalid
from ..osutil import read_text, write_file

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from virtcontainers.agent.messages import ContainerStatsResult

    from ..core import Agent
    from ..model import Container, Reply
    from ..runtime import RuntimeCall

MAX_VALUE = 1 << 62
# What update_container may set: linux.resources fields crun update takes.
_RESOURCES = {
    "memory": {"limit", "swap", "reservation"},
    "cpu": {"quota", "period", "shares"},
    "pids": {"limit"},
}
SYS_NET = "/sys/class/net"


def update_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id", "resources"}, {"container_id", "resources"})
    container = agent.container(args)
    if container.status not in ("created", "running", "paused") or container.busy:
        raise AgentError("state", f"container {container.id!r} is {container.status}")
    resources = _check_resources(args["resources"])
    path = os.path.join(container.bundle_dir, "resources.json")
    write_file(path, json.dumps(resources).encode())

    def on_ok(call: RuntimeCall) -> None:
        reply.ok({})

    agent.run_busy(container, reply, ["update", "--resources", path, container.id], on_ok)


def _check_resources(value: object) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict) or not value:
        raise invalid("resources must be a non-empty object")
    checked: dict[str, dict[str, int]] = {}
    for group, fields in value.items():
        allowed = _RESOURCES.get(group)
        if allowed is None or not isinstance(fields, dict) or not fields:
            raise invalid(f"resources.{group}: expected one of {sorted(_RESOURCES)} with fields")
        checked[group] = {}
        for name, number in fields.items():
            if name not in allowed:
                raise invalid(f"resources.{group}.{name} cannot be updated")
            if isinstance(number, bool) or not isinstance(number, int):
                raise invalid(f"resources.{group}.{name} must be an integer")
            if not -1 <= number <= MAX_VALUE:
                raise invalid(f"resources.{group}.{name} is out of range")
            checked[group][name] = number
    return checked


def container_stats(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    directory = _cgroup_dir(container)
    cpu = _keyed(os.path.join(directory, "cpu.stat"))
    memory = _keyed(os.path.join(directory, "memory.stat"))
    io_read = io_written = 0
    for line in _lines(os.path.join(directory, "io.stat")):
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        io_read += _int(fields.get("rbytes"))
        io_written += _int(fields.get("wbytes"))
    received, sent = _network()
    stats: ContainerStatsResult = {
        "cpu_usage_ns": cpu.get("usage_usec", 0) * 1000,
        "cpu_user_ns": cpu.get("user_usec", 0) * 1000,
        "cpu_system_ns": cpu.get("system_usec", 0) * 1000,
        "memory_bytes": _number(os.path.join(directory, "memory.current")),
        "memory_limit_bytes": _number(os.path.join(directory, "memory.max")),
        "memory_cache_bytes": memory.get("file", 0),
        "pids": _number(os.path.join(directory, "pids.current")),
        "pids_limit": _number(os.path.join(directory, "pids.max")),
        "io_read_bytes": io_read,
        "io_write_bytes": io_written,
        "network_rx_bytes": received,
        "network_tx_bytes": sent,
    }
    reply.ok(stats)


def _cgroup_dir(container: Container) -> str:
    if container.memory_events is None:
        raise AgentError("state", f"container {container.id!r} has no cgroup to read")
    return os.path.dirname(container.memory_events)


def _lines(path: str) -> list[str]:
    try:
        return read_text(path, 1 << 16).splitlines()
    except OSError:
        return []  # a controller the cgroup does not have: nothing used there


def _keyed(path: str) -> dict[str, int]:
    found = {}
    for line in _lines(path):
        name, _, value = line.partition(" ")
        found[name] = _int(value)
    return found


def _number(path: str) -> int:
    """A single-value cgroup file; "max" (no limit) and a missing file read as 0."""
    lines = _lines(path)
    return _int(lines[0]) if lines else 0


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _network() -> tuple[int, int]:
    """Bytes received and sent by the pod's interfaces (every container shares them)."""
    received = sent = 0
    try:
        names = os.listdir(SYS_NET)
    except OSError:
        return 0, 0
    for name in names:
        if name == "lo":
            continue
        received += _number(os.path.join(SYS_NET, name, "statistics", "rx_bytes"))
        sent += _number(os.path.join(SYS_NET, name, "statistics", "tx_bytes"))
    return received, sent
