"""A pod daemon hosted on an event loop of the calling process, as containerd's
shim hosts its pod: this process is the pod's daemon, and lives on after it."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.daemon.hosted import DaemonHost
from virtcontainers.errors import DaemonError
from virtcontainers.states import ContainerState, PodState


@pytest.fixture
def host() -> Iterator[DaemonHost]:
    """A DaemonHost on a loop running in a thread of this process, as the shim's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="host-loop", daemon=True)
    thread.start()
    daemons = DaemonHost(loop, asyncio.Event())
    try:
        yield daemons
    finally:
        loop.call_soon_threadsafe(daemons.stop.set)
        asyncio.run_coroutine_threadsafe(daemons.wait(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def sleeper(rootfs: Path) -> ContainerConfig:
    return ContainerConfig("c", rootfs, Cmd(("sleep",)))


def test_the_hosting_process_is_the_pods_daemon_and_outlives_it(
    run_root: Path, image: ImagePaths, rootfs: Path, host: DaemonHost
) -> None:
    status = api.run_pod(mock_pod("hosted", image, sleeper(rootfs)), host=host)
    assert status.state is PodState.RUNNING
    assert status.daemon_pid == os.getpid()
    [listed] = api.list_pods()
    assert (listed.id, listed.daemon_pid) == ("hosted", os.getpid())
    assert api.container_status("hosted", "c").state is ContainerState.RUNNING

    stopped = api.stop_pod("hosted")
    assert (stopped.state, stopped.daemon_pid, stopped.error) == (PodState.STOPPED, None, None)

    api.start_pod("hosted", host=host)
    api.delete_pod("hosted", force=True)  # never kills this process, its daemon
    assert api.list_pods() == []


def test_the_hosts_stop_stops_its_pods(
    run_root: Path, image: ImagePaths, rootfs: Path, host: DaemonHost
) -> None:
    api.run_pod(mock_pod("hosted", image, sleeper(rootfs)), host=host)
    host.loop.call_soon_threadsafe(host.stop.set)
    asyncio.run_coroutine_threadsafe(host.wait(), host.loop).result(60)
    status = api.pod_status("hosted")
    assert (status.state, status.daemon_pid) == (PodState.STOPPED, None)
    assert status.containers[0].state is ContainerState.STOPPED


def test_a_hosted_daemon_is_not_started_from_its_loops_thread(
    run_root: Path, image: ImagePaths, host: DaemonHost
) -> None:
    api.create_pod(mock_pod("hosted", image))

    async def start_here() -> None:
        api.start_pod("hosted", host=host)

    with pytest.raises(DaemonError, match="its own loop's thread"):
        asyncio.run_coroutine_threadsafe(start_here(), host.loop).result(30)
