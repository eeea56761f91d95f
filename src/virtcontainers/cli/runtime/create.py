"""vc-runtime's ``create``, ``start`` and ``run``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from virtcontainers.cli.runtime.lifecycle import (
    clean_up_on_sigterm,
    create_container,
    delete_record,
    destroy,
    options_of,
    start_created,
)
from virtcontainers.cli.runtime.state import Record


@click.command()
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=Path("."))
@click.option("--pid-file", type=click.Path(path_type=Path))
@click.option("--console-socket", type=click.Path(path_type=Path))
@click.option("--no-pivot", is_flag=True, help="Accepted; crun in the VM always pivots.")
@click.option("--no-new-keyring", is_flag=True, help="Accepted.")
@click.option("--preserve-fds", type=int, default=0)
@click.argument("container_id")
@click.pass_context
def create(
    ctx: click.Context,
    bundle: Path,
    pid_file: Path | None,
    console_socket: Path | None,
    no_pivot: bool,
    no_new_keyring: bool,
    preserve_fds: int,
    container_id: str,
) -> None:
    """Create a container (its process waits for `start`)."""
    clean_up_on_sigterm()
    create_container(options_of(ctx), container_id, bundle, pid_file, console_socket, preserve_fds)


@click.command()
@click.argument("container_id")
@click.pass_context
def start(ctx: click.Context, container_id: str) -> None:
    """Start a created container."""
    options = options_of(ctx)
    start_created(Record.load(options.root, container_id))


@click.command()
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=Path("."))
@click.option("--pid-file", type=click.Path(path_type=Path))
@click.option("--console-socket", type=click.Path(path_type=Path))
@click.option("--detach", "-d", is_flag=True)
@click.option("--no-pivot", is_flag=True)
@click.option("--no-new-keyring", is_flag=True)
@click.option("--preserve-fds", type=int, default=0)
@click.argument("container_id")
@click.pass_context
def run(
    ctx: click.Context,
    bundle: Path,
    pid_file: Path | None,
    console_socket: Path | None,
    detach: bool,
    no_pivot: bool,
    no_new_keyring: bool,
    preserve_fds: int,
    container_id: str,
) -> None:
    """Create and start a container; without --detach, wait and exit with its status."""
    options = options_of(ctx)
    clean_up_on_sigterm()
    record, shim = create_container(
        options, container_id, bundle, pid_file, console_socket, preserve_fds
    )
    try:
        start_created(record)
    except BaseException:
        destroy(record, force=True)
        record.remove(options.root)
        raise
    if detach:
        return
    code = shim.wait()
    delete_record(options, record, force=True)
    sys.exit(code)
