"""virtc's resource options and commands: container limits, updates and usage."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from virtcontainers import api
from virtcontainers.cli.virtc.common import query, stdout
from virtcontainers.limits import Limits, parse_size


def limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--memory-limit, --pids-limit and --cpus; see :func:`limits_from`."""
    options = (
        click.option("--memory-limit", help="Container memory limit: 64M, 1G, ... (no swap)."),
        click.option("--pids-limit", type=int, help="Most processes the container may have."),
        click.option("--cpus", type=float, help="CPU time, in CPUs (0.5: half of one)."),
    )
    for option in options:
        command = option(command)
    return command


def limits_from(memory_limit: str | None, pids_limit: int | None, cpus: float | None) -> Limits:
    memory = parse_size("--memory-limit", memory_limit) if memory_limit is not None else None
    return Limits(memory_bytes=memory, pids=pids_limit, cpus=cpus)


@click.command("update")
@click.argument("pod_id")
@click.argument("container_id")
@limit_options
def container_update(
    pod_id: str,
    container_id: str,
    memory_limit: str | None,
    pids_limit: int | None,
    cpus: float | None,
) -> None:
    """Change a container's limits; those not given stay as they are."""
    limits = limits_from(memory_limit, pids_limit, cpus)
    if limits.empty:
        raise click.UsageError("give --memory-limit, --pids-limit or --cpus")
    api.update_container(pod_id, container_id, limits)


@click.command("stats")
@query("pod_id", "container_id")
def container_stats(pod_id: str, container_id: str, as_json: bool) -> None:
    """What a container uses now: CPU, memory, processes, I/O, network."""
    stats = api.container_stats(pod_id, container_id)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(stats)))
        return
    table = Table("figure", "value")
    for name, value in dataclasses.asdict(stats).items():
        table.add_row(name, _readable(name, value))
    stdout.print(table)


def _readable(name: str, value: int) -> str:
    if name.endswith("_bytes"):
        return f"{value / (1 << 20):.1f} MiB" if value else "0"
    if name.endswith("_ns"):
        return f"{value / 1e9:.3f} s"
    return str(value)
