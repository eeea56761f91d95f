"""vc-runtime's resource commands: ``update`` and the stats of ``events``, as runc has them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from virtcontainers import api
from virtcontainers.agent.results import ContainerStats
from virtcontainers.cli.runtime.state import Options, Record, RuntimeCommandError, log_event
from virtcontainers.errors import ConfigError, RuntimeSpecError, VcError
from virtcontainers.limits import Limits, parse_size
from virtcontainers.oci.resources import update_limits

# linux.resources settings an update carries that the VM's containers cannot
# change after creation here: logged, not applied (the CRI sends them every time).
NOT_UPDATED = {
    "memory": ("reservation", "kernel", "kernelTCP", "swappiness", "disableOOMKiller"),
    "cpu": ("shares", "cpus", "mems", "realtimeRuntime", "realtimePeriod", "idle", "burst"),
}
REFUSED_FLAGS = (
    "blkio_weight", "cpu_share", "cpu_rt_period", "cpu_rt_runtime", "cpuset_cpus",
    "cpuset_mems", "kernel_memory", "kernel_memory_tcp", "memory_reservation",
    "l3_cache_schema", "mem_bw_schema",
)  # fmt: skip


def update_options(command: Any) -> Any:
    options = [
        click.option(
            "--resources", "-r", "resources_file", help="linux.resources JSON ('-': stdin)"
        ),
        click.option("--memory"),
        click.option("--memory-swap"),
        click.option("--cpu-quota", type=int),
        click.option("--cpu-period", type=int),
        click.option("--pids-limit", type=int),
        *(click.option(f"--{flag.replace('_', '-')}", flag, hidden=True) for flag in REFUSED_FLAGS),
    ]
    for option in options:
        command = option(command)
    return command


def limits_from_flags(flags: Mapping[str, Any], options: Options, container_id: str) -> Limits:
    """runc update's flags, or its --resources document, as Limits."""
    refused = [f"--{name.replace('_', '-')}" for name in REFUSED_FLAGS if flags.get(name)]
    if refused:
        raise RuntimeCommandError(f"update: {', '.join(refused)} cannot be changed in a VM here")
    if flags.get("resources_file"):
        return limits_from_resources(
            _read_resources(flags["resources_file"]), options, container_id
        )
    # The flags say what a --resources document says, and are read the same way.
    document = {
        "memory": {"limit": _bytes("--memory", flags.get("memory"))},
        "cpu": {"quota": flags.get("cpu_quota"), "period": flags.get("cpu_period")},
        "pids": {"limit": flags.get("pids_limit")},
    }
    return limits_from_resources(document, options, container_id)


def limits_from_resources(
    resources: Mapping[str, Any], options: Options, container_id: str
) -> Limits:
    for group, names in NOT_UPDATED.items():
        values = resources.get(group) or {}
        for name in names:
            if values.get(name) not in (None, 0, "", False):
                log_event(options, "warning", f"{container_id}: {group}.{name} is not updated")
    try:
        return update_limits(resources, "update")
    except RuntimeSpecError as exc:
        raise RuntimeCommandError(str(exc)) from None


def _read_resources(source: str) -> Mapping[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        raise RuntimeCommandError(f"update: cannot read resources from {source}: {exc}") from None
    if not isinstance(document, dict):
        raise RuntimeCommandError(f"update: {source} is not a JSON object")
    return document


def _bytes(flag: str, text: str | None) -> int | None:
    if text is None or text in ("", "-1"):
        return None
    try:
        return parse_size(flag, text)
    except ConfigError as exc:
        raise RuntimeCommandError(str(exc)) from None


def update(options: Options, container_id: str, flags: Mapping[str, Any]) -> None:
    record = Record.load(options.root, container_id)
    limits = limits_from_flags(flags, options, container_id)
    if not limits.empty:
        api.update_container(record.pod_id, record.id, limits)


def runc_stats(container_id: str, stats: ContainerStats) -> dict[str, object]:
    """A stats event, shaped as runc's ``events --stats`` prints it."""
    data = {
        "cpu": {
            "usage": {
                "total": stats.cpu_usage_ns,
                "kernel": stats.cpu_system_ns,
                "user": stats.cpu_user_ns,
            }
        },
        "memory": {
            "usage": {"usage": stats.memory_bytes, "limit": stats.memory_limit_bytes},
            "cache": stats.memory_cache_bytes,
        },
        "pids": {"current": stats.pids, "limit": stats.pids_limit},
        "blkio": {
            "ioServiceBytesRecursive": [
                {"op": "Read", "value": stats.io_read_bytes},
                {"op": "Write", "value": stats.io_write_bytes},
            ]
        },
        "network_interfaces": [
            {"name": "pod", "rx_bytes": stats.network_rx_bytes, "tx_bytes": stats.network_tx_bytes}
        ],
    }
    return {"type": "stats", "id": container_id, "data": data}


def echo_ooms(record: Record, seen: int, interval: float) -> int:
    """Print the container's OOM events (as runc: ``{"type": "oom", "id": ID}``)
    that come within ``interval`` seconds; return the last event number seen."""
    deadline = time.monotonic() + interval
    while (left := deadline - time.monotonic()) > 0:
        try:
            events = api.pod_events(record.pod_id, seen, max(1, round(left)))
        except VcError:
            time.sleep(left)  # the pod is going: the caller's next status check says so
            return seen
        for event in events:
            seen = event.seq
            if event.kind == "oom" and event.container_id == record.id:
                click.echo(json.dumps({"type": "oom", "id": record.id}))
    return seen
