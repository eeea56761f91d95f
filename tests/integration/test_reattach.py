"""A pod daemon killed with SIGKILL: the VM and its containers live on, and the
next call starts a daemon that reattaches.  Output produced meanwhile is
delivered (the guest holds it), exit codes are reported, and attach and wait
work again.  A pod with a network namespace keeps its network: traffic, port
forwarding, hot-plug, and a clean namespace after it.  A pod whose VM died too
is cleaned up and says so.

Safety: the namespaces, veths and addresses of the network test are the
test's own (tests/netlab.py); traffic flows only between them and the VM.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import qemu_pids, read_all, run_exec, shell, virtc
from tests.integration.test_block_rootfs import host_mount
from tests.integration.test_block_volumes import ext4_image, guest_disks, image_file
from tests.integration.test_pod_network import container_run, echo_through, in_peer, nft_tables
from tests.loopdev import loop_device, make_ext4_image
from tests.netlab import Lab, NetPair, ip, snapshot, tun_links
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.host import proc as hostproc
from virtcontainers.network.loopnat import TABLE
from virtcontainers.states import ContainerState, PodState
from virtcontainers.store import Store
from virtcontainers.volumes import BlockVolume

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]
POD = "reattach"
COUNT = 40


def counter(count: int, code: int) -> str:
    return f"i=0; while [ $i -lt {count} ]; do echo $i; i=$((i+1)); sleep 0.2; done; exit {code}"


def numbers(output: bytes) -> list[int]:
    """The counter's lines, a line the dead daemon had written but not yet
    credited (sent again: at least once) counted once."""
    found: list[int] = []
    for line in output.decode().split():
        if not found or int(line) != found[-1]:
            found.append(int(line))
    return found


def kill_daemon() -> None:
    """SIGKILL the pod's daemon through the pidfd of the record's ProcessRef."""
    record = Store().load(POD)
    assert record.daemon is not None and record.vm is not None
    assert hostproc.kill(record.daemon)
    deadline = time.monotonic() + 10
    while hostproc.alive(record.daemon):
        assert time.monotonic() < deadline, "the daemon did not die"
        time.sleep(0.05)
    assert hostproc.alive(record.vm), "QEMU died with its daemon"
    time.sleep(1)  # the container runs on with nobody attached


def wait_for_text(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never reached {path}"
        time.sleep(0.1)


def test_a_killed_daemon_is_reattached_and_nothing_is_lost(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell(counter(COUNT, 3)), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    log = no_leaks / "pods" / POD / "logs" / "c.log"
    wait_for_text(log, "3\n")
    old_daemon = api.pod_status(POD).daemon_pid
    kill_daemon()

    listed = virtc(no_leaks, "pod", "list")  # the next call, from another process
    assert listed.returncode == 0, listed.stderr
    status = api.pod_status(POD)
    assert status.state is PodState.RUNNING, status
    assert status.daemon_pid not in (None, old_daemon)
    assert status.error is None

    out_r, out_w = os.pipe()
    api.attach_container(POD, "c", api.Stdio(stdout=out_w))
    os.close(out_w)
    attached: list[bytes] = []
    reader = threading.Thread(target=lambda: attached.append(read_all(out_r)))
    reader.start()
    exit_status = api.wait_container(POD, "c")
    reader.join(timeout=60)

    assert exit_status.exit_code == 3
    assert api.container_status(POD, "c").state is ContainerState.STOPPED
    assert numbers(log.read_bytes()) == list(range(COUNT))
    tail = numbers(attached[0])
    assert tail, "attach after the reattach saw no output"
    assert tail == list(range(tail[0], COUNT))
    api.stop_pod(POD)
    api.delete_pod(POD)


PEER_ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 8080), timeout=60) as s:
    s.sendall(b"through the reattached daemon")
    s.shutdown(socket.SHUT_WR)
    print(s.makefile("rb").read().decode())
"""


def peer_echo(pair: NetPair, address: str) -> str:
    done = in_peer(pair, "python3", "-c", PEER_ECHO_CLIENT, address)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_pod_with_a_network_namespace_keeps_its_network_across_a_reattach(
    lab: Lab, no_leaks: Path, busybox_rootfs: Path
) -> None:
    pair = lab.pod()
    ip("-n", pair.name, "link", "set", "lo", "up")
    eth0_before = snapshot(pair.path, "eth0")
    server = ContainerConfig(
        "c", busybox_rootfs, shell("exec nc -ll -p 8080 -e cat"), writable_layer=True
    )
    config = PodConfig(id=POD, netns=pair.path, containers=(server,), forward_loopback=True)
    api.run_pod(config)
    container_run(POD, "until netstat -ltn | grep -q ':8080 '; do sleep 0.2; done")
    [eth0_tap] = tun_links(pair.path)
    kill_daemon()

    assert virtc(no_leaks, "pod", "list").returncode == 0  # reattaches
    status = api.pod_status(POD)
    assert status.state is PodState.RUNNING and status.error is None, status
    assert peer_echo(pair, "192.0.2.2") == "through the reattached daemon"
    assert echo_through(pair.path, "127.0.0.1", b"forwarded again") == b"forwarded again"
    assert [(i.name, i.hotplugged) for i in api.list_interfaces(POD)] == [("eth0", False)]

    lab.veth(pair, "eth1", "203.0.113.2/24", "203.0.113.1/24")
    eth1_before = snapshot(pair.path, "eth1")
    assert api.add_interface(POD, "eth1").hotplugged
    assert peer_echo(pair, "203.0.113.2") == "through the reattached daemon"
    api.remove_interface(POD, "eth1")
    assert tun_links(pair.path) == [eth0_tap]
    assert snapshot(pair.path, "eth1") == eth1_before
    # The NIC of boot, which the new daemon knows from the record, comes out too.
    api.remove_interface(POD, "eth0")
    assert "192.0.2.2" not in container_run(POD, "ip -o addr show")
    assert tun_links(pair.path) == []
    api.add_interface(POD, "eth0")
    assert peer_echo(pair, "192.0.2.2") == "through the reattached daemon"

    api.stop_pod(POD)
    assert tun_links(pair.path) == []
    assert TABLE not in nft_tables(pair.name)
    assert snapshot(pair.path, "eth0") == eth0_before
    assert snapshot(pair.path, "eth1") == eth1_before
    api.delete_pod(POD)


def test_a_pod_with_a_block_volume_is_reattached_and_unplugs_it_later(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    raw = ext4_image(tmp_path / "data.raw", "from the raw image\n")
    volume = BlockVolume(raw, "/data")
    worker = ContainerConfig(
        "c", busybox_rootfs, shell("exec sleep 1000"), writable_layer=True, block_volumes=(volume,)
    )
    api.run_pod(PodConfig(id=POD, containers=(worker,), resources=Resources(hotplug_slots=2)))
    assert sorted(guest_disks(POD)) == ["vda", "vdb"]
    kill_daemon()

    assert virtc(no_leaks, "pod", "list").returncode == 0  # reattaches
    status = api.pod_status(POD)
    assert status.state is PodState.RUNNING and status.error is None, status
    out, _, code = run_exec(
        POD, "c", shell("cat /data/hello.txt; echo after > /data/new.txt; sync")
    )
    assert (out, code) == (b"from the raw image\n", 0)
    api.stop_container(POD, "c", timeout=1)
    api.delete_container(POD, "c")
    assert guest_disks(POD) == ["vda"]  # the new daemon unplugged the disk of boot
    assert image_file(raw, "new.txt") == "after\n"

    # Both slots are free: a new container plugs the image and another disk.
    other = ext4_image(tmp_path / "other.raw", "another\n")
    again = ContainerConfig(
        "d",
        busybox_rootfs,
        Cmd(("cat", "/data/new.txt", "/other/hello.txt")),
        block_volumes=(volume, BlockVolume(other, "/other")),
    )
    api.create_container(POD, again)
    api.start_container(POD, "d")
    assert api.wait_container(POD, "d").exit_code == 0
    api.stop_pod(POD)
    api.delete_pod(POD)


def test_a_block_rootfs_is_claimed_again_by_the_daemon_that_reattaches(
    no_leaks: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    image = make_ext4_image(tmp_path / "root.img", busybox_rootfs, 32)
    with loop_device(image) as device:
        config = ContainerConfig("c", device, shell("exec sleep 1000"), rootfs_fstype="ext4")
        api.run_pod(PodConfig(id=POD, containers=(config,), resources=Resources(hotplug_slots=1)))
        kill_daemon()

        assert virtc(no_leaks, "pod", "list").returncode == 0  # reattaches
        assert api.pod_status(POD).error is None
        refused = host_mount(device, tmp_path / "host")
        assert refused.returncode != 0 and "busy" in refused.stderr.lower(), refused.stderr
        _, _, code = run_exec(POD, "c", shell("echo after the reattach > /written; sync"))
        assert code == 0
        api.stop_container(POD, "c", timeout=1)
        api.delete_container(POD, "c")
        assert guest_disks(POD) == ["vda"]
        mounted = host_mount(device, tmp_path / "host")
        assert mounted.returncode == 0, mounted.stderr
        try:
            assert (tmp_path / "host" / "written").read_text() == "after the reattach\n"
        finally:
            subprocess.run(["umount", str(tmp_path / "host")], check=True)
        api.stop_pod(POD)
        api.delete_pod(POD)


def test_an_exec_under_way_when_the_daemon_dies_is_delivered(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell("sleep 300"), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    first_r, first_w = os.pipe()
    handle = api.enter_container(POD, "c", shell(counter(30, 5)), api.Stdio(stdout=first_w))
    os.close(first_w)
    early = b""
    while b"3\n" not in early:
        chunk = os.read(first_r, 4096)
        assert chunk, "the exec's output ended early"
        early += chunk
    kill_daemon()
    early += read_all(first_r)  # ends: the dead daemon held the other end

    second_r, second_w = os.pipe()
    api.attach_process(POD, "c", handle.exec_id, api.Stdio(stdout=second_w))  # reattaches
    os.close(second_w)
    late = read_all(second_r)

    assert api.wait_process(POD, "c", handle.exec_id).exit_code == 5
    assert numbers(early + late) == list(range(30))
    assert api.pod_status(POD).state is PodState.RUNNING
    api.stop_pod(POD)
    api.delete_pod(POD)


def test_a_pod_whose_vm_died_too_is_cleaned_up_and_says_why(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell("sleep 300"), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    record = Store().load(POD)
    assert record.daemon is not None and record.vm is not None
    hostproc.kill(record.daemon)
    hostproc.kill(record.vm)
    deadline = time.monotonic() + 10
    while hostproc.alive(record.vm) or hostproc.alive(record.daemon):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    status = api.pod_status(POD)
    assert status.state is PodState.STOPPED
    assert status.error is not None and "VM is gone too" in status.error
    assert api.container_status(POD, "c").exit_code == 137
    assert not qemu_pids(no_leaks)
    api.delete_pod(POD)


def test_gc_kills_the_vm_of_a_dead_daemon_instead(no_leaks: Path, busybox_rootfs: Path) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell("sleep 300"), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    kill_daemon()
    report = api.collect_garbage()
    assert any("dead daemon" in line for line in report.removed), report
    assert not qemu_pids(no_leaks)
    assert api.pod_status(POD).state is PodState.STOPPED
    api.delete_pod(POD)


def test_a_paused_pod_is_reattached_paused(no_leaks: Path, busybox_rootfs: Path) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell(counter(20, 4)), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    log = no_leaks / "pods" / POD / "logs" / "c.log"
    wait_for_text(log, "2\n")
    api.pause_pod(POD)
    kill_daemon()

    status = api.pod_status(POD)  # reattaches: the guest answers, then is frozen again
    assert status.state is PodState.PAUSED, status
    api.resume_pod(POD)
    assert api.wait_container(POD, "c").exit_code == 4
    assert numbers(log.read_bytes()) == list(range(20))
    api.stop_pod(POD)
    api.delete_pod(POD)


def test_a_reattached_pod_still_goes_with_its_owner(no_leaks: Path, busybox_rootfs: Path) -> None:
    owner = subprocess.Popen(["sleep", "600"])
    try:
        ref = hostproc.of(owner.pid)
        container = ContainerConfig("c", busybox_rootfs, shell("sleep 300"), writable_layer=True)
        api.run_pod(PodConfig(id=POD, containers=(container,)), owner=ref)
        kill_daemon()
        assert api.pod_status(POD).state is PodState.RUNNING  # reattached
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 120
    while api.list_pods():
        assert time.monotonic() < deadline, "the pod outlived its owner"
        time.sleep(0.5)
    assert not qemu_pids(no_leaks)


def test_a_follower_of_events_follows_the_new_daemon(no_leaks: Path, busybox_rootfs: Path) -> None:
    container = ContainerConfig("c", busybox_rootfs, shell("sleep 300"), writable_layer=True)
    api.run_pod(PodConfig(id=POD, containers=(container,)))
    follower = api.follow_events(POD, poll=5)
    kinds = [next(follower).kind]  # from the first daemon
    kill_daemon()
    assert api.pod_status(POD).state is PodState.RUNNING  # reattached, before the
    # follower asks again: its next question reaches the new daemon, which numbers anew

    def follow() -> None:
        for event in follower:
            kinds.append(event.kind)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while "reattach" not in kinds:
        assert time.monotonic() < deadline, kinds
        time.sleep(0.2)
    api.stop_pod(POD)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert kinds[-1] == "stopped"
    api.delete_pod(POD)
