"""Start-up: the command line, the channel to the host, and the loop that keeps
the agent serving (as PID 1 it restarts rather than exit)."""

from __future__ import annotations

import os
import socket
import sys
import time

from .channel import Channel
from .core import Agent
from .log import describe_exception, log, log_to
from .ops import HANDLERS
from .osutil import DEFAULT_PATH, find_sysfs_entry, write_machine_id

USAGE = """usage: agent.py [--fd N | --connect PATH] [--runtime PATH] [--state-dir DIR]

  --fd N           use the inherited file descriptor N (a socket) as the channel
  --connect PATH   connect to the unix socket PATH as the channel
  --runtime PATH   OCI runtime binary (default: $VC_AGENT_RUNTIME or crun)
  --state-dir DIR  bundles and runtime state (default: /run/vc)

Without --fd/--connect the agent opens the virtio-serial port named "agent".
"""


class Options:
    def __init__(self) -> None:
        self.fd: int | None = None
        self.connect: str | None = None
        self.runtime = os.environ.get("VC_AGENT_RUNTIME") or "crun"
        self.state_dir = "/run/vc"


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    items = list(argv)
    while items:
        item = items.pop(0)
        if item in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        name, eq, value = item.partition("=")
        if name not in ("--fd", "--connect", "--runtime", "--state-dir"):
            raise SystemExit(f"agent: unknown option {item!r}\n{USAGE}")
        if not eq:
            if not items:
                raise SystemExit(f"agent: {name} needs a value")
            value = items.pop(0)
        if name == "--fd":
            try:
                opts.fd = int(value)
            except ValueError:
                raise SystemExit("agent: --fd needs an integer") from None
        elif name == "--connect":
            opts.connect = value
        elif name == "--runtime":
            opts.runtime = value
        else:
            opts.state_dir = value
    if opts.fd is not None and opts.connect is not None:
        raise SystemExit("agent: --fd and --connect are exclusive")
    return opts


def find_port(name: str = "agent") -> str | None:
    port = find_sysfs_entry("/sys/class/virtio-ports", "name", name)
    return None if port is None else "/dev/" + port


def open_channel(opts: Options) -> tuple[int, bool, socket.socket | None]:
    """(fd, is_port, socket object to keep alive)."""
    if opts.fd is not None:
        return opts.fd, False, None
    if opts.connect is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(opts.connect)
        return sock.fileno(), False, sock
    while True:
        path = find_port()
        if path is not None:
            try:
                return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC), True, None
            except OSError as exc:
                log(f"cannot open {path}: {exc}")
        time.sleep(0.1)  # the port may not be probed yet


def become_subreaper() -> None:
    import ctypes  # only off PID 1: the guest image need not ship ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        log(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")


def ensure_stdio() -> None:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def open_console() -> int:
    """/dev/console for PID 1's log lines, else stderr."""
    try:
        return os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return 2


def main(argv: list[str] | None = None) -> int:
    pid1 = os.getpid() == 1
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        if not pid1:
            raise
        log(f"bad command line ({exc.code}); using the defaults")  # PID 1 must not exit
        opts = Options()
    ensure_stdio()
    if pid1:
        log_to(open_console())
        try:
            write_machine_id()
        except OSError as exc:
            log(f"no machine id: {exc}")
    else:
        become_subreaper()
    if "PATH" not in os.environ:
        os.environ["PATH"] = DEFAULT_PATH
    while True:
        agent: Agent | None = None
        try:
            agent = Agent(opts.runtime, opts.state_dir, pid1, HANDLERS)
            fd, is_port, sock = open_channel(opts)
            agent.attach(Channel(agent, fd, is_port))
            agent.keepalive = sock
            agent.run()
            if not pid1:
                return 0
            log("event loop ended; restarting")
        except BaseException as exc:
            if not pid1:
                raise
            log(f"agent failed, restarting: {describe_exception(exc)}")
            if agent is not None:
                agent.loop.selector.close()
            time.sleep(1.0)
