"""Whether a QEMU VM's vCPUs run, as the driver learns it from QEMU's STOP and
RESUME events rather than by asking: its own pause and resume, a pause behind
its back, and the state of a VM it adopts.  tests/unit/fake_qemu.py stands in
for QEMU (SIGUSR1 pauses it as an I/O error or another monitor client would)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

from tests.unit.hypervisor.qemu.test_hotplug import commands, config, run, running
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.base import VMState
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor

LAUNCH_PAUSE_AND_DIE = """
import asyncio, os, pickle, sys
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
async def main():
    vm = QemuHypervisor(sys.argv[1])
    await vm.create(pickle.loads(bytes.fromhex(sys.argv[2])))
    await vm.start(timeout=30)
    await vm.pause()
    print(vm.pid, flush=True)
    os._exit(0)  # a pod daemon killed while its pod was paused
asyncio.run(main())
"""


async def until_paused(vm: QemuHypervisor) -> None:
    while vm.vcpus_running:
        await asyncio.sleep(0.01)


def test_the_drivers_own_pause_and_resume_show_without_asking_qemu(
    tmp_path: Path, fake_binary: Path, qmp_log: Path
) -> None:
    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path)) as vm:
            assert vm.vcpus_running
            await vm.pause()
            assert not vm.vcpus_running  # the STOP event came before stop's answer
            await vm.resume()
            assert vm.vcpus_running
        assert not vm.vcpus_running  # no VM process: nothing runs

    run(scenario())
    assert commands(qmp_log, "query-status") == []


def test_a_pause_behind_the_drivers_back_shows_and_cont_undoes_it(
    tmp_path: Path, fake_binary: Path
) -> None:
    async def scenario() -> None:
        async with running(fake_binary, config(tmp_path)) as vm:
            assert vm.pid is not None
            os.kill(vm.pid, signal.SIGUSR1)
            await until_paused(vm)
            assert vm.state is VMState.RUNNING  # not the driver's pause
            await vm.pause()
            await vm.resume()  # QMP cont runs the VM, whoever paused it
            assert vm.vcpus_running
            # Events are not hoarded: qemu.qmp's keep-everything listener is off.
            default = vm._session()._client.events
            assert default.empty() and not default.history

    run(scenario())


def test_an_adopted_vm_that_was_paused_is_known_paused_until_resumed(
    tmp_path: Path, fake_binary: Path
) -> None:
    saved_config = pickle.dumps(config(tmp_path)).hex()
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH_PAUSE_AND_DIE, str(fake_binary), saved_config],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ref = hostproc.of(int(out.stdout.split()[0]))
    assert ref is not None

    async def scenario() -> None:
        vm = QemuHypervisor(str(fake_binary))
        await vm.adopt(config(tmp_path), ref, timeout=10)
        assert vm.state is VMState.PAUSED and not vm.vcpus_running
        await vm.resume()
        assert vm.vcpus_running
        await vm.stop(timeout=5)

    try:
        run(scenario())
    finally:
        hostproc.kill(ref)
