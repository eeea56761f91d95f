"""Making a VM template: boot the template VM, wait for its agent, save it, stop it.

The VM and its agent connection come from their rooms' factories
(:func:`~virtcontainers.hypervisor.new_hypervisor`, ``new_agent``): this
module talks to the Hypervisor and Agent interfaces only.  The
:class:`~virtcontainers.factory.templates.Factory` calls :func:`make_template`
in a staging directory that it then keeps or removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

from virtcontainers.agent import AgentKind, new_agent
from virtcontainers.agent.base import Agent
from virtcontainers.errors import TemplateError, VcError
from virtcontainers.factory.template import (
    HYPERVISOR,
    LOCK_FILE,
    Progress,
    Template,
    TemplateShape,
)
from virtcontainers.host.logtail import tail
from virtcontainers.hypervisor import new_hypervisor
from virtcontainers.hypervisor.base import Hypervisor, MemoryFile

TEMPLATE_VM_ID = "vc-template"
SAVE_TIMEOUT = 120.0


async def make_template(
    shape: TemplateShape, key: str, staging: Path, progress: Progress | None, timeout: float
) -> Template:
    """Boot the template VM in *staging*, wait for its agent, save it, stop it."""
    say = progress or (lambda _message: None)
    vm_dir = staging / "vm"
    export = vm_dir / "shared"  # the share exists, empty; the template never mounts it
    export.mkdir(parents=True, mode=0o700)
    (staging / LOCK_FILE).touch(mode=0o600)
    memory = MemoryFile(staging / "memory", shared=True)
    config = shape.vm_config(TEMPLATE_VM_ID, vm_dir, vm_dir / "agent.sock", export, memory)
    hypervisor = new_hypervisor(HYPERVISOR)
    agent = new_agent(AgentKind.VC, TEMPLATE_VM_ID)
    identity = shape.identity()
    await hypervisor.create(config)
    say(f"booting the template VM ({shape.describe()})")
    started = time.monotonic()
    await hypervisor.start()
    try:
        await await_agent(hypervisor, agent, timeout)
        boot_seconds = time.monotonic() - started
        # Warms what the first container needs: crun and its libraries land in
        # the guest's page cache, and the agent caches its version.  Clones
        # inherit both.
        await agent.guest_details()
        await agent.close()
        say(f"agent up after {boot_seconds:.1f}s; saving the template")
        await hypervisor.save_state(staging / "state", SAVE_TIMEOUT)
        memory.path.chmod(0o600)  # QEMU made it under its umask
    finally:
        await agent.close()
        await hypervisor.stop()
        with contextlib.suppress(OSError):
            shutil.copyfile(hypervisor.console_path(), staging / "console.log")
        shutil.rmtree(vm_dir, ignore_errors=True)
    return Template(staging, key, shape, time.time(), round(boot_seconds, 3), identity)


async def await_agent(hypervisor: Hypervisor, agent: Agent, timeout: float) -> None:
    """Connect to the template VM's agent; a VM that dies first is a TemplateError
    with its console."""
    vm_exit = asyncio.ensure_future(hypervisor.wait())
    connect = asyncio.ensure_future(agent.connect(hypervisor.agent_socket_path(), timeout))
    try:
        await asyncio.wait({vm_exit, connect}, return_when=asyncio.FIRST_COMPLETED)
        if connect.done() and connect.exception() is None:
            return
        await asyncio.wait({vm_exit}, timeout=3)
        why = f"exited with code {vm_exit.result()}" if vm_exit.done() else "lost its agent"
        console = tail(hypervisor.console_path(), 2048) or "(no console output)"
        error = connect.exception() if connect.done() else None
        raise TemplateError(
            f"the template VM {why} before its agent answered ({error}); "
            f"its console ended with:\n{console}"
        ) from error
    finally:
        vm_exit.cancel()
        if not connect.done():
            connect.cancel()
        with contextlib.suppress(asyncio.CancelledError, VcError, OSError):
            await connect
