"""vc-runtime's ``state``, ``list``, ``ps`` and ``events``: what a container is and does."""

from __future__ import annotations

import json

import click

from virtcontainers import api
from virtcontainers.cli.runtime import resources as runtime_resources
from virtcontainers.cli.runtime.lifecycle import options_of, records_of
from virtcontainers.cli.runtime.state import Record, RuntimeCommandError, oci_status, state_document


@click.command()
@click.argument("container_id")
@click.pass_context
def state(ctx: click.Context, container_id: str) -> None:
    """Print the container's state as OCI JSON."""
    record = Record.load(options_of(ctx).root, container_id)
    click.echo(json.dumps(state_document(record), indent=2))


@click.command("list")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def list_containers(ctx: click.Context, fmt: str, quiet: bool) -> None:
    """List containers started by vc-runtime with this --root."""
    states = [state_document(r) for r in records_of(options_of(ctx))]
    if quiet:
        for item in states:
            click.echo(item["id"])
    elif fmt == "json":
        click.echo(json.dumps(states))
    else:
        click.echo(f"{'ID':<24}{'PID':<10}{'STATUS':<10}{'BUNDLE':<40}{'CREATED':<34}OWNER")
        for item in states:
            click.echo(
                f"{item['id']:<24}{item['pid']:<10}{item['status']:<10}"
                f"{item['bundle']:<40}{item['created']:<34}root"
            )


@click.command()
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1)
@click.pass_context
def ps(ctx: click.Context, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """Processes of the container (pids are the guest's)."""
    record = Record.load(options_of(ctx).root, container_id)
    if oci_status(record) not in ("running", "paused"):
        raise RuntimeCommandError(f"container {container_id} is not running")
    processes = api.list_processes(record.pod_id, record.id)
    if fmt == "json":
        click.echo(json.dumps([p.pid for p in processes]))
        return
    click.echo("PID\tCMD")
    for process in processes:
        click.echo(f"{process.pid}\t{' '.join(process.args)}")


@click.command()
@click.option("--stats", is_flag=True, help="Print one stats event and exit.")
@click.option("--interval", type=float, default=5.0, show_default=True)
@click.argument("container_id")
@click.pass_context
def events(ctx: click.Context, stats: bool, interval: float, container_id: str) -> None:
    """Stats events for the container, as runc prints them, until it stops."""
    record = Record.load(options_of(ctx).root, container_id)
    seen = 0
    while True:
        status = oci_status(record)
        if status not in ("running", "paused", "created"):
            if stats:
                raise RuntimeCommandError(f"container {container_id} is not running")
            return
        usage = api.container_stats(record.pod_id, record.id)
        click.echo(json.dumps(runtime_resources.runc_stats(container_id, usage)), nl=True)
        if stats:
            return
        seen = runtime_resources.echo_ooms(record, seen, interval)
