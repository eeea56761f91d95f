"""Operations on processes: exec in a container or in the guest, signal, wait, resize."""

from __future__ import annotations

import json
import os
import struct

from ..args import (
    AgentError,
    arg_bool,
    arg_id,
    arg_int,
    arg_streams,
    check_keys,
    check_process,
    invalid,
)
from ..model import Process
from ..osutil import DEFAULT_PATH, close_fd, fork_exec, write_file
from ..runtime import Launch

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core import Agent
    from ..model import Reply


def exec_process(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(
        args,
        {"container_id", "exec_id", "process", "stdin", "stdout", "stderr"},
        {"container_id", "exec_id", "process"},
    )
    arg_id(args, "container_id")
    exec_id = arg_id(args, "exec_id")
    checked = check_process(args["process"], "process")
    streams = arg_streams(args)
    container = agent.container(args)
    old = container.execs.get(exec_id)
    if old is not None and not old.reported:
        raise AgentError("exists", f"exec {exec_id!r} already exists")
    if container.status != "running":
        raise AgentError("state", f"container {container.id!r} is {container.status}")
    agent.claim_streams(streams)
    if old is not None:
        old.close()
        del container.execs[exec_id]
    process = dict(checked.raw)
    process.setdefault("cwd", "/")
    process.setdefault("user", {"uid": 0, "gid": 0})
    process.setdefault("env", list(container.env))
    terminal = checked.terminal
    process_file = os.path.join(container.bundle_dir, f"exec-{exec_id}.json")
    pid_file = os.path.join(container.bundle_dir, f"exec-{exec_id}.pid")
    try:
        write_file(process_file, json.dumps(process).encode())
    except OSError as exc:
        agent.release_streams(streams)
        raise AgentError("internal", f"cannot write process file: {exc}") from None
    proc = Process(agent, container, exec_id, terminal, streams)
    container.execs[exec_id] = proc
    argv = ["exec", "--process", process_file, "--detach", "--pid-file", pid_file]
    if terminal:
        argv.append("--tty")

    def on_fail() -> None:
        if container.execs.get(exec_id) is proc:
            del container.execs[exec_id]

    Launch(
        agent,
        reply,
        proc,
        args=[*argv, container.id],
        pid_file=pid_file,
        log_file=os.path.join(container.bundle_dir, f"exec-{exec_id}.log"),
        on_ok=lambda pid: None,
        on_fail=on_fail,
    )


def exec_guest(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"exec_id", "process", "stdin", "stdout", "stderr"}, {"exec_id", "process"})
    exec_id = arg_id(args, "exec_id")
    process = check_process(args["process"], "process")
    streams = arg_streams(args)
    ids = _guest_ids(process.user)
    old = agent.guest.execs.get(exec_id)
    if old is not None and not old.reported:
        raise AgentError("exists", f"guest exec {exec_id!r} already exists")
    agent.claim_streams(streams)
    terminal = process.terminal
    proc = Process(agent, agent.guest, exec_id, terminal, streams)
    ours: list[int] = []
    child: list[int] = []
    master = -1
    try:
        if terminal:
            master, slave = os.openpty()
            child = [slave, slave, slave]
        else:
            for index, stream_id in enumerate(streams):
                if stream_id is None:
                    child.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
                    ours.append(-1)
                    continue
                rfd, wfd = os.pipe()
                child.append(rfd if index == 0 else wfd)
                ours.append(wfd if index == 0 else rfd)
        pid = fork_exec(
            process.argv,
            _guest_env(process.env),
            process.cwd,
            (child[0], child[1], child[2]),
            terminal=terminal,
            ids=ids,
        )
    except BaseException as exc:
        for fd in [*ours, master]:
            if fd >= 0:
                close_fd(fd)
        agent.release_streams(streams)
        if isinstance(exc, OSError):
            raise AgentError("runtime", f"cannot run {process.argv[0]}: {exc}") from None
        raise
    finally:
        for fd in set(child):
            close_fd(fd)
    if old is not None:
        old.close()
    agent.guest.execs[exec_id] = proc
    proc.pid = pid
    agent.pids[pid] = proc
    proc.bind(ours, master, stale=False)
    reply.ok({"pid": pid})


def _guest_ids(user: Mapping[str, object]) -> tuple[int, int]:
    ids = []
    for name in ("uid", "gid"):
        value = user.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise invalid("process.user.uid and gid must be non-negative integers")
        ids.append(value)
    return ids[0], ids[1]


def _guest_env(entries: list[str]) -> dict[str, str]:
    env = dict(e.partition("=")[::2] for e in entries)
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def signal_process(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id", "exec_id", "signal", "all"}, {"container_id", "signal"})
    signum = arg_int(args, "signal", 1, 64)
    every = arg_bool(args, "all", False)
    proc = agent.process(args)
    if proc.pid is None:
        raise AgentError("state", "the process has not started yet")
    if proc.status is not None:
        raise AgentError("state", f"process {proc.pid} has already exited")
    if every:
        container = proc.container
        agent.run_runtime(
            reply, ["kill", "--all", container.id, str(signum)], lambda call: reply.ok({})
        )
        return
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        raise AgentError("state", f"process {proc.pid} has already exited") from None
    except OSError as exc:
        raise AgentError("internal", f"kill {proc.pid}: {exc}") from None
    reply.ok({})


def wait_process(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id", "exec_id"}, {"container_id"})
    proc = agent.process(args)
    if proc.reported and proc.status is not None:
        reply.ok({"exit_code": proc.status[0], "signal": proc.status[1]})
    else:
        proc.waiters.append(reply)


def close_output(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    """The host's reader of an output stream went away: close the process's end,
    so its next write fails with SIGPIPE, as it would without a VM."""
    check_keys(args, {"stream"}, {"stream"})
    stream = agent.outs.get(arg_int(args, "stream", 1, 0xFFFFFFFF))
    if stream is not None:  # else it ended already
        stream.finish()
    reply.ok({})


def resize_terminal(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id", "exec_id", "rows", "cols"}, {"container_id", "rows", "cols"})
    rows = arg_int(args, "rows", 0, 0xFFFF)
    cols = arg_int(args, "cols", 0, 0xFFFF)
    proc = agent.process(args)
    if not proc.terminal:
        raise AgentError("state", "the process has no terminal")
    if proc.console < 0:
        raise AgentError("state", "the terminal is not open")
    import fcntl
    import termios

    fcntl.ioctl(proc.console, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    reply.ok({})
