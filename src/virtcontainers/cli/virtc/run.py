"""``virtc run``: a command in a container in a new pod, attached to the terminal."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import sys
from pathlib import Path

import click

from virtcontainers import api
from virtcontainers.cli.virtc.attach import (
    attached_stdio,
    forwarded_signals,
    noting_first_output,
    resize_on_winch,
)
from virtcontainers.cli.virtc.blockvolumes import block_volume_option, parse_block_volume
from virtcontainers.cli.virtc.common import ensure_image, error, fail, stderr
from virtcontainers.cli.virtc.options import (
    boot_option,
    container_config,
    forward_loopback_option,
    parse_mount,
)
from virtcontainers.cli.virtc.resources import limit_options, limits_from
from virtcontainers.cli.virtc.timings import Timings
from virtcontainers.config import DEFAULT_PATH_ENV, Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import VcError
from virtcontainers.host import proc as hostproc

RUN_CONTAINER_ID = "main"


def booting(pod_id: str) -> contextlib.AbstractContextManager[object]:
    """A spinner while the VM boots, on a terminal only: stderr stays clean in scripts."""
    if not stderr.is_terminal:
        return contextlib.nullcontext()
    return stderr.status(f"starting pod {pod_id} (a VM)")


@click.command("run")
@click.argument("command", nargs=-1, required=True)
@click.option("--rm", "remove", is_flag=True, help="Delete the pod afterwards.")
@click.option("--interactive", "-i", is_flag=True, help="Connect stdin.")
@click.option("--tty", "-t", "use_tty", is_flag=True, help="Allocate a terminal.")
@click.option("--rootfs", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", "pod_id", help="Pod id (default: a random one).")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mib", type=int, default=512, show_default=True, help="MiB")
@click.option("--env", "-e", "env", multiple=True, help="NAME=VALUE")
@click.option("--volume", "-v", "volumes", multiple=True, help="HOST:CONTAINER[:ro]")
@block_volume_option
@click.option(
    "--netns",
    help="Network namespace (path) whose interfaces the pod's VM takes over.",
)
@forward_loopback_option
@boot_option
@limit_options
@click.option("--timings", is_flag=True, help="Print on stderr where the time went, step by step.")
def run(
    command: tuple[str, ...],
    remove: bool,
    interactive: bool,
    use_tty: bool,
    rootfs: Path | None,
    pod_id: str | None,
    vcpus: int,
    memory_mib: int,
    env: tuple[str, ...],
    volumes: tuple[str, ...],
    block_volumes: tuple[str, ...],
    netns: str | None,
    forward_loopback: bool,
    boot: str,
    memory_limit: str | None,
    pids_limit: int | None,
    cpus: float | None,
    timings: bool,
) -> None:
    """Run COMMAND in a container in a new pod; exit with its status.

    With --rm the pod is deleted afterwards, also when virtc itself is killed:
    the pod's daemon stops and deletes a pod whose owner process is gone.
    """
    clock = Timings.since_process_start() if timings else None
    _mark(clock, "command line parsed")
    if pod_id is None:
        pod_id = f"run-{secrets.token_hex(4)}"
    try:
        cmd = Cmd(command, env=(DEFAULT_PATH_ENV, *env), terminal=use_tty)
        mounts = tuple(parse_mount(v) for v in volumes)
        limits = limits_from(memory_limit, pids_limit, cpus)
        disks = tuple(parse_block_volume(v) for v in block_volumes)
        run_container_config = dataclasses.replace(
            container_config(RUN_CONTAINER_ID, rootfs, cmd, mounts, limits), block_volumes=disks
        )
        # The container joins after boot: keep it a slot per disk.
        resources = Resources(vcpus=vcpus, memory_mib=memory_mib, hotplug_slots=len(disks))
        config = PodConfig(
            id=pod_id,
            resources=resources,
            netns=netns,
            forward_loopback=forward_loopback,
            boot=boot,
        )
        ensure_image()
        owner = hostproc.current() if remove else None
        with booting(pod_id):
            api.run_pod(config, owner=owner)
    except VcError as exc:
        fail(str(exc), 125)
    try:
        code = _run_container(pod_id, run_container_config, interactive, use_tty, clock)
        if clock is not None:
            _print_timings(pod_id, clock)
    finally:
        with contextlib.suppress(VcError):
            api.stop_pod(pod_id)
        if remove:
            try:
                api.delete_pod(pod_id)
            except VcError as exc:
                error(str(exc))
    sys.exit(code)


def _run_container(
    pod_id: str,
    config: ContainerConfig,
    interactive: bool,
    use_tty: bool,
    clock: Timings | None = None,
) -> int:
    try:
        with (
            attached_stdio(interactive, use_tty) as stdio,
            _timed_output(stdio, clock, use_tty) as piped,
        ):
            api.create_container(pod_id, config, piped)
            _mark(clock, "container created")
            api.start_container(pod_id, config.id)
            _mark(clock, "container started")
            with (
                forwarded_signals(lambda s: api.kill_container(pod_id, config.id, s)),
                resize_on_winch(
                    use_tty, lambda r, c: api.resize_terminal(pod_id, config.id, None, r, c)
                ),
            ):
                status = api.wait_container(pod_id, config.id)
            _mark(clock, "container exited")
        if status.error:  # ended with its VM, not on its own: say why
            error(f"pod {pod_id}: {status.error}", "virtc:")
        elif api.container_status(pod_id, config.id).oom_killed:
            error(f"container {config.id}: killed for running out of memory", "virtc:")
        return status.exit_code
    except VcError as exc:
        error(str(exc))
        return 125


def _mark(clock: Timings | None, step: str) -> None:
    if clock is not None:
        clock.mark(step)


def _timed_output(
    stdio: api.Stdio, clock: Timings | None, use_tty: bool
) -> contextlib.AbstractContextManager[api.Stdio]:
    """The container's stdio; with timings (and no terminal), its first output noted."""
    if clock is None or use_tty:
        return contextlib.nullcontext(stdio)
    return noting_first_output(stdio, lambda: clock.mark("first output"))


def _print_timings(pod_id: str, clock: Timings) -> None:
    with contextlib.suppress(VcError):  # the pod's steps are lost with its daemon
        clock.add_pod_events(api.pod_events(pod_id, after=0, timeout=0))
    for line in clock.render():
        stderr.print(line, highlight=False, markup=False, soft_wrap=True)  # a table: never wrapped
