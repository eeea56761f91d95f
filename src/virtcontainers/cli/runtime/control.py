"""vc-runtime's ``kill``, ``pause``, ``resume``, ``update`` and ``delete``: a
container changed or ended."""

from __future__ import annotations

import click

from virtcontainers import api
from virtcontainers.cli.runtime import resources as runtime_resources
from virtcontainers.cli.runtime.lifecycle import delete_record, options_of
from virtcontainers.cli.runtime.state import Record, RuntimeCommandError, oci_status
from virtcontainers.cli.signals import signal_number


def parse_signal(text: str) -> int:
    number = signal_number(text)
    if number is None:
        raise RuntimeCommandError(f"unknown signal {text!r}")
    return number


@click.command()
@click.option("--all", "-a", "all_processes", is_flag=True)
@click.argument("container_id")
@click.argument("signame", default="SIGTERM")
@click.pass_context
def kill(ctx: click.Context, all_processes: bool, container_id: str, signame: str) -> None:
    """Send a signal (name or number) to the container's process."""
    signum = parse_signal(signame)
    record = Record.load(options_of(ctx).root, container_id)
    if oci_status(record) not in ("created", "running", "paused"):
        raise RuntimeCommandError("container not running")
    api.kill_container(record.pod_id, record.id, signum, all_processes)


def _toggle_pause(ctx: click.Context, container_id: str, pause: bool) -> None:
    record = Record.load(options_of(ctx).root, container_id)
    needed = "running" if pause else "paused"
    if oci_status(record) != needed:
        raise RuntimeCommandError(f"container {container_id} is not {needed}")
    action = api.pause_container if pause else api.resume_container
    action(record.pod_id, record.id)


@click.command()
@click.argument("container_id")
@click.pass_context
def pause(ctx: click.Context, container_id: str) -> None:
    """Freeze the container's processes."""
    _toggle_pause(ctx, container_id, pause=True)


@click.command()
@click.argument("container_id")
@click.pass_context
def resume(ctx: click.Context, container_id: str) -> None:
    """Thaw the container's processes."""
    _toggle_pause(ctx, container_id, pause=False)


@click.command()
@runtime_resources.update_options
@click.argument("container_id")
@click.pass_context
def update(ctx: click.Context, /, container_id: str, **flags: object) -> None:
    """Change a container's memory, CPU and pids limits (flags, or -r resources.json)."""
    runtime_resources.update(options_of(ctx), container_id, flags)


@click.command()
@click.option("--force", "-f", is_flag=True, help="Kill the container first if it runs.")
@click.argument("container_id")
@click.pass_context
def delete(ctx: click.Context, force: bool, container_id: str) -> None:
    """Delete a stopped container (any container with --force)."""
    options = options_of(ctx)
    try:
        record = Record.load(options.root, container_id)
    except RuntimeCommandError:
        if force:
            return
        raise
    delete_record(options, record, force)
