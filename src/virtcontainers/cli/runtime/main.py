"""vc-runtime: a runc-compatible OCI runtime; each container runs in a VM.

It translates the OCI runtime CLI into virtcontainers API calls.  A container
gets a pod of its own unless CRI annotations put it in a sandbox's pod.  Its
own bookkeeping (which pod, bundle, shim pid) lives in ``--root``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from virtcontainers import api
from virtcontainers.cli.runtime import resources as runtime_resources
from virtcontainers.cli.runtime import rootdisk
from virtcontainers.cli.runtime.failures import RuntimeGroup
from virtcontainers.cli.runtime.pidshim import ShimRequest
from virtcontainers.cli.runtime.process import check_console, start_shim, write_pid_file
from virtcontainers.cli.runtime.state import (
    DEFAULT_ROOT,
    Options,
    Record,
    RuntimeCommandError,
    creates_serialised,
    log_event,
    oci_status,
    state_document,
)
from virtcontainers.cli.signals import signal_number
from virtcontainers.config import DEFAULT_PATH_ENV, Cmd, PodConfig, User
from virtcontainers.errors import ExistsError, NotFoundError, StateError
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cgroup import HostCgroup
from virtcontainers.ids import validate_id
from virtcontainers.spec import OCI_VERSION
from virtcontainers.states import ContainerState, PodState
from virtcontainers.storage import blockdev
from virtcontainers.storage.blockdev import BlockMount

if TYPE_CHECKING:
    from virtcontainers.oci.namespaces import Peer


@click.group(cls=RuntimeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True)
@click.option("--log", type=click.Path(path_type=Path), help="Log file (errors go there too).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--debug", is_flag=True)
@click.option("--systemd-cgroup", is_flag=True, help="Accepted; the guest uses cgroupfs.")
@click.option("--rootless", default="auto", help="Accepted; vc-runtime runs as root.")
@click.option("--criu", default="criu", help="Accepted; checkpointing is not supported.")
@click.version_option(
    "0.1.0", prog_name="vc-runtime", message=f"%(prog)s version %(version)s\nspec: {OCI_VERSION}"
)
@click.pass_context
def cli(
    ctx: click.Context,
    root: Path,
    log: Path | None,
    log_format: str,
    debug: bool,
    systemd_cgroup: bool,
    rootless: str,
    criu: str,
) -> None:
    """A runc-compatible OCI runtime that runs each container in a VM."""
    ctx.obj = Options(root=root, log=log, log_format=log_format, debug=debug)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeCommandError(
            f"--root {root}: cannot use it as the state directory: {exc.strerror}"
        ) from None


def _options(ctx: click.Context) -> Options:
    options = ctx.obj
    assert isinstance(options, Options)
    return options


# --- create / start / run ----------------------------------------------------------------------


def _create(
    options: Options,
    container_id: str,
    bundle_dir: Path,
    pid_file: Path | None,
    console_socket: Path | None,
    preserve_fds: int,
) -> tuple[Record, subprocess.Popen[bytes]]:
    from virtcontainers import oci

    validate_id("container", container_id)
    bundle = oci.load_bundle(bundle_dir.resolve()).resolve_namespaces(_peer_finder(options))
    for warning in bundle.warnings:
        log_event(options, "warning", f"{container_id}: {warning}")
    if preserve_fds:
        log_event(options, "warning", f"{container_id}: --preserve-fds cannot reach a VM; ignored")
    config = bundle.container_config(container_id)
    check_console(config.cmd.terminal, console_socket)
    owns_pod = bundle.role is not oci.PodRole.CONTAINER
    root_disk = rootdisk.block_rootfs_at(bundle.rootfs) if owns_pod else None
    if root_disk is not None:
        config = blockdev.on_the_device(config, root_disk.device, root_disk.fstype)
    pod_id = container_id if bundle.sandbox_id is None else bundle.sandbox_id
    if not owns_pod and api.pod_status(pod_id).state is not PodState.RUNNING:
        raise RuntimeCommandError(f"sandbox {pod_id} of container {container_id} is not running")
    record = Record(
        id=container_id,
        pod_id=pod_id,
        bundle=str(bundle.path),
        rootfs=str(bundle.rootfs),
        created=datetime.datetime.now(datetime.UTC).isoformat(),
        owns_pod=owns_pod,
        annotations=dict(bundle.spec.get("annotations") or {}),
        hooks=dict(bundle.spec.get("hooks") or {}),
        creator=hostproc.current().to_record(),
        moved_mount=root_disk.to_dict() if root_disk is not None else None,
    )
    # Claimed first: a create killed from here on leaves a record that state,
    # delete --force and a retried create can see.
    _claim(options, record)
    try:
        pod_config = bundle.pod_config(pod_id) if owns_pod else None
        if root_disk is not None and pod_config is not None:
            rootdisk.move_aside(root_disk)
            pod_config = blockdev.with_a_disk_slot(pod_config)
        if pod_config is not None:
            _create_own_pod(record, pod_config)
        request: ShimRequest = {"pod_id": pod_id, "container": config.to_dict()}
        shim = start_shim(request, console_socket)
        if pod_config is not None and pod_config.cgroup is not None:
            # The engine counts the shim with the pod, as it would runc's process.
            HostCgroup(pod_config.cgroup).enter(shim.pid)
        record.shim_pid = shim.pid
        record.creator = None
        record.save(options.root)
        for stage in ("prestart", "createRuntime", "createContainer"):
            record.run_hooks(stage, "created")
        if pid_file is not None:
            write_pid_file(pid_file, shim.pid)
    except ForeignPodError:
        record.remove(options.root)
        raise
    except BaseException:
        _destroy(record, force=True)
        record.remove(options.root)
        raise
    return record, shim


def _peer_finder(options: Options) -> Callable[[int], Peer | None]:
    """Finds the container of this --root whose pid (its shim's, as ``state``
    reports it) a namespace path names, if it still exists."""
    from virtcontainers.oci.namespaces import Peer

    def find(pid: int) -> Peer | None:
        for record in _records(options, quiet=True):
            if record.shim_pid == pid and oci_status(record) in ("created", "running", "paused"):
                return Peer(container_id=record.id, pod_id=record.pod_id)
        return None

    return find


class ForeignPodError(RuntimeCommandError):
    """The container's own pod exists already: another's, which a failed create
    must leave alone."""


def _claim(options: Options, record: Record) -> None:
    """Make the id ours, atomically; refuse an id in use."""
    with creates_serialised(options.root):
        _reclaim_or_refuse(options, record.id)
        if not record.claim(options.root):
            raise RuntimeCommandError(f"container with id exists: {record.id}")


def _create_own_pod(record: Record, pod_config: PodConfig) -> None:
    """Create and start the container's pod; a pod of that id that someone else
    made is left alone (run_pod's create refuses it before anything starts)."""
    try:
        api.run_pod(pod_config)
    except ExistsError:
        raise ForeignPodError(
            f"container {record.id}: a pod {record.pod_id} exists already, not made by "
            "this create; delete it first (virtc pod delete)"
        ) from None


def _reclaim_or_refuse(options: Options, container_id: str) -> None:
    """Clean up after a create of this id that was killed; refuse an id in use."""
    try:
        record = Record.load(options.root, container_id)
    except RuntimeCommandError:
        return
    if not record.abandoned():
        raise RuntimeCommandError(f"container with id exists: {container_id}")
    log_event(options, "warning", f"{container_id}: cleaning up after a create that was killed")
    _destroy(record, force=True)
    record.remove(options.root)


def _destroy(record: Record, force: bool) -> None:
    """Remove the container from its pod, and the pod if it is the container's own
    (then put back the caller's mount of its rootfs, if it was moved aside)."""
    if record.owns_pod:
        with contextlib.suppress(NotFoundError):
            api.delete_pod(record.pod_id, force=True)
        if record.moved_mount is not None:
            rootdisk.put_back(BlockMount.from_dict(record.moved_mount))
        return
    with contextlib.suppress(NotFoundError, StateError):
        status = api.container_status(record.pod_id, record.id)
        if status.state in (ContainerState.RUNNING, ContainerState.PAUSED) and force:
            api.kill_container(record.pod_id, record.id, signal.SIGKILL, all_processes=True)
            api.wait_container(record.pod_id, record.id, timeout=30)
        api.delete_container(record.pod_id, record.id)


@cli.command()
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
    _clean_up_on_sigterm()
    _create(_options(ctx), container_id, bundle, pid_file, console_socket, preserve_fds)


def _clean_up_on_sigterm() -> None:
    """Engines send SIGTERM when a create takes too long: undo it, as on any failure."""

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def _start(record: Record) -> None:
    status = oci_status(record)
    if status != "created":
        if status == "stopped":
            raise RuntimeCommandError("cannot start a container that has stopped")
        raise RuntimeCommandError(f"cannot start an already {status} container")
    record.run_hooks("startContainer", "created")
    api.start_container(record.pod_id, record.id)
    record.run_hooks("poststart", "running")


@cli.command()
@click.argument("container_id")
@click.pass_context
def start(ctx: click.Context, container_id: str) -> None:
    """Start a created container."""
    options = _options(ctx)
    _start(Record.load(options.root, container_id))


@cli.command()
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
    options = _options(ctx)
    _clean_up_on_sigterm()
    record, shim = _create(options, container_id, bundle, pid_file, console_socket, preserve_fds)
    try:
        _start(record)
    except BaseException:
        _destroy(record, force=True)
        record.remove(options.root)
        raise
    if detach:
        return
    code = shim.wait()
    _delete(options, record, force=True)
    sys.exit(code)


# --- state / list / ps / events -----------------------------------------------------------------


@cli.command()
@click.argument("container_id")
@click.pass_context
def state(ctx: click.Context, container_id: str) -> None:
    """Print the container's state as OCI JSON."""
    record = Record.load(_options(ctx).root, container_id)
    click.echo(json.dumps(state_document(record), indent=2))


def _records(options: Options, quiet: bool = False) -> list[Record]:
    """Every container of this --root; an unreadable one is reported, not hidden
    (unless ``quiet``)."""
    records = []
    root = options.root
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            records.append(Record.load(root, entry.name))
        except (RuntimeCommandError, ValueError, TypeError) as exc:
            if quiet:
                continue
            message = f"container {entry.name}: unreadable state in {entry}: {exc}"
            log_event(options, "warning", message)
            click.echo(f"vc-runtime: {message} (`delete --force` removes it)", err=True)
    return records


@cli.command("list")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def list_containers(ctx: click.Context, fmt: str, quiet: bool) -> None:
    """List containers started by vc-runtime with this --root."""
    states = [state_document(r) for r in _records(_options(ctx))]
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


@cli.command()
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1)
@click.pass_context
def ps(ctx: click.Context, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """Processes of the container (pids are the guest's)."""
    record = Record.load(_options(ctx).root, container_id)
    if oci_status(record) not in ("running", "paused"):
        raise RuntimeCommandError(f"container {container_id} is not running")
    processes = api.list_processes(record.pod_id, record.id)
    if fmt == "json":
        click.echo(json.dumps([p.pid for p in processes]))
        return
    click.echo("PID\tCMD")
    for process in processes:
        click.echo(f"{process.pid}\t{' '.join(process.args)}")


@cli.command()
@click.option("--stats", is_flag=True, help="Print one stats event and exit.")
@click.option("--interval", type=float, default=5.0, show_default=True)
@click.argument("container_id")
@click.pass_context
def events(ctx: click.Context, stats: bool, interval: float, container_id: str) -> None:
    """Stats events for the container, as runc prints them, until it stops."""
    record = Record.load(_options(ctx).root, container_id)
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


@cli.command()
@runtime_resources.update_options
@click.argument("container_id")
@click.pass_context
def update(ctx: click.Context, /, container_id: str, **flags: object) -> None:
    """Change a container's memory, CPU and pids limits (flags, or -r resources.json)."""
    runtime_resources.update(_options(ctx), container_id, flags)


# --- kill / pause / resume / delete ---------------------------------------------------------------


def parse_signal(text: str) -> int:
    number = signal_number(text)
    if number is None:
        raise RuntimeCommandError(f"unknown signal {text!r}")
    return number


@cli.command()
@click.option("--all", "-a", "all_processes", is_flag=True)
@click.argument("container_id")
@click.argument("signame", default="SIGTERM")
@click.pass_context
def kill(ctx: click.Context, all_processes: bool, container_id: str, signame: str) -> None:
    """Send a signal (name or number) to the container's process."""
    signum = parse_signal(signame)
    record = Record.load(_options(ctx).root, container_id)
    if oci_status(record) not in ("created", "running", "paused"):
        raise RuntimeCommandError("container not running")
    api.kill_container(record.pod_id, record.id, signum, all_processes)


def _toggle_pause(ctx: click.Context, container_id: str, pause: bool) -> None:
    record = Record.load(_options(ctx).root, container_id)
    needed = "running" if pause else "paused"
    if oci_status(record) != needed:
        raise RuntimeCommandError(f"container {container_id} is not {needed}")
    action = api.pause_container if pause else api.resume_container
    action(record.pod_id, record.id)


@cli.command()
@click.argument("container_id")
@click.pass_context
def pause(ctx: click.Context, container_id: str) -> None:
    """Freeze the container's processes."""
    _toggle_pause(ctx, container_id, pause=True)


@cli.command()
@click.argument("container_id")
@click.pass_context
def resume(ctx: click.Context, container_id: str) -> None:
    """Thaw the container's processes."""
    _toggle_pause(ctx, container_id, pause=False)


def _delete(options: Options, record: Record, force: bool) -> None:
    status = oci_status(record)
    if status in ("running", "paused") and not force:
        raise RuntimeCommandError(
            f"cannot delete container {record.id} that is not stopped: {status}"
        )
    _destroy(record, force=True)
    record.remove(options.root)
    record.run_hooks("poststop", "stopped")


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill the container first if it runs.")
@click.argument("container_id")
@click.pass_context
def delete(ctx: click.Context, force: bool, container_id: str) -> None:
    """Delete a stopped container (any container with --force)."""
    options = _options(ctx)
    try:
        record = Record.load(options.root, container_id)
    except RuntimeCommandError:
        if force:
            return
        raise
    _delete(options, record, force)


# --- exec ----------------------------------------------------------------------------------------


@cli.command("exec", context_settings={"ignore_unknown_options": True})
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
    options = _options(ctx)
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


# --- spec / features ----------------------------------------------------------------------------


@cli.command()
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=Path("."))
@click.option("--rootless", is_flag=True)
def spec(bundle: Path, rootless: bool) -> None:
    """Write a starter config.json into the bundle directory."""
    from virtcontainers import oci

    target = bundle / "config.json"
    if target.exists():
        raise RuntimeCommandError("File config.json exists. Remove it first")
    target.write_text(json.dumps(oci.default_spec(rootless), indent="\t"))


@cli.command()
def features() -> None:
    """Print what this runtime supports (OCI features document)."""
    from virtcontainers import oci

    click.echo(json.dumps(oci.features(), indent=4))


def main() -> None:
    cli(prog_name="vc-runtime")


if __name__ == "__main__":
    main()
