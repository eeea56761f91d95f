"""vc-runtime's ``exec``: a process run in a running container, attached to
this command or, detached or with a console socket, to a pid-file shim."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from virtcontainers import api
from virtcontainers.cli.runtime.lifecycle import options_of
from virtcontainers.cli.runtime.pidshim import ShimRequest
from virtcontainers.cli.runtime.process import start_shim, write_pid_file
from virtcontainers.cli.runtime.state import Record, RuntimeCommandError, oci_status
from virtcontainers.config import DEFAULT_PATH_ENV, Cmd, User


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--process", "-p", "process_file", type=click.Path(path_type=Path))
@click.option("--tty", "-t", is_flag=True)
@click.option("--detach", "-d", is_flag=True)
@click.option("--pid-file", type=click.Path(path_type=Path))
@click.option("--console-socket", type=click.Path(path_type=Path))
@click.option("--cwd")
@click.option("--env", "-e", multiple=True)
@click.option("--user", "-u")
@click.option("--preserve-fds", type=int, default=0)
@click.argument("container_id")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context,
    process_file: Path | None,
    tty: bool,
    detach: bool,
    pid_file: Path | None,
    console_socket: Path | None,
    cwd: str | None,
    env: tuple[str, ...],
    user: str | None,
    preserve_fds: int,
    container_id: str,
    command: tuple[str, ...],
) -> None:
    """Run a process in a running container."""
    options = options_of(ctx)
    record = Record.load(options.root, container_id)
    if oci_status(record) != "running":
        raise RuntimeCommandError(f"cannot exec in a container that is not running: {container_id}")
    cmd = _exec_cmd(process_file, command, tty, cwd, env, user)
    if cmd.terminal and console_socket is None and detach:
        raise RuntimeCommandError(
            "cannot allocate tty if runc will detach without setting console socket"
        )
    if detach or console_socket is not None:
        request: ShimRequest = {
            "pod_id": record.pod_id,
            "exec": {"container_id": record.id, "cmd": cmd.to_dict()},
        }
        shim = start_shim(request, console_socket if cmd.terminal else None)
        if pid_file is not None:
            write_pid_file(pid_file, shim.pid)
        if detach:
            return
        sys.exit(shim.wait())
    stdio = api.Stdio(stdin=0, stdout=1, stderr=None if cmd.terminal else 2)
    handle = api.enter_container(record.pod_id, record.id, cmd, stdio)
    if pid_file is not None:
        write_pid_file(pid_file, os.getpid())
    sys.exit(api.wait_process(record.pod_id, record.id, handle.exec_id).exit_code)


def _exec_cmd(
    process_file: Path | None,
    command: tuple[str, ...],
    tty: bool,
    cwd: str | None,
    env: tuple[str, ...],
    user: str | None,
) -> Cmd:
    from virtcontainers import oci

    if process_file is not None:
        try:
            process = json.loads(process_file.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise RuntimeCommandError(f"{process_file}: {exc}") from exc
        return oci.process_from_json(process, str(process_file))
    if not command:
        raise RuntimeCommandError("exec needs a command, or --process")
    return Cmd(
        tuple(command),
        env=(DEFAULT_PATH_ENV, *env),
        cwd=cwd or "/",
        user=User.parse(user) if user else User(),
        terminal=tty,
    )
