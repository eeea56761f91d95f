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
from virtcontainers.errors import HypervisorError
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
