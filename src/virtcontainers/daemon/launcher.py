"""Starting a pod daemon: its command line, built and parsed here, and its
readiness report over a pipe.

:func:`spawn` runs ``python -m virtcontainers.daemon.server --detach --root R --pod ID
--ready-fd N``; the daemon double-forks into a new session (so it outlives
its caller and never becomes a caller's zombie), boots the pod, and writes one
JSON line to the ready fd: ``{"ok": true}`` or ``{"ok": false, "error": ...}``.
Before that it offers the pod to a pool's waiting clones
(:func:`virtcontainers.factory.pool.claim`): one that takes it becomes its
daemon, with the same fds, and reports on the same pipe.
Importing this module is cheap: callers of the API load no asyncio for it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.daemon import rpc
from virtcontainers.errors import DaemonError, error_from_dict
from virtcontainers.factory import pool
from virtcontainers.host.logtail import tail
from virtcontainers.host.pythonenv import package_env
from virtcontainers.records import ProcessRef
from virtcontainers.store import PodLock, Store


@dataclass(frozen=True)
class DaemonArgs:
    root: Path
    pod_id: str
    ready_fd: int | None
    debug: bool
    detach: bool
    lock_fd: int | None = None
    """The starter's hold on the pod's lock, kept by the daemon until the boot ends."""
    owner: ProcessRef | None = None
    """A process whose exit stops and deletes the pod (``virtc run --rm``)."""
    reattach: bool = False
    """Take over the running VM of a pod whose daemon died, instead of booting one."""


def daemon_argv(args: DaemonArgs) -> list[str]:
    argv = [sys.executable, "-m", "virtcontainers.daemon", "--root", str(args.root)]
    argv += ["--pod", args.pod_id]
    if args.ready_fd is not None:
        argv += ["--ready-fd", str(args.ready_fd)]
    if args.lock_fd is not None:
        argv += ["--lock-fd", str(args.lock_fd)]
    if args.owner is not None:
        argv += ["--owner", f"{args.owner.pid}:{args.owner.start_time}"]
    if args.reattach:
        argv.append("--reattach")
    if args.debug:
        argv.append("--debug")
    if args.detach:
        argv.append("--detach")
    return argv


def parse_daemon_argv(argv: list[str] | None) -> DaemonArgs:
    parser = argparse.ArgumentParser(prog="virtcontainers.daemon")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--detach", action="store_true", help="fork into a new session first")
    parser.add_argument("--lock-fd", type=int)
    parser.add_argument("--owner", type=parse_process_ref)
    parser.add_argument("--reattach", action="store_true", help="take over the running VM")
    parsed = parser.parse_args(argv)
    return DaemonArgs(
        parsed.root,
        parsed.pod,
        parsed.ready_fd,
        parsed.debug,
        parsed.detach,
        parsed.lock_fd,
        parsed.owner,
        parsed.reattach,
    )


def parse_process_ref(text: str) -> ProcessRef:
    pid, _, start = text.partition(":")
    try:
        return ProcessRef(int(pid), int(start))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PID:START_TIME") from None


def spawn(store: Store, lock: PodLock, timeout: float, owner: ProcessRef | None) -> None:
    """Start the pod's daemon; return once it reports the pod running.

    The daemon inherits ``lock`` (held by the caller) and keeps holding it
    until the boot ends, even if the caller dies meanwhile: no other call
    starts, stops or deletes a pod that is booting.

    Raises the daemon's error, or DaemonError if it dies or stays silent.
    """
    _launch(store, lock.paths.root.name, timeout, lock.fd, owner, reattach=False)


def spawn_reattach(store: Store, pod_id: str, timeout: float, lock_fd: int | None) -> None:
    """Start a daemon that takes over the running VM of a pod whose daemon died;
    return once it serves the pod.  ``lock_fd``: the caller's hold on the pod,
    kept by the daemon until it has taken over (None: the caller holds it, and
    keeps holding it until this returns).

    Raises the daemon's error (it has then cleaned the pod up and recorded
    why), or DaemonError if it dies or stays silent.
    """
    _launch(store, pod_id, timeout, lock_fd, None, reattach=True)


def _launch(
    store: Store,
    pod_id: str,
    timeout: float,
    lock_fd: int | None,
    owner: ProcessRef | None,
    reattach: bool,
) -> None:
    paths = store.paths(pod_id)
    read_end, write_end = os.pipe()
    debug = bool(os.environ.get("VC_DEBUG"))
    args = DaemonArgs(store.root, pod_id, write_end, debug, True, lock_fd, owner, reattach)
    passed = [write_end] if lock_fd is None else [write_end, lock_fd]
    try:
        with open(paths.log, "ab") as log:
            if (
                reattach
                or lock_fd is None
                or not pool.claim(
                    store.root,
                    pool.factory_root(store.root),
                    pod_id,
                    [write_end, lock_fd, log.fileno()],
                    owner,
                    debug,
                )
            ):
                subprocess.Popen(
                    daemon_argv(args),
                    pass_fds=passed,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd="/",
                    env=package_env(),
                ).wait()
    finally:
        os.close(write_end)
    try:
        answer = read_ready(read_end, timeout)
    finally:
        os.close(read_end)
    check_ready(pod_id, answer, paths.log)


def check_ready(pod_id: str, answer: dict[str, object] | None, log: Path) -> None:
    """Raise the error a daemon reported (``answer``), or DaemonError if it said nothing."""
    if answer is None:
        raise DaemonError(f"pod {pod_id!r}: the daemon died while starting\n{tail(log)}")
    if answer.get("ok") is not True:
        raise error_from_dict(answer.get("error"))


def report_ready(ready_fd: int | None, message: rpc.Succeeded | rpc.Failed) -> bool:
    """The daemon's one line to its starter; closes the fd.

    False if the starter is gone (nobody reads the answer any more).
    """
    if ready_fd is None:
        return True
    try:
        os.write(ready_fd, (json.dumps(message) + "\n").encode())
    except OSError:
        return False
    finally:
        os.close(ready_fd)
    return True


def read_ready(fd: int, timeout: float) -> dict[str, object] | None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DaemonError(f"the pod daemon did not report ready within {timeout:.0f}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            data += chunk
    try:
        message = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
