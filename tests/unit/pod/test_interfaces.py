"""Interfaces added to and removed from running pods, with the mock VM and agent.

The host side is real: the test's own namespaces and veths (tests/netlab.py),
the pod's taps and tc redirects, its network.json, its daemon and RPC.  The
mock hypervisor holds each NIC's tap open while it is plugged, as QEMU does.

Safety: no frame is sent; every namespace is the test's, removed after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.netlab import Lab, ip, snapshot, tun_links
from tests.unit.conftest import mock_pod, started_here
from tests.unit.pod.test_lifecycle_faults import wait_for
from virtcontainers import api
from virtcontainers.agent.messages import NetInterface, NetRoute
from virtcontainers.agent.mock import MockAgent
from virtcontainers.cli.virtc.main import cli as virtc_cli
from virtcontainers.config import ImagePaths
from virtcontainers.errors import (
    AgentError,
    ConfigError,
    DaemonError,
    ExistsError,
    HypervisorError,
    NotFoundError,
    StateError,
)
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.pod.nics import NIC_APPEAR_TIMEOUT
from virtcontainers.pod.pod import Pod
from virtcontainers.states import PodState
from virtcontainers.status import InterfaceStatus
from virtcontainers.store import Store

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/net/tun").exists(),
    reason="needs root (network namespaces) and /dev/net/tun",
)


def network_json(pod_id: str) -> dict[str, object]:
    data = json.loads(Store().paths(pod_id).network.read_text())
    assert isinstance(data, dict)
    return data


def mac_of(path: str, name: str) -> str:
    return str(snapshot(path, name)["link"][2])  # type: ignore[index]


def test_an_interface_is_added_listed_and_removed(
    run_root: Path, image: ImagePaths, lab: Lab
) -> None:
    pair = lab.pod()
    eth0_before = snapshot(pair.path, "eth0")
    api.run_pod(replace(mock_pod("net", image), netns=pair.path))
    [eth0] = api.list_interfaces("net")
    assert (eth0.name, eth0.mtu, eth0.hotplugged) == ("eth0", 1400, False)
    assert eth0.addresses == ("192.0.2.2/24", "2001:db8::2/64")
    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pair.path, "eth1")

    added = api.add_interface("net", "eth1")

    mac = mac_of(pair.path, "eth1")
    assert added == InterfaceStatus("eth1", mac, 1400, ("203.0.113.2/24",), True)
    assert api.list_interfaces("net") == [eth0, added]
    assert len(tun_links(pair.path)) == 2  # the "VM" holds both taps
    assert [i["name"] for i in network_json("net")["ingress"]] == ["eth0", "eth1"]  # type: ignore[attr-defined]

    api.remove_interface("net", "eth1")

    assert snapshot(pair.path, "eth1") == eth1_before
    assert len(tun_links(pair.path)) == 1
    assert [i["name"] for i in network_json("net")["ingress"]] == ["eth0"]  # type: ignore[attr-defined]
    assert [i.name for i in api.list_interfaces("net")] == ["eth0"]
    api.add_interface("net", "eth1")  # and back again
    api.stop_pod("net")
    api.delete_pod("net")
    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == eth0_before
    assert snapshot(pair.path, "eth1") == eth1_before


def test_bad_requests_say_what_is_wrong_and_change_nothing(
    run_root: Path, image: ImagePaths, lab: Lab
) -> None:
    pair = lab.pod()
    api.run_pod(replace(mock_pod("net", image), netns=pair.path))
    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    ip("-n", pair.name, "link", "set", "eth1", "address", mac_of(pair.path, "eth0"))
    attached = snapshot(pair.path, "eth0")
    taps = tun_links(pair.path)
    description = network_json("net")

    with pytest.raises(ExistsError, match="interface 'eth0' already exists in pod 'net'"):
        api.add_interface("net", "eth0")
    with pytest.raises(NotFoundError, match="interface 'eth9' not found"):
        api.add_interface("net", "eth9")
    with pytest.raises(ConfigError, match="loopback"):
        api.add_interface("net", "lo")
    with pytest.raises(ConfigError, match="as eth0 has: the guest finds its NICs by MAC"):
        api.add_interface("net", "eth1")
    with pytest.raises(NotFoundError, match=r"\(attached: eth0\)"):
        api.remove_interface("net", "eth1")
    for bad in ("", "a/b", "x" * 16, "a b", ".."):
        with pytest.raises(ConfigError, match="is not an interface name"):
            api.add_interface("net", bad)
    api.pause_pod("net")
    with pytest.raises(StateError, match="it is paused, must be running"):
        api.add_interface("net", "eth1")
    assert [i.name for i in api.list_interfaces("net")] == ["eth0"]
    api.resume_pod("net")

    assert snapshot(pair.path, "eth0") == attached
    assert tun_links(pair.path) == taps
    assert network_json("net") == description
    api.stop_pod("net")
    with pytest.raises(StateError, match="it is stopped"):
        api.add_interface("net", "eth1")


def test_a_pod_without_a_network_namespace_has_no_interfaces_to_change(
    run_root: Path, image: ImagePaths
) -> None:
    api.run_pod(mock_pod("plain", image))
    assert api.list_interfaces("plain") == []
    with pytest.raises(ConfigError, match="pod 'plain' has no network namespace"):
        api.add_interface("plain", "eth0")
    with pytest.raises(ConfigError, match="no network namespace"):
        api.remove_interface("plain", "eth0")


def test_a_hot_plugged_interface_is_released_when_the_daemon_dies(
    run_root: Path, image: ImagePaths, lab: Lab
) -> None:
    pair = lab.pod()
    eth0_before = snapshot(pair.path, "eth0")
    status = api.run_pod(replace(mock_pod("orphan", image), netns=pair.path))
    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pair.path, "eth1")
    api.add_interface("orphan", "eth1")
    assert status.daemon_pid is not None
    os.kill(status.daemon_pid, signal.SIGKILL)  # the "VM" and its taps die with it

    wait_for(lambda: api.pod_status("orphan").state is PodState.STOPPED)

    assert tun_links(pair.path) == []
    assert snapshot(pair.path, "eth0") == eth0_before
    assert snapshot(pair.path, "eth1") == eth1_before
    with pytest.raises(StateError):
        api.remove_interface("orphan", "eth1")
    with pytest.raises((StateError, DaemonError)):
        api.list_interfaces("orphan")


def test_virtc_pod_net_adds_lists_and_removes(run_root: Path, image: ImagePaths, lab: Lab) -> None:
    pair = lab.pod()
    api.run_pod(replace(mock_pod("cli", image), netns=pair.path))
    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    runner = CliRunner()

    added = runner.invoke(virtc_cli, ["pod", "net", "add", "cli", "eth1"])
    assert added.exit_code == 0, added.output
    assert added.output.split() == ["eth1", mac_of(pair.path, "eth1"), "203.0.113.2/24"]
    table = runner.invoke(virtc_cli, ["pod", "net", "ls", "cli"]).output
    assert "eth0" in table and "boot" in table and "eth1" in table and "hot-plug" in table
    listed = json.loads(runner.invoke(virtc_cli, ["pod", "net", "ls", "cli", "--json"]).output)
    assert [(i["name"], i["hotplugged"]) for i in listed] == [("eth0", False), ("eth1", True)]
    removed = runner.invoke(virtc_cli, ["pod", "net", "rm", "cli", "eth1"])
    assert removed.exit_code == 0, removed.output
    again = runner.invoke(virtc_cli, ["pod", "net", "rm", "cli", "eth1"])
    assert again.exit_code == 1 and "interface 'eth1' not found" in again.output
    ghost = runner.invoke(virtc_cli, ["pod", "net", "add", "ghost", "eth1"])
    assert ghost.exit_code == 1 and "pod 'ghost' not found" in ghost.output


# -- failures half-way, on a Pod in this process -------------------------------


class RefusingAgent(MockAgent):
    """A guest that never shows a hot-plugged NIC."""

    async def configure_network(
        self, interfaces: Sequence[NetInterface], routes: Sequence[NetRoute], wait: float = 0.0
    ) -> None:
        await super().configure_network(interfaces, routes, wait)
        if wait:
            raise AgentError("configure_network", "not_found", "no network interface has MAC")


async def start_pod(
    path: str, image: ImagePaths, hypervisor: MockHypervisor, agent: MockAgent
) -> Pod:
    """Pod "inproc" on the namespace at ``path``, started in this process."""
    return await started_here(replace(mock_pod("inproc", image), netns=path), hypervisor, agent)


@pytest.mark.parametrize("failure", ["hypervisor", "agent"])
def test_a_failed_hot_plug_undoes_everything(
    run_root: Path, image: ImagePaths, lab: Lab, failure: str
) -> None:
    pair = lab.pod()
    hypervisor = MockHypervisor(hotplug=failure != "hypervisor")
    agent = RefusingAgent()

    async def scenario() -> None:
        pod = await start_pod(pair.path, image, hypervisor, agent)
        try:
            # pyroute2 runs an event loop of its own: it is called off this one.
            lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
            before = await asyncio.to_thread(snapshot, pair.path, "eth1")
            taps = await asyncio.to_thread(tun_links, pair.path)
            description = network_json("inproc")

            error = HypervisorError if failure == "hypervisor" else AgentError
            with pytest.raises(error):
                await pod.add_interface("eth1")

            assert await asyncio.to_thread(snapshot, pair.path, "eth1") == before
            assert await asyncio.to_thread(tun_links, pair.path) == taps
            assert network_json("inproc") == description
            assert [n.interface.name for n in pod.network.nics] == ["eth0"]
            if failure == "agent":
                assert ("unplug_device", "net1") in hypervisor.calls
                assert agent.calls[-1][1]["wait"] == NIC_APPEAR_TIMEOUT
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("inproc")
    assert tun_links(pair.path) == []


def test_a_remove_that_failed_after_the_unplug_can_be_finished(
    run_root: Path, image: ImagePaths, lab: Lab
) -> None:
    pair = lab.pod()
    hypervisor = MockHypervisor()

    async def scenario() -> None:
        pod = await start_pod(pair.path, image, hypervisor, MockAgent())
        try:
            lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
            before = await asyncio.to_thread(snapshot, pair.path, "eth1")
            added = await pod.add_interface("eth1")
            assert added.hotplugged
            # The NIC left the VM, but its tap and redirects are still there.
            await hypervisor.unplug_device(pod.network.nic("eth1").device_id)

            await pod.remove_interface("eth1")

            assert await asyncio.to_thread(snapshot, pair.path, "eth1") == before
            assert [i.name for i in pod.list_interfaces()] == ["eth0"]
        finally:
            await pod.stop()
            pod.executor.shutdown(wait=True, cancel_futures=True)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    api.delete_pod("inproc")
    assert tun_links(pair.path) == []
