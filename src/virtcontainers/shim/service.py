"""containerd's task service, each call mapped onto the api in a few lines.

One shim serves one pod, and is its daemon: the sandbox's (or a standalone
container's) Create makes the pod and boots it on the shim's own event loop
(:class:`~virtcontainers.daemon.hosted.DaemonHost`), the Creates of the
containers that name it as their sandbox add containers to it.  The api is
synchronous: calls run in threads, and reach the pod over its daemon's
socket, which the same loop serves; each started process has a thread of its
own that waits for its exit, so that Wait answers and TaskExit is published
the moment it ends.  The shim's shutdown stops the pod.

Pids are the guest's: the processes live in the VM, not on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from google.protobuf import empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from virtcontainers import api, oci
from virtcontainers.config import Cmd, PodConfig
from virtcontainers.daemon.hosted import DaemonHost
from virtcontainers.errors import (
    BusyError,
    ConfigError,
    ExistsError,
    NotFoundError,
    RuntimeSpecError,
    StateError,
    VcError,
)
from virtcontainers.shim import specs
from virtcontainers.shim.fifos import Fifos, StdinHold, open_fifos
from virtcontainers.shim.protos import events, task, task_types
from virtcontainers.shim.rootfs import (
    ROOTFS,
    BlockRoot,
    Mount,
    block_root,
    mount_rootfs,
    unmount_rootfs,
)
from virtcontainers.shim.stats import metrics, vm_usage
from virtcontainers.shim.ttrpc import CallContext, Code, Method, TtrpcError, unary
from virtcontainers.spec import OCI_VERSION
from virtcontainers.states import ContainerState
from virtcontainers.storage import blockdev

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

CODES: tuple[tuple[type[VcError], Code], ...] = (
    (NotFoundError, Code.NOT_FOUND),
    (ExistsError, Code.ALREADY_EXISTS),
    (StateError, Code.FAILED_PRECONDITION),
    (ConfigError, Code.INVALID_ARGUMENT),
    (RuntimeSpecError, Code.INVALID_ARGUMENT),
    (BusyError, Code.UNAVAILABLE),
)
STATUSES = {
    ContainerState.CREATED: task_types.CREATED,
    ContainerState.RUNNING: task_types.RUNNING,
    ContainerState.PAUSED: task_types.PAUSED,
    ContainerState.STOPPED: task_types.STOPPED,
}
EMPTY = empty_pb2.Empty()


def ttrpc_error(exc: VcError) -> TtrpcError:
    """The status containerd gets for an api error (its errdefs read the code)."""
    if isinstance(exc, TtrpcError):
        return exc
    code = next((code for kind, code in CODES if isinstance(exc, kind)), Code.UNKNOWN)
    return TtrpcError(code, str(exc))


def timestamp(when_ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if when_ns:
        stamp.FromNanoseconds(when_ns)
    return stamp


@dataclass
class Process:
    """A container's own process (``exec_id`` "") or one of its execs."""

    container_id: str
    exec_id: str
    fifos: Fifos
    exited: asyncio.Future[api.ExitStatus]
    cmd: Cmd | None = None
    """An exec's command, until it starts."""
    pid: int = 0
    started: bool = False
    exited_at_ns: int = 0
    stdin: StdinHold = field(default_factory=StdinHold)

    @property
    def exit_code(self) -> int:
        return self.exited.result().exit_code if self.exited.done() else 0

    def running(self) -> bool:
        return self.started and not self.exited.done()


@dataclass
class Task:
    """A container this shim created, in the pod it serves."""

    id: str
    bundle: Path
    pod_id: str
    role: oci.PodRole
    spec: Mapping[str, Any]
    init: Process
    execs: dict[str, Process] = field(default_factory=dict)

    @property
    def owns_pod(self) -> bool:
        """The sandbox's (or a standalone container's) task: the pod goes with it."""
        return self.role is not oci.PodRole.CONTAINER

    def hooks(self, stage: str, status: str) -> None:
        state = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": self.init.pid,
            "bundle": str(self.bundle),
            "annotations": dict(self.spec.get("annotations") or {}),
        }
        oci.run_hooks(self.spec, stage, state)


class TaskService:
    """The handlers of containerd.task.v2.Task; events go to ``publish``."""

    def __init__(
        self, publish: Callable[[Message], None], shutdown: asyncio.Event, cgroup_v2: bool
    ) -> None:
        self.publish = publish
        self.shutdown = shutdown
        self.cgroup_v2 = cgroup_v2
        self.tasks: dict[str, Task] = {}
        self.daemons = DaemonHost(asyncio.get_running_loop(), shutdown)

    def methods(self) -> dict[str, Method]:
        return {
            "Create": unary(task.CreateTaskRequest, self.create),
            "Start": unary(task.StartRequest, self.start),
            "Delete": unary(task.DeleteRequest, self.delete),
            "Exec": unary(task.ExecProcessRequest, self.exec),
            "ResizePty": unary(task.ResizePtyRequest, self.resize_pty),
            "CloseIO": unary(task.CloseIORequest, self.close_io),
            "Kill": unary(task.KillRequest, self.kill),
            "Pids": unary(task.PidsRequest, self.pids),
            "Pause": unary(task.PauseRequest, self.pause),
            "Resume": unary(task.ResumeRequest, self.resume),
            "Checkpoint": unary(task.CheckpointTaskRequest, self.checkpoint),
            "Wait": unary(task.WaitRequest, self.wait),
            "Stats": unary(task.StatsRequest, self.stats),
            "Update": unary(task.UpdateTaskRequest, self.update),
            "State": unary(task.StateRequest, self.state),
            "Connect": unary(task.ConnectRequest, self.connect),
            "Shutdown": unary(task.ShutdownRequest, self.shutdown_call),
        }

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    async def _api(call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A blocking api call, in a thread; its errors as ttrpc statuses."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except VcError as exc:
            raise ttrpc_error(exc) from exc

    def _task(self, task_id: str) -> Task:
        found = self.tasks.get(task_id)
        if found is None:
            raise TtrpcError(Code.NOT_FOUND, f"task {task_id!r} not found in this shim")
        return found

    def _process(self, task_id: str, exec_id: str) -> tuple[Task, Process]:
        owner = self._task(task_id)
        if not exec_id:
            return owner, owner.init
        process = owner.execs.get(exec_id)
        if process is None:
            raise TtrpcError(Code.NOT_FOUND, f"exec {exec_id!r} of task {task_id!r} not found")
        return owner, process

    def _new_process(self, container_id: str, exec_id: str, fifos: Fifos) -> Process:
        return Process(container_id, exec_id, fifos, asyncio.get_running_loop().create_future())

    def _watch(self, owner: Task, process: Process) -> None:
        """Wait for the process's exit in a thread; then answer its Waits and publish it."""
        loop = asyncio.get_running_loop()

        def wait() -> None:
            try:
                status = api.wait_process(owner.pod_id, owner.id, process.exec_id or None)
            except VcError as exc:
                status = api.ExitStatus(255, error=str(exc))
            loop.call_soon_threadsafe(self._exited, process, status, time.time_ns())

        name = f"wait-{owner.id[:12]}-{process.exec_id[:12]}"
        threading.Thread(target=wait, name=name, daemon=True).start()

    def _exited(self, process: Process, status: api.ExitStatus, when_ns: int) -> None:
        process.exited_at_ns = when_ns
        process.stdin.release()
        if not process.exited.done():
            process.exited.set_result(status)
        self.publish(
            events.TaskExit(
                container_id=process.container_id,
                id=process.exec_id or process.container_id,
                pid=process.pid,
                exit_status=status.exit_code,
                exited_at=timestamp(when_ns),
            )
        )

    def _follow_ooms(self, pod_id: str) -> None:
        """Publish the pod's OOM kills until the pod stops."""
        loop = asyncio.get_running_loop()

        def follow() -> None:
            with contextlib.suppress(VcError):
                for event in api.follow_events(pod_id):
                    if event.kind == "oom" and event.container_id is not None:
                        oom = events.TaskOOM(container_id=event.container_id)
                        loop.call_soon_threadsafe(self.publish, oom)

        threading.Thread(target=follow, name=f"ooms-{pod_id[:12]}", daemon=True).start()

    def _find_peer(self, pid: int) -> oci.Peer | None:
        """The container of this shim whose pid a namespace path names (CRI's
        containers name their sandbox's, by the pid Create answered)."""
        for known in list(self.tasks.values()):
            if known.init.pid == pid and not known.init.exited.done():
                return oci.Peer(container_id=known.id, pod_id=known.pod_id)
        return None

    # --- create, start, delete --------------------------------------------------------------

    async def create(self, request: task.CreateTaskRequest, _context: CallContext) -> Message:
        if request.checkpoint:
            raise TtrpcError(Code.UNIMPLEMENTED, "restoring a checkpoint is not supported")
        if request.id in self.tasks:
            raise TtrpcError(Code.ALREADY_EXISTS, f"task {request.id!r} exists already")
        bundle = Path(request.bundle)
        mounts = [Mount(m.type, m.source, tuple(m.options)) for m in request.rootfs]
        fifos = Fifos(request.stdin, request.stdout, request.stderr, request.terminal)
        init = self._new_process(request.id, "", fifos)
        disk = block_root(mounts)
        if disk is None:
            await self._api(mount_rootfs, bundle, mounts)
        else:
            (bundle / ROOTFS).mkdir(exist_ok=True)  # the bundle names it; it stays empty
        try:
            made = await self._api(self._create_container, request.id, bundle, init, disk)
        except BaseException:
            await asyncio.to_thread(unmount_rootfs, bundle)
            raise
        self.tasks[made.id] = made
        if made.owns_pod:
            self._follow_ooms(made.pod_id)
        self.publish(
            events.TaskCreate(
                container_id=made.id,
                bundle=request.bundle,
                rootfs=request.rootfs,
                io=events.TaskIO(
                    stdin=fifos.stdin,
                    stdout=fifos.stdout,
                    stderr=fifos.stderr,
                    terminal=fifos.terminal,
                ),
                pid=init.pid,
            )
        )
        return task.CreateTaskResponse(pid=init.pid)

    def _create_container(
        self, container_id: str, bundle_dir: Path, init: Process, disk: BlockRoot | None
    ) -> Task:
        """Load the bundle; make and boot the pod if the container owns it; create
        the container in it with containerd's fifos as its stdio (in a thread).
        With ``disk``, the rootfs is that block device, plugged into the VM."""
        bundle = oci.load_bundle(bundle_dir).resolve_namespaces(self._find_peer)
        for warning in bundle.warnings:
            log.warning("%s: %s", container_id, warning)
        config = bundle.container_config(container_id)
        pod_id = container_id if bundle.sandbox_id is None else bundle.sandbox_id
        made = Task(container_id, bundle.path, pod_id, bundle.role, bundle.spec, init)
        pod_config = _sandbox_pod(bundle.pod_config(pod_id)) if made.owns_pod else None
        if disk is not None:
            config = blockdev.on_the_device(config, disk.device, disk.fstype, disk.read_only)
            pod_config = blockdev.with_a_disk_slot(pod_config) if pod_config else None
        if pod_config is not None:
            api.run_pod(pod_config, host=self.daemons)
        try:
            stdio, init.stdin = open_fifos(init.fifos)
            try:
                status = api.create_container(pod_id, config, stdio)
            finally:
                stdio.close()
            init.pid = status.pid or 0
            for stage in ("prestart", "createRuntime", "createContainer"):
                made.hooks(stage, "created")
        except BaseException:
            init.stdin.release()
            self._destroy(made)
            raise
        return made

    async def start(self, request: task.StartRequest, _context: CallContext) -> Message:
        owner, process = self._process(request.id, request.exec_id)
        if process.started:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"{request.id!r}: started already")
        if request.exec_id:
            handle = await self._api(self._enter, owner, process)
            process.pid = handle.pid
        else:
            await self._api(self._start_container, owner)
        process.started = True
        self._watch(owner, process)
        if request.exec_id:
            self.publish(
                events.TaskExecStarted(
                    container_id=owner.id, exec_id=request.exec_id, pid=process.pid
                )
            )
        else:
            self.publish(events.TaskStart(container_id=owner.id, pid=process.pid))
        return task.StartResponse(pid=process.pid)

    @staticmethod
    def _start_container(owner: Task) -> None:
        owner.hooks("startContainer", "created")
        api.start_container(owner.pod_id, owner.id)
        owner.hooks("poststart", "running")

    @staticmethod
    def _enter(owner: Task, process: Process) -> api.ProcessHandle:
        assert process.cmd is not None
        stdio, process.stdin = open_fifos(process.fifos)
        try:
            return api.enter_container(
                owner.pod_id, owner.id, process.cmd, stdio, exec_id=process.exec_id
            )
        except BaseException:
            process.stdin.release()
            raise
        finally:
            stdio.close()

    async def delete(self, request: task.DeleteRequest, _context: CallContext) -> Message:
        owner, process = self._process(request.id, request.exec_id)
        if process.running():
            raise TtrpcError(
                Code.FAILED_PRECONDITION,
                f"{request.exec_id or request.id!r} is running: kill it and wait first",
            )
        process.stdin.release()
        if request.exec_id:
            del owner.execs[request.exec_id]
        else:
            await self._api(self._destroy, owner)
            del self.tasks[owner.id]
            self.publish(
                events.TaskDelete(
                    container_id=owner.id,
                    id=owner.id,
                    pid=process.pid,
                    exit_status=process.exit_code,
                    exited_at=timestamp(process.exited_at_ns),
                )
            )
        return task.DeleteResponse(
            pid=process.pid,
            exit_status=process.exit_code,
            exited_at=timestamp(process.exited_at_ns),
        )

    @staticmethod
    def _destroy(owner: Task) -> None:
        """Remove the container from its pod, and the pod if the container owns it."""
        try:
            if owner.owns_pod:
                with contextlib.suppress(NotFoundError):
                    api.delete_pod(owner.pod_id, force=True)
            else:
                with contextlib.suppress(NotFoundError):
                    api.delete_container(owner.pod_id, owner.id)
        finally:
            unmount_rootfs(owner.bundle)
        owner.hooks("poststop", "stopped")

    # --- processes ------------------------------------------------------------------------

    async def exec(self, request: task.ExecProcessRequest, _context: CallContext) -> Message:
        owner = self._task(request.id)
        if request.exec_id in owner.execs or not request.exec_id:
            raise TtrpcError(Code.ALREADY_EXISTS, f"exec {request.exec_id!r} exists already")
        try:
            cmd = specs.exec_cmd(request.spec)
        except VcError as exc:
            raise ttrpc_error(exc) from exc
        fifos = Fifos(request.stdin, request.stdout, request.stderr, cmd.terminal)
        process = self._new_process(owner.id, request.exec_id, fifos)
        process.cmd = cmd
        owner.execs[request.exec_id] = process
        self.publish(events.TaskExecAdded(container_id=owner.id, exec_id=request.exec_id))
        return EMPTY

    async def kill(self, request: task.KillRequest, _context: CallContext) -> Message:
        owner, process = self._process(request.id, request.exec_id)
        if process.exited.done():
            raise TtrpcError(Code.NOT_FOUND, "process already finished")
        if request.exec_id and not process.started:
            raise TtrpcError(Code.FAILED_PRECONDITION, f"exec {request.exec_id!r} not started")
        try:
            await asyncio.to_thread(
                api.signal_process,
                owner.pod_id,
                owner.id,
                request.exec_id or None,
                request.signal,
                request.all,
            )
        except StateError as exc:
            # The guest saw the exit before this shim's waiter did.  containerd
            # (its CRI's StopPodSandbox among others) takes only NOT_FOUND as
            # "already finished", as runc's shim answers it.
            raise TtrpcError(Code.NOT_FOUND, f"process already finished: {exc}") from exc
        except VcError as exc:
            raise ttrpc_error(exc) from exc
        return EMPTY

    async def wait(self, request: task.WaitRequest, _context: CallContext) -> Message:
        _owner, process = self._process(request.id, request.exec_id)
        status = await asyncio.shield(process.exited)
        return task.WaitResponse(
            exit_status=status.exit_code, exited_at=timestamp(process.exited_at_ns)
        )

    async def resize_pty(self, request: task.ResizePtyRequest, _context: CallContext) -> Message:
        owner, process = self._process(request.id, request.exec_id)
        if process.running():
            await self._api(
                api.resize_terminal,
                owner.pod_id,
                owner.id,
                request.exec_id or None,
                request.height,
                request.width,
            )
        return EMPTY

    async def close_io(self, request: task.CloseIORequest, _context: CallContext) -> Message:
        _owner, process = self._process(request.id, request.exec_id)
        if request.stdin:
            process.stdin.release()
        return EMPTY

    async def pids(self, request: task.PidsRequest, _context: CallContext) -> Message:
        owner = self._task(request.id)
        found = await self._api(api.list_processes, owner.pod_id, owner.id)
        return task.PidsResponse(processes=[task_types.ProcessInfo(pid=p.pid) for p in found])

    async def state(self, request: task.StateRequest, _context: CallContext) -> Message:
        owner, process = self._process(request.id, request.exec_id)
        return task.StateResponse(
            id=request.exec_id or owner.id,
            exec_id=request.exec_id,
            bundle=str(owner.bundle),
            pid=process.pid,
            status=await self._status(owner, process),
            stdin=process.fifos.stdin,
            stdout=process.fifos.stdout,
            stderr=process.fifos.stderr,
            terminal=process.fifos.terminal,
            exit_status=process.exit_code,
            exited_at=timestamp(process.exited_at_ns),
        )

    async def _status(self, owner: Task, process: Process) -> task_types.Status:
        if process.exited.done():
            return task_types.STOPPED
        if process.exec_id:
            return task_types.RUNNING if process.started else task_types.CREATED
        status = await self._api(api.container_status, owner.pod_id, owner.id)
        return STATUSES.get(status.state, task_types.UNKNOWN)

    # --- the container as a whole -----------------------------------------------------------

    async def pause(self, request: task.PauseRequest, _context: CallContext) -> Message:
        owner = self._task(request.id)
        await self._api(api.pause_container, owner.pod_id, owner.id)
        self.publish(events.TaskPaused(container_id=owner.id))
        return EMPTY

    async def resume(self, request: task.ResumeRequest, _context: CallContext) -> Message:
        owner = self._task(request.id)
        await self._api(api.resume_container, owner.pod_id, owner.id)
        self.publish(events.TaskResumed(container_id=owner.id))
        return EMPTY

    async def checkpoint(
        self, request: task.CheckpointTaskRequest, _context: CallContext
    ) -> Message:
        raise TtrpcError(
            Code.UNIMPLEMENTED,
            f"task {request.id!r}: checkpoint is not supported: its processes live in a VM, "
            "which virtcontainers cannot checkpoint",
        )

    async def stats(self, request: task.StatsRequest, _context: CallContext) -> Message:
        """A container's usage in the guest; a CRI sandbox's is its pod's VM's."""
        owner = self._task(request.id)
        usage = await self._api(api.container_stats, owner.pod_id, owner.id)
        if owner.role is oci.PodRole.SANDBOX:
            pod = await self._api(api.pod_status, owner.pod_id)
            usage = await asyncio.to_thread(vm_usage, pod, usage)
        return task.StatsResponse(stats=metrics(usage, self.cgroup_v2))

    async def update(self, request: task.UpdateTaskRequest, _context: CallContext) -> Message:
        owner = self._task(request.id)
        try:
            limits = specs.update_limits(request.resources)
        except VcError as exc:
            raise ttrpc_error(exc) from exc
        if not limits.empty:
            await self._api(api.update_container, owner.pod_id, owner.id, limits)
        return EMPTY

    # --- the shim ---------------------------------------------------------------------------

    async def connect(self, request: task.ConnectRequest, _context: CallContext) -> Message:
        found = self.tasks.get(request.id)
        return task.ConnectResponse(
            shim_pid=os.getpid(), task_pid=found.init.pid if found else 0, version="vc-v2"
        )

    async def shutdown_call(self, request: task.ShutdownRequest, _context: CallContext) -> Message:
        """End the shim once it serves no task (containerd asks after each Delete)."""
        if request.now or not self.tasks:
            self.shutdown.set()
        return EMPTY


def _sandbox_pod(config: PodConfig) -> PodConfig:
    """The CRI's port-forward dials loopback in the sandbox's network namespace:
    the pod forwards it to its VM (docs/shim.md)."""
    return replace(config, forward_loopback=config.netns is not None)
