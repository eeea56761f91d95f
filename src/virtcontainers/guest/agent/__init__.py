"""The virtcontainers guest agent.

Runs inside the VM as PID 1 (``python3.11 -S /opt/vc/agent/start.py``, a stub
that imports this package) after the initrd has mounted /proc, /sys, /dev,
cgroup2 and the shared directory.  It speaks the frame protocol of
``protocol.py`` (see docs/protocol.md) over one byte stream, drives an OCI
runtime (crun in the guest, runc in host tests) and relays container process
I/O with per-stream credit flow control.

Design constraints:

* standard library only, and few start-up imports: Python under TCG is slow
  to import (no asyncio, subprocess, argparse, re, shutil or traceback here);
* one thread and one ``selectors`` loop: the channel, process pipes, pty
  masters, console sockets and a self-pipe woken by SIGCHLD
  (``signal.set_wakeup_fd``);
* as PID 1 it reaps every child and never exits; otherwise it becomes a child
  subreaper so processes the runtime daemonizes are reparented to it.

Modules, from the bottom up: ``wire`` (the shared protocol module and the
bounds on what the agent sends), ``log``, ``args`` (request validation),
``osutil`` (files and child processes without shutil or subprocess), ``loop``,
``channel``, ``streams``, ``model`` (replies, containers, processes),
``runtime`` (OCI runtime calls), ``core`` (the ``Agent``: frames, reaping,
lookups, dispatch), the package ``ops`` (the operations, one module per
family, and ``HANDLERS``, their table by op name), and ``startup`` (the command
line and ``main``, which gives the agent that table).  No module imports one
above it, not even for typing: a module that needs something of the agent
declares it as a ``typing.Protocol`` under ``TYPE_CHECKING``.

Usage (on the host; ``--help`` lists the options)::

    python3 -S -m virtcontainers.guest.agent [--fd N | --connect PATH]
        [--runtime PATH] [--state-dir DIR]
"""

from .startup import main

__all__ = ["main"]
