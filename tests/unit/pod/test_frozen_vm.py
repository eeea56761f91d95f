"""An exec into a VM frozen behind the pod's back names the VM, not the daemon."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod, started_here
from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import HypervisorError, StateError
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.stdio import Stdio


def test_exec_into_a_vm_paused_by_another_monitor_client_says_it_is_frozen(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    hypervisor = MockHypervisor()
    config = mock_pod("icy", image, ContainerConfig("c1", rootfs, Cmd(("sleep",))))

    async def scenario() -> None:
        pod = await started_here(config, hypervisor, MockAgent())
        try:
            hypervisor.frozen = True
            stdio = Stdio(stdout=os.open(os.devnull, os.O_WRONLY))
            try:
                for attempt in (
                    pod.exec_process("c1", Cmd(("true",)), stdio),
                    pod.exec_guest(Cmd(("true",)), stdio),
                ):
                    with pytest.raises(HypervisorError, match="its VM is paused, frozen outside"):
                        await attempt
            finally:
                stdio.close()  # refused: the caller's fds stay the caller's
            hypervisor.frozen = False
            process = await pod.exec_process("c1", Cmd(("true",)), Stdio())
            assert (await process.wait()).exit_code == 0
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("icy")


def test_the_pods_own_pause_is_not_taken_for_a_frozen_vm(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    hypervisor = MockHypervisor()
    config = mock_pod("nap", image, ContainerConfig("c1", rootfs, Cmd(("sleep",))))

    async def scenario() -> None:
        pod = await started_here(config, hypervisor, MockAgent())
        try:
            await pod.pause()
            assert not hypervisor.vcpus_running
            with pytest.raises(StateError, match="paused"):
                await pod.exec_process("c1", Cmd(("true",)), Stdio())
            await pod.resume()
            process = await pod.exec_process("c1", Cmd(("true",)), Stdio())
            assert (await process.wait()).exit_code == 0
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("nap")


def test_a_vm_frozen_while_the_pod_was_paused_runs_again_when_the_pod_resumes(
    run_root: Path, image: ImagePaths, rootfs: Path
) -> None:
    hypervisor = MockHypervisor()
    config = mock_pod("thaw", image, ContainerConfig("c1", rootfs, Cmd(("sleep",))))

    async def scenario() -> None:
        pod = await started_here(config, hypervisor, MockAgent())
        try:
            await pod.pause()
            hypervisor.frozen = True
            await pod.resume()  # QMP cont continues the VM, whoever stopped it
            process = await pod.exec_process("c1", Cmd(("true",)), Stdio())
            assert (await process.wait()).exit_code == 0
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("thaw")
