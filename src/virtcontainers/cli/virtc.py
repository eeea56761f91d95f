"""virtc: a demo command-line interface over the virtcontainers API."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.table import Table

from virtcontainers import api
from virtcontainers.cli import observe
from virtcontainers.cli.common import VcGroup, ensure_image, fail, progress, stderr, stdout
from virtcontainers.cli.factory_cli import factory
from virtcontainers.cli.pod_net import pod_net
from virtcontainers.cli.resources import (
    container_stats,
    container_update,
    limit_options,
    limits_from,
)
from virtcontainers.cli.signals import signal_number
from virtcontainers.config import (
    BOOT_MODES,
    DEFAULT_PATH_ENV,
    Cmd,
    ContainerConfig,
    Mount,
    PodConfig,
    Resources,
)
from virtcontainers.errors import VcError
from virtcontainers.hostproc import ProcessRef
from virtcontainers.limits import Limits
from virtcontainers.store import Store
from virtcontainers.timings import Timings, mark, timed_stdout

RUN_CONTAINER_ID = "main"


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


def container_config(
    container_id: str,
    rootfs: Path | None,
    cmd: Cmd,
    mounts: tuple[Mount, ...],
    limits: Limits | None = None,
) -> ContainerConfig:
    """A container on ``rootfs``, or on the built busybox rootfs with a layer of its own.

    The busybox rootfs is one directory for every pod: it stays read-only, and
    each container's writes go to its own layer, deleted with the container.
    """
    limits = limits or Limits()
    if rootfs is not None:
        return ContainerConfig(container_id, rootfs.resolve(), cmd, mounts, limits=limits)
    from virtcontainers.image import build_busybox_rootfs

    base = build_busybox_rootfs(progress=progress)
    return ContainerConfig(container_id, base, cmd, mounts, writable_layer=True, limits=limits)


def boot_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--boot auto|template|cold (PodConfig.boot)."""
    return click.option(
        "--boot",
        type=click.Choice(BOOT_MODES),
        default="auto",
        show_default=True,
        help="Start the VM from a template (virtc factory init), boot it cold, or "
        "take a template when one fits.",
    )(command)


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
@boot_option
def pod_create(
    pod_id: str,
    vcpus: int,
    memory_mib: int,
    hostname: str | None,
    kernel_params: tuple[str, ...],
    netns: str | None,
    boot: str,
) -> None:
    """Create a pod (its VM starts with `pod start`)."""
    config = PodConfig(
        id=pod_id,
        resources=Resources(vcpus=vcpus, memory_mib=memory_mib),
        hostname=hostname,
        kernel_params=kernel_params,
        netns=netns,
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
@click.option("--json", "as_json", is_flag=True)
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
        stderr.print(f"virtc: {error}")


@pod.command("status")
@click.argument("pod_id")
@click.option("--json", "as_json", is_flag=True)
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


def parse_mount(text: str) -> Mount:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise click.BadParameter(f"{text!r} is not HOST:CONTAINER[:ro|rw]", param_hint="--volume")
    return Mount(parts[0], parts[1], read_only=len(parts) == 3 and parts[2] == "ro")


@cli.group(cls=VcGroup)
def container() -> None:
    """Containers inside pods."""


container.add_command(container_update)
container.add_command(container_stats)
pod.add_command(observe.pod_events)
pod.add_command(pod_net)
cli.add_command(factory)
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
@limit_options
def container_create(
    pod_id: str,
    container_id: str,
    command: tuple[str, ...],
    rootfs: Path | None,
    env: tuple[str, ...],
    workdir: str,
    volumes: tuple[str, ...],
    memory_limit: str | None,
    pids_limit: int | None,
    cpus: float | None,
) -> None:
    """Create a container; its output goes to the pod's log."""
    cmd = Cmd(command, env=(DEFAULT_PATH_ENV, *env), cwd=workdir)
    mounts = tuple(parse_mount(v) for v in volumes)
    limits = limits_from(memory_limit, pids_limit, cpus)
    api.create_container(pod_id, container_config(container_id, rootfs, cmd, mounts, limits))
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
@click.argument("pod_id")
@click.argument("container_id")
@click.option("--json", "as_json", is_flag=True)
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


@contextlib.contextmanager
def attached_stdio(interactive: bool, use_tty: bool) -> Iterator[api.Stdio]:
    """Our own fds for the process; with a terminal, raw mode while it runs."""
    if use_tty and not os.isatty(0):
        fail("--tty needs a terminal on stdin")
    if not use_tty:
        yield api.Stdio(stdin=0 if interactive else None, stdout=1, stderr=2)
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield api.Stdio(stdin=0, stdout=1)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def forwarded_signals(forward: Callable[[int], None]) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP to us go to the process in the VM instead."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(VcError):
            forward(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def resize_on_winch(use_tty: bool, resize: Callable[[int, int], None]) -> Iterator[None]:
    if not use_tty:
        yield
        return

    def apply(*_args: object) -> None:
        size = os.get_terminal_size(0)
        with contextlib.suppress(VcError):
            resize(size.lines, size.columns)

    previous = signal.signal(signal.SIGWINCH, apply)
    apply()
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def booting(pod_id: str) -> contextlib.AbstractContextManager[object]:
    """A spinner while the VM boots, on a terminal only: stderr stays clean in scripts."""
    if not stderr.is_terminal:
        return contextlib.nullcontext()
    return stderr.status(f"starting pod {pod_id} (a VM)")


@cli.command("run")
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
@click.option(
    "--netns",
    help="Network namespace (path) whose interfaces the pod's VM takes over.",
)
@boot_option
@limit_options
@click.option(
    "--timings", "show_timings", is_flag=True, help="Print how long each step took (stderr)."
)
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
    netns: str | None,
    boot: str,
    memory_limit: str | None,
    pids_limit: int | None,
    cpus: float | None,
    show_timings: bool,
) -> None:
    """Run COMMAND in a container in a new pod; exit with its status.

    With --rm the pod is deleted afterwards, also when virtc itself is killed:
    the pod's daemon stops and deletes a pod whose owner process is gone.
    """
    timings = Timings() if show_timings else None
    mark(timings, "CLI imported, arguments parsed")
    if pod_id is None:
        pod_id = f"run-{secrets.token_hex(4)}"
    try:
        cmd = Cmd(command, env=(DEFAULT_PATH_ENV, *env), terminal=use_tty)
        mounts = tuple(parse_mount(v) for v in volumes)
        limits = limits_from(memory_limit, pids_limit, cpus)
        run_container_config = container_config(RUN_CONTAINER_ID, rootfs, cmd, mounts, limits)
        config = PodConfig(
            id=pod_id,
            resources=Resources(vcpus=vcpus, memory_mib=memory_mib),
            netns=netns,
            boot=boot,
        )
        ensure_image()
        owner = ProcessRef.of(os.getpid()) if remove else None
        mark(timings, "config made, image found")
        with booting(pod_id):
            api.run_pod(config, owner=owner)
        mark(timings, "run_pod returned: pod running")
        if timings is not None:
            timings.add_daemon_log(Store().paths(pod_id).log)
    except VcError as exc:
        fail(str(exc), 125)
    try:
        code = _run_container(pod_id, run_container_config, interactive, use_tty, timings)
    finally:
        if timings is not None:
            stderr.print(timings.render(), highlight=False, markup=False)
        with contextlib.suppress(VcError):
            api.stop_pod(pod_id)
        if remove:
            try:
                api.delete_pod(pod_id)
            except VcError as exc:
                stderr.print(f"[bold red]virtc: error:[/] {exc}", highlight=False)
    sys.exit(code)


def _run_container(
    pod_id: str,
    config: ContainerConfig,
    interactive: bool,
    use_tty: bool,
    timings: Timings | None = None,
) -> int:
    try:
        with (
            attached_stdio(interactive, use_tty) as ours,
            timed_stdout(timings, ours.stdout) as out,
        ):
            stdio = api.Stdio(stdin=ours.stdin, stdout=out, stderr=ours.stderr)
            api.create_container(pod_id, config, stdio)
            mark(timings, "container created")
            api.start_container(pod_id, config.id)
            mark(timings, "container started")
            with (
                forwarded_signals(lambda s: api.kill_container(pod_id, config.id, s)),
                resize_on_winch(
                    use_tty, lambda r, c: api.resize_terminal(pod_id, config.id, None, r, c)
                ),
            ):
                status = api.wait_container(pod_id, config.id)
            mark(timings, "container exited")
        if status.error:  # ended with its VM, not on its own: say why
            stderr.print(f"[bold red]virtc:[/] pod {pod_id}: {status.error}", highlight=False)
        elif api.container_status(pod_id, config.id).oom_killed:
            stderr.print(
                f"[bold red]virtc:[/] container {config.id}: killed for running out of memory",
                highlight=False,
            )
        return status.exit_code
    except VcError as exc:
        stderr.print(f"[bold red]virtc: error:[/] {exc}", highlight=False)
        return 125


def main() -> None:
    cli(prog_name="virtc")


if __name__ == "__main__":
    main()
