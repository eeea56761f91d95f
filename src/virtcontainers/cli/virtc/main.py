"""virtc: a demo command-line interface over the virtcontainers API."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from virtcontainers import api
from virtcontainers.cli.signals import signal_number
from virtcontainers.cli.virtc import observe
from virtcontainers.cli.virtc.attach import attached_stdio, forwarded_signals, resize_on_winch
from virtcontainers.cli.virtc.blockvolumes import (
    block_volume_option,
    hotplug_slots_option,
    parse_block_volume,
)
from virtcontainers.cli.virtc.common import VcGroup, ensure_image, progress, query, stderr, stdout
from virtcontainers.cli.virtc.factory import factory
from virtcontainers.cli.virtc.options import (
    boot_option,
    container_config,
    forward_loopback_option,
    parse_mount,
)
from virtcontainers.cli.virtc.pod_net import pod_net
from virtcontainers.cli.virtc.resources import (
    container_stats,
    container_update,
    limit_options,
    limits_from,
)
from virtcontainers.cli.virtc.run import booting, run
from virtcontainers.config import (
    DEFAULT_PATH_ENV,
    Cmd,
    PodConfig,
    Resources,
)


@click.group(cls=VcGroup)
@click.option("--debug", is_flag=True, envvar="VC_DEBUG", help="Verbose pod daemon logs.")
def cli(debug: bool) -> None:
    """Run containers in lightweight VMs."""
    if debug:
        os.environ["VC_DEBUG"] = "1"


# --- image -------------------------------------------------------------------------------


@cli.group(cls=VcGroup)
def image() -> None:
    """The guest image (kernel, initrd, root filesystem)."""


@image.command("build")
@click.option("--kernel", type=click.Path(exists=True, path_type=Path), help="Use this kernel.")
@click.option("--initrd", type=click.Path(exists=True, path_type=Path), help="Use this initrd.")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
def image_build(kernel: Path | None, initrd: Path | None, force: bool) -> None:
    """Build (or find in the cache) the guest image and the busybox rootfs."""
    from virtcontainers.image import build_busybox_rootfs, build_image

    built = build_image(kernel=kernel, initrd=initrd, progress=progress, force=force)
    rootfs = build_busybox_rootfs(progress=progress)
    stdout.print(f"kernel  {built.kernel}\ninitrd  {built.initrd}\nrootfs  {built.rootfs}")
    stdout.print(f"busybox container rootfs  {rootfs}")


# --- pods ----------------------------------------------------------------------------------


@cli.group(cls=VcGroup)
def pod() -> None:
    """Pods: one VM each."""


@pod.command("create")
@click.argument("pod_id")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mib", type=int, default=512, show_default=True, help="MiB")
@click.option("--hostname")
@click.option("--kernel-param", "kernel_params", multiple=True, help="Extra kernel parameter.")
@click.option(
    "--netns",
    help="Network namespace (path) whose interfaces the pod's VM takes over.",
)
@forward_loopback_option
@boot_option
@hotplug_slots_option
def pod_create(
    pod_id: str,
    vcpus: int,
    memory_mib: int,
    hostname: str | None,
    kernel_params: tuple[str, ...],
    netns: str | None,
    forward_loopback: bool,
    boot: str,
    hotplug_slots: int,
) -> None:
    """Create a pod (its VM starts with `pod start`)."""
    config = PodConfig(
        id=pod_id,
        resources=Resources(vcpus=vcpus, memory_mib=memory_mib, hotplug_slots=hotplug_slots),
        hostname=hostname,
        kernel_params=kernel_params,
        netns=netns,
        forward_loopback=forward_loopback,
        boot=boot,
    )
    ensure_image()  # the pod records the image it will boot
    api.create_pod(config)
    stdout.print(pod_id)


@pod.command("start")
@click.argument("pod_id")
def pod_start(pod_id: str) -> None:
    """Boot the pod's VM and start its containers."""
    with booting(pod_id):
        api.start_pod(pod_id)


def _id_command(
    group: click.Group, name: str, action: Callable[..., object], summary: str, *ids: str
) -> None:
    """``virtc GROUP NAME ID...``: one API call on the pod or container the ids name."""

    def command(**given: str) -> None:
        action(*(given[name] for name in ids))

    for id_name in reversed(ids):
        command = click.argument(id_name)(command)
    group.command(name, help=summary)(command)


@pod.command("stop")
@click.argument("pod_id")
@click.option("--force", is_flag=True, help="Kill the pod's daemon and VM if they do not stop.")
def pod_stop(pod_id: str, force: bool) -> None:
    """Stop the pod's VM."""
    api.stop_pod(pod_id, force=force)


@pod.command("delete")
@click.argument("pod_id")
@click.option("--force", is_flag=True, help="Stop the pod first, forcibly if it must.")
def pod_delete(pod_id: str, force: bool) -> None:
    """Delete a pod (that is not running, without --force)."""
    api.delete_pod(pod_id, force=force)


@pod.command("enter")
@click.argument("pod_id")
@click.argument("command", nargs=-1, required=True)
@click.option("--interactive", "-i", is_flag=True, help="Connect stdin.")
@click.option("--tty", "-t", "use_tty", is_flag=True, help="Allocate a terminal.")
def pod_enter(pod_id: str, command: tuple[str, ...], interactive: bool, use_tty: bool) -> None:
    """Run a command in the pod's VM, outside containers; exit with its status."""
    with attached_stdio(interactive, use_tty) as stdio:
        handle = api.enter_pod(pod_id, Cmd(command, terminal=use_tty), stdio)
        exec_id = handle.exec_id
        with (
            forwarded_signals(lambda s: api.signal_process(pod_id, None, exec_id, s)),
            resize_on_winch(use_tty, lambda r, c: api.resize_terminal(pod_id, None, exec_id, r, c)),
        ):
            status = api.wait_process(pod_id, None, exec_id)
    sys.exit(status.exit_code)


@pod.command("list")
@query()
def pod_list(as_json: bool) -> None:
    """Every pod on this host."""
    pods = api.list_pods()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in pods], indent=1))
        return
    table = Table("POD", "STATE", "CONTAINERS", "VM PID", box=None)
    for status in pods:
        table.add_row(
            status.id, status.state.value, str(len(status.containers)), str(status.vm_pid or "-")
        )
    stdout.print(table)
    for error in api.list_pod_errors():
        stderr.print(f"virtc: {escape(str(error))}")


@pod.command("status")
@query("pod_id")
def pod_status(pod_id: str, as_json: bool) -> None:
    status = api.pod_status(pod_id)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=1))
        return
    stdout.print(f"pod {status.id}: {status.state.value}", highlight=False)
    if status.template:
        stdout.print(f"started from VM template {status.template}", highlight=False)
    if status.error:
        stdout.print(f"error: {status.error}", highlight=False)
    for container in status.containers:
        exit_text = f" exit {container.exit_code}" if container.exit_code is not None else ""
        stdout.print(f"  {container.id}: {container.state.value}{exit_text}", highlight=False)


# --- containers --------------------------------------------------------------------------------


@cli.group(cls=VcGroup)
def container() -> None:
    """Containers inside pods."""


container.add_command(container_update)
container.add_command(container_stats)
pod.add_command(observe.pod_events)
pod.add_command(pod_net)
cli.add_command(factory)
cli.add_command(run)
cli.add_command(observe.metrics)
cli.add_command(observe.top)


@container.command("create")
@click.argument("pod_id")
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True)
@click.option("--rootfs", type=click.Path(file_okay=False, path_type=Path))
@click.option("--env", "-e", "env", multiple=True, help="NAME=VALUE")
@click.option("--workdir", "-w", default="/")
@click.option("--volume", "-v", "volumes", multiple=True, help="HOST:CONTAINER[:ro]")
@block_volume_option
@limit_options
def container_create(
    pod_id: str,
    container_id: str,
    command: tuple[str, ...],
    rootfs: Path | None,
    env: tuple[str, ...],
    workdir: str,
    volumes: tuple[str, ...],
    block_volumes: tuple[str, ...],
    memory_limit: str | None,
    pids_limit: int | None,
    cpus: float | None,
) -> None:
    """Create a container; its output goes to the pod's log."""
    cmd = Cmd(command, env=(DEFAULT_PATH_ENV, *env), cwd=workdir)
    mounts = tuple(parse_mount(v) for v in volumes)
    limits = limits_from(memory_limit, pids_limit, cpus)
    config = container_config(container_id, rootfs, cmd, mounts, limits)
    disks = tuple(parse_block_volume(v) for v in block_volumes)
    api.create_container(pod_id, dataclasses.replace(config, block_volumes=disks))
    stdout.print(container_id)


@container.command("stop")
@click.argument("pod_id")
@click.argument("container_id")
@click.option("--timeout", "-t", type=int, default=10, show_default=True)
def container_stop(pod_id: str, container_id: str, timeout: int) -> None:
    """SIGTERM, then SIGKILL after the timeout."""
    api.stop_container(pod_id, container_id, timeout)


@cli.command("gc")
def gc() -> None:
    """Remove what pods left behind (safe beside running pods)."""
    report = api.collect_garbage()
    for line in report.removed:
        stdout.print(f"removed  {line}", highlight=False)
    for line in report.left:
        stdout.print(f"left     {line}", highlight=False)
    if not report.removed and not report.left:
        stdout.print("nothing to collect")


POD, CONTAINER = ("pod_id",), ("pod_id", "container_id")
SIMPLE_COMMANDS: tuple[
    tuple[click.Group, tuple[str, ...], str, Callable[..., object], str], ...
] = (
    (pod, POD, "pause", api.pause_pod, "Pause the pod's VM."),
    (pod, POD, "resume", api.resume_pod, "Resume a paused pod's VM."),
    (container, CONTAINER, "start", api.start_container, "Start a created container."),
    (container, CONTAINER, "delete", api.delete_container, "Delete a stopped container."),
    (container, CONTAINER, "pause", api.pause_container, "Freeze a running container."),
    (container, CONTAINER, "resume", api.resume_container, "Thaw a paused container."),
)
for _group, _ids, _name, _action, _summary in SIMPLE_COMMANDS:
    _id_command(_group, _name, _action, _summary, *_ids)


@container.command("status")
@query("pod_id", "container_id")
def container_status(pod_id: str, container_id: str, as_json: bool) -> None:
    status = api.container_status(pod_id, container_id)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=1))
    else:
        stdout.print(f"{status.id}: {status.state.value}", highlight=False)


def parse_signal(text: str) -> int:
    number = signal_number(text)
    if number is None:
        raise click.BadParameter(f"unknown signal {text!r}", param_hint="--signal")
    return number


@container.command("kill")
@click.argument("pod_id")
@click.argument("container_id")
@click.option("--signal", "-s", "signame", default="TERM", show_default=True)
@click.option("--all", "all_processes", is_flag=True, help="Every process of the container.")
def container_kill(pod_id: str, container_id: str, signame: str, all_processes: bool) -> None:
    api.kill_container(pod_id, container_id, parse_signal(signame), all_processes)


@container.command("wait")
@click.argument("pod_id")
@click.argument("container_id")
def container_wait(pod_id: str, container_id: str) -> None:
    """Wait for the container to exit; print and exit with its status."""
    status = api.wait_container(pod_id, container_id)
    click.echo(status.exit_code)
    sys.exit(status.exit_code)


@container.command("attach")
@click.argument("pod_id")
@click.argument("container_id")
def container_attach(pod_id: str, container_id: str) -> None:
    """Follow a running container's output; exit with its status when it ends."""
    api.attach_container(pod_id, container_id, api.Stdio(stdout=1, stderr=2))
    with forwarded_signals(lambda s: api.kill_container(pod_id, container_id, s)):
        status = api.wait_container(pod_id, container_id)
    sys.exit(status.exit_code)


@container.command("ps")
@click.argument("pod_id")
@click.argument("container_id")
def container_ps(pod_id: str, container_id: str) -> None:
    for process in api.list_processes(pod_id, container_id):
        click.echo(f"{process.pid}\t{' '.join(process.args)}")


@container.command("exec")
@click.argument("pod_id")
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True)
@click.option("--interactive", "-i", is_flag=True, help="Connect stdin.")
@click.option("--tty", "-t", "use_tty", is_flag=True, help="Allocate a terminal.")
def container_exec(
    pod_id: str, container_id: str, command: tuple[str, ...], interactive: bool, use_tty: bool
) -> None:
    """Run a command in a running container; exit with its status."""
    with attached_stdio(interactive, use_tty) as stdio:
        handle = api.enter_container(pod_id, container_id, Cmd(command, terminal=use_tty), stdio)
        exec_id = handle.exec_id
        with (
            forwarded_signals(lambda s: api.signal_process(pod_id, container_id, exec_id, s)),
            resize_on_winch(
                use_tty, lambda r, c: api.resize_terminal(pod_id, container_id, exec_id, r, c)
            ),
        ):
            status = api.wait_process(pod_id, container_id, exec_id)
    sys.exit(status.exit_code)


# --- run ---------------------------------------------------------------------------------


def main() -> None:
    cli(prog_name="virtc")


if __name__ == "__main__":
    main()
