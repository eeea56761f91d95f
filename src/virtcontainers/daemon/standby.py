"""A standby: a pod daemon that restores a template's clone before any pod asks
for it, then becomes the daemon of the first pod that fits
(:mod:`virtcontainers.factory.pool` says how pods find it).

``python -m virtcontainers.daemon.standby --root R --factory F --dir D``,
started by :func:`virtcontainers.factory.pool.fill` in a session of its own:

1. boots a clone of the template named by ``D``'s name (``<key>-<hex>``) in
   ``D`` as a pod's boot would (``D/vm``, ``D/guestfs``: the pod layout), its
   agent connected and its shared directory mounted, and records itself ready
   in ``D/standby.json``;
2. answers offers on ``D/claim.sock``: a pod that is starting (its lock held
   by the caller), with the caller's ready pipe, lock and the pod's daemon
   log passed along.  A pod fits when its template key is this clone's, it
   boots from templates and the interfaces of its network namespace, if it
   has one, fit the clone's spare PCIe slots.  It says no otherwise, and
   waits on;
3. on a fit: moves its VM's directories into the pod's (one rename each;
   mounts move with their parent, QEMU keeps its open files), answers yes,
   and serves the pod as :func:`virtcontainers.daemon.server.run`, giving
   the clone the pod's identity first; once the pod runs, the daemon
   fills the pool again (as after any templated start).

It ends without a pod when its VM dies, on SIGTERM, or when its template is
gone or the pool is emptied (checked every :data:`CHECK_INTERVAL` s), and
takes its VM, mounts and directory with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.agent import AgentKind, new_agent
from virtcontainers.agent.base import Agent
from virtcontainers.config import PodConfig, Resources
from virtcontainers.daemon import launcher
from virtcontainers.daemon.server import RunningClone, listen
from virtcontainers.daemon.server import run as serve_pod
from virtcontainers.errors import VcError
from virtcontainers.factory import pool
from virtcontainers.factory.pool import ENV_FACTORY_DIR
from virtcontainers.factory.template import Template, TemplateShape
from virtcontainers.factory.templates import current_shape
from virtcontainers.host import proc as hostproc
from virtcontainers.host.cgroup import leave_to_root
from virtcontainers.host.cleanup import release_run_files
from virtcontainers.hypervisor import new_hypervisor
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.base import Hypervisor, HypervisorKind
from virtcontainers.hypervisor.devices import SharedFsKind
from virtcontainers.pod.boot import PodBoot, unsupported
from virtcontainers.pod.eventlog import EventLog
from virtcontainers.pod.nics import PodNics
from virtcontainers.pod.vm import PodVM
from virtcontainers.records import ProcessRef
from virtcontainers.states import PodState
from virtcontainers.storage.removal import remove_tree
from virtcontainers.storage.shareddir import SharedDir
from virtcontainers.storage.sharedfs import choose_shared_fs
from virtcontainers.store import PodPaths, Store

log = logging.getLogger("virtcontainers.standby")
CHECK_INTERVAL = 30.0
STANDBY_NICE = 10
MAX_OFFER = 4096
MOVED = ("vm", "guestfs")
"""What of a standby's directory becomes the pod's: its VM's run directory and shared directory."""


@dataclass(frozen=True)
class Offer:
    pod_id: str
    ready_fd: int
    lock_fd: int
    log_fd: int
    owner: ProcessRef | None
    debug: bool


class Standby:
    """One waiting clone of one template, in its own directory."""

    def __init__(self, store_root: Path, factory_root: Path, directory: Path) -> None:
        self.store = Store(store_root)
        self.factory_root = factory_root
        self.directory = directory
        self.key = directory.name.rpartition("-")[0]
        self.paths = PodPaths(directory)
        template = Template.load(factory_root / self.key)
        self.shape: TemplateShape = template.shape
        self.config = PodConfig(
            id=directory.name,
            resources=Resources(self.shape.vcpus, self.shape.memory_mib),
            kernel_params=self.shape.kernel_params,
            boot="template",
            auto_template=False,
        )
        self.hypervisor: Hypervisor = new_hypervisor(HypervisorKind.QEMU)
        self.agent: Agent = new_agent(AgentKind(self.config.agent), directory.name)

    async def boot(self) -> None:
        self._record(ready=False)
        vm = PodVM(self.directory.name, self.hypervisor, self.agent, log)
        boot = PodBoot(
            vm,
            self.config,
            self.shape.image,
            paths=self.paths,
            shared=SharedDir(self.paths),
            nics=PodNics(self.paths),
            events=EventLog(),
            store_root=self.store.root,
            vm_started=lambda _key: self._record(ready=False),
        )
        await boot.boot()

    def record_ready(self) -> None:
        self._record(ready=True)
        log.info("standby ready: a clone of template %s", self.key)

    def _record(self, ready: bool) -> None:
        pid = self.hypervisor.pid
        vm = hostproc.of(pid) if pid is not None else None
        pool.write_record(self.directory, self.factory_root, vm, ready)

    def refusal(self, pod_id: str) -> str | None:
        """Why this clone cannot become pod *pod_id* (None: it can)."""
        record = self.store.load(pod_id)
        config = record.config
        if record.state is not PodState.STARTING:
            return f"the pod is {record.state.value}, not starting"
        if config.boot == "cold" or config.hypervisor != HypervisorKind.QEMU.value:
            return "the pod boots cold"
        if config.agent != self.config.agent or record.image is None:
            return "the pod's agent or image differs"
        accelerator, _reason = detect_accelerator()
        shared_fs = choose_shared_fs(None, accelerator)
        if shared_fs is not SharedFsKind.VIRTIO_9P:
            return f"the pod's shared directory is {shared_fs.value}"
        shape = TemplateShape.for_pod(config, record.image, accelerator, shared_fs)
        reason = unsupported(config, shared_fs, _interfaces(config), shape.hotplug_ports)
        if reason is not None:
            return reason
        if shape.key != self.key:
            return f"the pod's template is {shape.key}"
        paths = self.store.paths(pod_id)
        if any((paths.root / name).exists() for name in MOVED):
            return "the pod's directory holds a VM's files already"
        return None

    def warm_up(self) -> None:
        """Import now what a pod with a network would import at its start
        (pyroute2: ≈0.3 s), while nothing waits."""
        from virtcontainers.network import podnetwork  # noqa: F401

    def take(self, pod_id: str) -> None:
        """Move the VM's directories into the pod's: from now on they are its,
        and run at the pod's priority."""
        target = self.store.paths(pod_id).root
        moves = {self.directory / name: target / name for name in MOVED}
        done: list[tuple[Path, Path]] = []
        try:
            for old, new in moves.items():
                os.rename(old, new)
                done.append((old, new))
        except OSError:
            for old, new in reversed(done):
                os.rename(new, old)
            raise
        self.hypervisor.relocate(moves, pod_id)
        vm_pid = self.hypervisor.pid
        for pid in (os.getpid(), *([vm_pid] if vm_pid is not None else [])):
            _set_nice(pid, 0)

    async def close(self) -> None:
        """No pod took the clone: it goes, with everything of it."""
        with contextlib.suppress(VcError, OSError):
            await self.agent.close()
        with contextlib.suppress(VcError):
            await self.hypervisor.stop()
        release_run_files(self.paths)
        remove_tree(self.directory, f"standby {self.directory.name}")


async def wait_for_pod(standby: Standby) -> Offer | None:
    """Answer offers until one fits (None: the standby ends without a pod)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, ended.set)
    vm_gone = asyncio.ensure_future(standby.hypervisor.wait())
    sock_path = standby.directory / pool.CLAIM_SOCKET
    listener = listen(sock_path)
    # Ready once it listens: a pod that finds it ready must reach it.
    standby.record_ready()
    try:
        while True:
            accept = asyncio.ensure_future(loop.sock_accept(listener))
            stop = asyncio.ensure_future(ended.wait())
            done, _ = await asyncio.wait(
                {accept, stop, vm_gone}, timeout=CHECK_INTERVAL, return_when="FIRST_COMPLETED"
            )
            stop.cancel()
            if accept not in done:
                accept.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await accept
            if ended.is_set() or vm_gone.done() or not _still_wanted(standby):
                return None
            if accept in done:
                conn, _addr = accept.result()
                offer = await _answer(standby, conn)
                if offer is not None:
                    return offer
    finally:
        listener.close()
        sock_path.unlink(missing_ok=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if not vm_gone.done():
            vm_gone.cancel()


def _interfaces(config: PodConfig) -> int:
    """How many NICs the pod's clone needs: one per interface of its network
    namespace (counted, not yet taken: the claim may still be refused)."""
    if config.netns is None:
        return 0
    from virtcontainers.network.discovery import discover

    return len(discover(config.netns))


def _still_wanted(standby: Standby) -> bool:
    """Whether to wait on: the pool is on and holds this template's current
    clone.  A clone of a stale template (its image or QEMU changed) waits
    until the current one exists, starts a clone of it, and ends."""
    template_dir = standby.factory_root / standby.key
    if not (pool.pool_enabled() and pool.pool_size(standby.factory_root) > 0):
        return False
    try:
        if Template.load(template_dir).current():
            return True
        shape = standby.shape
        current = current_shape(shape.vcpus, shape.memory_mib, shape.kernel_params).key
    except VcError as exc:
        log.info("standby ends: its template is gone or unusable (%s)", exc)
        return False
    if not (standby.factory_root / current).is_dir():
        return True  # nothing to hand over to yet (a build may be under way)
    log.info("standby ends: template %s is stale; starting a clone of %s", standby.key, current)
    _refill(standby, current)
    return False


async def _answer(standby: Standby, conn: socket.socket) -> Offer | None:
    """Read one offer, and take the pod if it fits; the answer says which."""
    with conn:
        conn.settimeout(pool.CLAIM_TIMEOUT)
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_OFFER, 3)
        except OSError as exc:
            log.warning("a bad offer: %s", exc)
            return None
        offer = parse_offer(data, fds)
        if offer is None:
            for fd in fds:
                os.close(fd)
            _reply(conn, {"ok": False, "why": "malformed offer"})
            return None
        try:
            why = standby.refusal(offer.pod_id)
            if why is None:
                standby.take(offer.pod_id)
        except (VcError, OSError) as exc:
            why = str(exc)
        if why is not None:
            log.info("not taking pod %s: %s", offer.pod_id, why)
            for fd in fds:
                os.close(fd)
            _reply(conn, {"ok": False, "why": why})
            return None
        _reply(conn, {"ok": True})
        return offer


def parse_offer(data: bytes, fds: list[int]) -> Offer | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or len(fds) != 3:
        return None
    pod_id, owner, debug = message.get("pod"), message.get("owner"), message.get("debug")
    if not isinstance(pod_id, str) or not isinstance(debug, bool):
        return None
    owner_ref = None
    if owner is not None:
        if not isinstance(owner, str):
            return None
        try:
            owner_ref = launcher.parse_process_ref(owner)
        except argparse.ArgumentTypeError:
            return None
    return Offer(pod_id, fds[0], fds[1], fds[2], owner_ref, debug)


def _reply(conn: socket.socket, answer: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(answer).encode() + b"\n")


async def main_async(standby: Standby) -> int:
    try:
        await standby.boot()
    except BaseException:
        log.exception("the standby could not boot its clone")
        await standby.close()
        raise
    standby.warm_up()
    offer = await wait_for_pod(standby)
    if offer is None:
        log.info("standby ends without a pod")
        await standby.close()
        return 0
    return await _serve(standby, offer)


async def _serve(standby: Standby, offer: Offer) -> int:
    """Become the pod's daemon: its log, its record, its RPC socket."""
    os.dup2(offer.log_fd, 1)
    os.dup2(offer.log_fd, 2)
    os.close(offer.log_fd)
    if offer.debug:
        logging.getLogger().setLevel(logging.DEBUG)
    for fd in (offer.ready_fd, offer.lock_fd):
        os.set_inheritable(fd, False)
    remove_tree(standby.directory, f"standby {standby.directory.name}")
    log.info("pod %s takes over the clone of standby %s", offer.pod_id, standby.directory.name)
    args = launcher.DaemonArgs(
        standby.store.root,
        offer.pod_id,
        offer.ready_fd,
        offer.debug,
        False,
        offer.lock_fd,
        offer.owner,
    )

    clone = RunningClone(standby.key, standby.hypervisor, standby.agent)
    return await serve_pod(standby.store, args, clone=clone)


def _refill(standby: Standby, key: str) -> None:
    try:
        pool.fill(standby.store.root, standby.factory_root, key)
    except (OSError, VcError) as exc:
        log.warning("cannot refill the pool: %s", exc)


def _set_nice(pid: int, nice: int) -> None:
    """Every thread of *pid* at *nice* (a thread's priority is its own on Linux)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in threads:
        with contextlib.suppress(OSError, ValueError):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtcontainers.daemon.standby")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--factory", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    os.environ[ENV_FACTORY_DIR] = str(args.factory)  # the boot looks there
    leave_to_root()  # started by a pod's daemon or caller: not in their cgroup
    # A refill boots while the pod that emptied the slot creates its first
    # container: the pod comes first.  A claim restores the pod's priority.
    os.setpriority(os.PRIO_PROCESS, 0, STANDBY_NICE)
    try:
        standby = Standby(args.root, args.factory, args.dir)
    except VcError as exc:
        log.error("no standby: %s", exc)
        remove_tree(args.dir, f"standby {args.dir.name}")
        return 1
    return asyncio.run(main_async(standby))


if __name__ == "__main__":
    sys.exit(main())
