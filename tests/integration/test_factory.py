"""VM templates for real: a template VM booted and saved, pods started as its clones."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import short_temp_dir
from tests.integration.conftest import run_exec, shell, virtc
from tests.integration.test_pod_network import container_run, in_peer, networked_pod
from tests.integration.test_vc_runtime import Runtime, bundle
from tests.netlab import Lab, snapshot, tun_links
from virtcontainers import api
from virtcontainers.config import ContainerConfig, ImagePaths, PodConfig, Resources
from virtcontainers.errors import TemplateError
from virtcontainers.factory import pool
from virtcontainers.factory.template import Template
from virtcontainers.factory.templates import AUTO_LOCK, AUTO_LOG, Factory, init_template
from virtcontainers.host import proc as hostproc
from virtcontainers.image import GuestImage
from virtcontainers.storage import mounts
from virtcontainers.volumes import BlockVolume

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

MIN_TEMPLATE_AGE = 10.0
"""A clone's clock starts where its template's stopped: older than this, a clone
that kept it would be visibly late."""


@pytest.fixture(scope="module")
def template() -> Iterator[Template]:
    """The template of a default pod, made once for this module, destroyed after it."""
    base = short_temp_dir("vcf-")
    factory = Factory(base / "factory")
    try:
        made, _removed = init_template(factory=factory)
        yield made
        assert factory.destroy() == [made.key]
        assert not factory.root.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def templated(template: Template, no_leaks: Path, monkeypatch: pytest.MonkeyPatch) -> Template:
    """Pods of this test find the module's template."""
    monkeypatch.setenv("VC_FACTORY_DIR", str(template.path.parent))
    return template


def started(pod_id: str, rootfs: Path, script: str, lines: int = 1, **config: object) -> bytes:
    """Run a pod with one container running *script*, then sleeping; the first
    *lines* of its output."""
    api.run_pod(PodConfig(id=pod_id, **config))  # type: ignore[arg-type]
    out_r, out_w = os.pipe()
    container = ContainerConfig(
        "c", rootfs, shell(f"{script}; exec sleep 1000"), writable_layer=True
    )
    api.create_container(pod_id, container, api.Stdio(stdout=out_w))
    os.close(out_w)
    api.start_container(pod_id, "c")
    with os.fdopen(out_r, "rb") as output:
        return b"".join(output.readline() for _ in range(lines))


def digest(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def smaps_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in smaps_rollup of {pid}")


def test_a_clone_runs_a_container_as_its_own_pod(templated: Template, busybox_rootfs: Path) -> None:
    out = started(
        "clone", busybox_rootfs, "echo hi; hostname", lines=2, hostname="first", boot="template"
    )
    assert out == b"hi\nfirst\n"
    assert api.pod_status("clone").template == templated.key
    out, _, code = run_exec("clone", "c", shell("echo exec works"))
    assert (out, code) == (b"exec works\n", 0)
    read, write = os.pipe()
    handle = api.enter_pod("clone", shell("hostname"), api.Stdio(stdout=write))
    os.close(write)
    with os.fdopen(read, "rb") as output:
        assert output.read() == b"first\n"  # the VM's own name, not the template's
    assert api.wait_process("clone", None, handle.exec_id).exit_code == 0
    api.stop_pod("clone")
    api.delete_pod("clone")


def test_two_clones_at_once_have_their_own_clock_and_randomness(
    templated: Template, busybox_rootfs: Path
) -> None:
    time.sleep(max(0.0, templated.created_at + MIN_TEMPLATE_AGE - time.time()))
    before = {name: digest(templated.path / name) for name in ("memory", "state")}
    script = "date +%s; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; exec sleep 1000"
    outputs: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def start(pod_id: str) -> None:
        try:
            outputs[pod_id] = b""
            api.run_pod(PodConfig(id=pod_id, boot="template"))
            out_r, out_w = os.pipe()
            container = ContainerConfig("c", busybox_rootfs, shell(script), writable_layer=True)
            api.create_container(pod_id, container, api.Stdio(stdout=out_w))
            os.close(out_w)
            api.start_container(pod_id, "c")
            with os.fdopen(out_r, "rb") as output:
                outputs[pod_id] = output.readline() + output.readline()
        except BaseException as exc:
            errors.append(exc)

    host_before = time.time()
    threads = [threading.Thread(target=start, args=(f"twin{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    host_after = time.time()
    assert not errors, errors
    clocks: list[int] = []
    seeds: list[str] = []
    for pod_id, out in outputs.items():
        guest_time, random_hex = out.decode().split()
        clocks.append(int(guest_time))
        seeds.append(random_hex)
        assert api.pod_status(pod_id).template == templated.key
    for seconds in clocks:
        assert int(host_before) - 1 <= seconds <= host_after + 1, (clocks, host_before)
    assert seeds[0] != seeds[1]
    # Both QEMUs map the template's pages: what neither wrote is shared.
    for pod_id in outputs:
        vm_pid = api.pod_status(pod_id).vm_pid
        assert vm_pid is not None
        assert smaps_kib(vm_pid, "Pss") < smaps_kib(vm_pid, "Rss")
        assert smaps_kib(vm_pid, "Shared_Clean") > 16 * 1024
    for pod_id in outputs:
        api.stop_pod(pod_id)
        api.delete_pod(pod_id)
    assert {name: digest(templated.path / name) for name in before} == before


def test_a_pod_of_another_shape_boots_cold(templated: Template, busybox_rootfs: Path) -> None:
    other = Resources(memory_mib=384)
    with pytest.raises(TemplateError, match="virtc factory init --vcpus 1 --memory 384"):
        api.run_pod(PodConfig(id="other", boot="template", resources=other))
    assert started("other", busybox_rootfs, "echo cold", resources=other) == b"cold\n"
    assert api.pod_status("other").template is None
    api.stop_pod("other")
    api.delete_pod("other")


def test_destroy_leaves_nothing_and_running_clones_go_on(
    templated: Template, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = short_temp_dir("vcf-")
    try:
        factory = Factory(base / "factory")
        factory.root.mkdir(mode=0o700)
        copy = factory.root / templated.key
        subprocess.run(["cp", "-a", "--sparse=always", templated.path, copy], check=True)
        monkeypatch.setenv("VC_FACTORY_DIR", str(factory.root))
        out = started("orphan", busybox_rootfs, "echo up", boot="template")
        assert out == b"up\n"
        assert factory.destroy() == [templated.key]
        assert not factory.root.exists()
        out, _, code = run_exec("orphan", "c", shell("echo still here"))
        assert (out, code) == (b"still here\n", 0)
        with pytest.raises(TemplateError, match="has none for its shape"):
            api.run_pod(PodConfig(id="late", boot="template"))
        api.stop_pod("orphan")
        api.delete_pod("orphan")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_vc_runtime_starts_its_pods_from_the_template(
    templated: Template, busybox_rootfs: Path, tmp_path: Path
) -> None:
    runtime = Runtime(tmp_path / "vc-runtime")
    runtime("create", "--bundle", str(bundle(tmp_path, "t", busybox_rootfs, ["sleep", "99"])), "c1")
    [pod] = api.list_pods()
    assert pod.template == templated.key
    runtime("start", "c1")
    runtime("kill", "c1", "KILL")
    runtime.wait_for("c1", "stopped")
    runtime("delete", "c1")
    assert api.list_pods() == []


def test_a_networked_pod_is_a_clone_whose_nic_is_plugged_after_restore(
    templated: Template, busybox_rootfs: Path, lab: Lab, tmp_path: Path
) -> None:
    pair = lab.pod()
    before = snapshot(pair.path, "eth0")
    raw = tmp_path / "data.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(raw), "8M"], check=True, capture_output=True)
    api.run_pod(replace(networked_pod("netclone", pair, busybox_rootfs), boot="template"))
    assert api.pod_status("netclone").template == templated.key
    mac = container_run("netclone", "cat /sys/class/net/eth0/address").strip()
    assert mac == str(before["link"][2])  # type: ignore[index]
    assert "inet 192.0.2.2/24" in container_run("netclone", "ip -o addr show")
    assert "default via 192.0.2.1" in container_run("netclone", "ip route")
    container_run("netclone", "ping -c 1 -W 30 192.0.2.1")
    answer = in_peer(pair, "busybox", "ping", "-c", "1", "-W", "30", "192.0.2.2")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    # The template's spare slots take a block volume too.
    disk = ContainerConfig(
        "d", busybox_rootfs, shell("ls /data"), block_volumes=(BlockVolume(raw, "/data"),)
    )
    api.create_container("netclone", disk)
    api.start_container("netclone", "d")
    assert api.wait_container("netclone", "d").exit_code == 0
    api.delete_container("netclone", "d")
    api.stop_pod("netclone")
    assert tun_links(pair.path) == []
    api.delete_pod("netclone")


# --- templates made without asking ----------------------------------------------------

BUILDER_TIMEOUT = 600.0


def wait_for_builder(root: Path, timeout: float = BUILDER_TIMEOUT) -> None:
    """Until the background builder (if any) has exited; killed if it takes too long."""
    lock = root / AUTO_LOCK
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pid = int(os.pread(fd, 32, 0) or b"0")
                    with contextlib.suppress(ProcessLookupError):
                        pidfd = os.pidfd_open(pid)
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        os.close(pidfd)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    raise AssertionError(f"the background builder took over {timeout}s") from None
                time.sleep(0.2)
    finally:
        os.close(fd)


@pytest.fixture
def auto_factory(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, guest_image: GuestImage
) -> Iterator[tuple[Factory, ImagePaths]]:
    """Automatic templates on, in a factory of this test's own, for pods of a
    copy of the guest image (its own key; its files the test may touch)."""
    base = short_temp_dir("vcf-")
    try:
        image_dir = base / "image"
        image_dir.mkdir()
        copies = []
        for source in (guest_image.kernel, guest_image.initrd, guest_image.rootfs):
            shutil.copy(source, image_dir / source.name)
            copies.append(image_dir / source.name)
        factory = Factory(base / "factory")
        monkeypatch.setenv("VC_FACTORY_DIR", str(factory.root))
        monkeypatch.setenv("VC_AUTO_TEMPLATES", "1")
        try:
            yield factory, ImagePaths(*copies)
        finally:
            wait_for_builder(factory.root)
            factory.destroy()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def started_from(pod_id: str, image: ImagePaths, rootfs: Path) -> str | None:
    """Start a pod of *image*, check that it runs a container; the template it cloned."""
    assert started(pod_id, rootfs, "echo up", image=image) == b"up\n"
    template = api.pod_status(pod_id).template
    api.stop_pod(pod_id)
    api.delete_pod(pod_id)
    return template


def test_a_pod_without_a_template_has_one_made_for_the_next_and_again_after_a_rebuild(
    auto_factory: tuple[Factory, ImagePaths], busybox_rootfs: Path
) -> None:
    factory, image = auto_factory
    assert started_from("first", image, busybox_rootfs) is None
    wait_for_builder(factory.root)
    [made] = factory.templates()
    assert made.automatic and made.current(), (factory.root / AUTO_LOG).read_text()
    assert started_from("second", image, busybox_rootfs) == made.key
    # A rebuilt kernel: the template is stale, the next pod boots cold and
    # its build replaces the stale template.
    os.utime(image.kernel, ns=(time.time_ns(), time.time_ns()))
    assert not made.current()
    assert started_from("third", image, busybox_rootfs) is None
    wait_for_builder(factory.root)
    [remade] = factory.templates()
    assert remade.key != made.key and remade.current(), (factory.root / AUTO_LOG).read_text()
    assert started_from("fourth", image, busybox_rootfs) == remade.key


def test_virtc_run_starts_its_pod_from_the_template(templated: Template, run_root: Path) -> None:
    result = virtc(run_root, "run", "--name", "vr", "--", "echo", "hi")
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr
    assert api.pod_status("vr").template == templated.key
    api.delete_pod("vr", force=True)


def in_vm(pod_id: str, script: str) -> str:
    """What *script* prints, run in the pod's VM (not in a container)."""
    read, write = os.pipe()
    handle = api.enter_pod(pod_id, shell(script), api.Stdio(stdout=write))
    os.close(write)
    with os.fdopen(read, "rb") as output:
        text = output.read().decode()
    assert api.wait_process(pod_id, None, handle.exec_id).exit_code == 0
    return text


def test_sibling_clones_resume_with_random_state_boot_id_and_machine_id_of_their_own(
    templated: Template, busybox_rootfs: Path
) -> None:
    """The first bytes a clone's /dev/urandom gives as it resumes, read by its
    agent before the host's seed, differ from its sibling's only because its
    kernel reseeded on its new VM generation id (without the vmgenid device
    they are the same)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for pod_id in ("sib1", "sib2"):
        boot_id = started(pod_id, busybox_rootfs, "cat /proc/sys/kernel/random/boot_id")
        assert api.pod_status(pod_id).template == templated.key
        [resumed] = [e for e in api.pod_events(pod_id) if e.kind == "clone"]
        machine_id = in_vm(pod_id, "cat /etc/machine-id")
        assert len(machine_id.strip()) == 32, machine_id
        seen[pod_id] = (str(resumed.fields["resumed_random"]), boot_id.decode(), machine_id)
        api.stop_pod(pod_id)
        api.delete_pod(pod_id)
    first, second = seen.values()
    assert first[0] != second[0], "two clones resumed with the same random state"
    assert first[1] != second[1], "two clones have one boot id"
    assert first[2] != second[2], "two clones have one machine id"


@pytest.fixture
def pooled(
    templated: Template, no_leaks: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Template]:
    """A pool of one waiting clone of the module's template, emptied after the test."""
    monkeypatch.setenv(pool.ENV_POOL, "1")
    factory_root = templated.path.parent
    pool.set_pool_size(factory_root, 1)
    try:
        assert pool.fill(no_leaks, factory_root, templated.key) == 1
        yield templated
    finally:
        pool.set_pool_size(factory_root, 0)
        pool.stop(no_leaks)


def ready_standby(run_root: Path, other_than: str | None = None) -> pool.StandbyInfo:
    """The pool's ready standby (a new one, if *other_than* names the last)."""
    deadline = time.monotonic() + 180  # a hang guard: a standby boots in seconds
    while time.monotonic() < deadline:
        ready = [s for s in pool.standbys(run_root) if s.ready and s.path.name != other_than]
        if ready:
            return ready[0]
        assert any(s.alive for s in pool.standbys(run_root)), "no standby runs"
        time.sleep(0.2)
    raise AssertionError(f"no standby became ready: {pool.standbys(run_root)}")


def test_a_waiting_clone_becomes_the_next_pod_and_is_replaced(
    pooled: Template, no_leaks: Path, busybox_rootfs: Path
) -> None:
    standby = ready_standby(no_leaks)
    assert standby.vm is not None
    # A pod the clone does not fit boots as it would without a pool.
    api.run_pod(PodConfig(id="cold", boot="cold"))
    assert api.pod_status("cold").template is None
    api.delete_pod("cold", force=True)
    assert ready_standby(no_leaks) == standby
    script = "hostname; cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1"
    first = started("pooled1", busybox_rootfs, script, lines=4)
    status = api.pod_status("pooled1")
    assert (status.template, status.vm_pid) == (pooled.key, standby.vm.pid)
    assert first.startswith(b"pooled1\n")  # the pod's name, given at the claim
    steps = [e.fields["step"] for e in api.pod_events("pooled1") if e.kind == "boot"]
    assert steps[:1] == ["VM taken from the pool"]
    out, _, code = run_exec("pooled1", "c", shell("echo exec works"))
    assert (out, code) == (b"exec works\n", 0)
    assert not standby.path.exists()
    # Its daemon was the standby: killed, it is reattached as any pod's.
    assert status.daemon_pid is not None and standby.daemon is not None
    assert standby.daemon.pid == status.daemon_pid
    os.kill(status.daemon_pid, signal.SIGKILL)
    while hostproc.alive(standby.daemon):
        time.sleep(0.02)
    reattached = api.pod_status("pooled1")
    assert reattached.daemon_pid not in (None, status.daemon_pid), reattached.error
    assert reattached.vm_pid == standby.vm.pid
    out, _, code = run_exec("pooled1", "c", shell("hostname"))
    assert (out, code) == (b"pooled1\n", 0)
    # The pod that took the clone started the next one, a clone of its own.
    replacement = ready_standby(no_leaks, other_than=standby.path.name)
    second = started("pooled2", busybox_rootfs, script, lines=4)
    assert replacement.vm is not None
    assert api.pod_status("pooled2").vm_pid == replacement.vm.pid
    assert first.split(b"\n")[1] != second.split(b"\n")[1], "two clones have one boot id"
    assert first.split(b"\n", 2)[2] != second.split(b"\n", 2)[2], "two clones drew alike"
    for pod_id in ("pooled1", "pooled2"):
        api.stop_pod(pod_id)
        api.delete_pod(pod_id)
        assert not (no_leaks / "pods" / pod_id).exists()
    ready_standby(no_leaks)
    assert len(pool.stop(no_leaks)) == 1
    assert pool.standbys(no_leaks) == []


def test_a_standby_whose_daemon_died_is_collected(pooled: Template, no_leaks: Path) -> None:
    standby = ready_standby(no_leaks)
    assert standby.daemon is not None and standby.vm is not None
    pool.set_pool_size(pooled.path.parent, 0)  # no refill meanwhile
    os.kill(standby.daemon.pid, signal.SIGKILL)
    while hostproc.alive(standby.daemon):  # the kill lands a moment later
        time.sleep(0.02)
    assert hostproc.alive(standby.vm)  # QEMU outlives its daemon: gc's to kill
    report = api.collect_garbage()
    assert f"standby {standby.path.name}: its daemon died" in report.removed
    assert not hostproc.alive(standby.vm)
    assert pool.standbys(no_leaks) == []
    assert not mounts.mounts_under(no_leaks)


def test_virtc_keeps_a_pool_that_virtc_run_and_vc_runtime_take_from(
    templated: Template,
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    busybox_rootfs: Path,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(pool.ENV_POOL, "1")
    try:
        result = virtc(no_leaks, "factory", "pool", "--size", "1")
        assert result.returncode == 0, result.stderr
        standby = ready_standby(no_leaks)
        result = virtc(no_leaks, "run", "--name", "vp", "--timings", "--", "hostname")
        assert (result.returncode, result.stdout) == (0, "vp\n"), result.stderr
        assert "VM taken from the pool" in result.stderr
        assert not standby.path.exists()
        assert api.pod_status("vp").template == templated.key
        api.delete_pod("vp", force=True)
        replacement = ready_standby(no_leaks, other_than=standby.path.name)
        runtime = Runtime(tmp_path / "vc-runtime")
        runtime("create", "--bundle", str(bundle(tmp_path, "p", busybox_rootfs, ["true"])), "rt")
        [pod] = api.list_pods()
        assert replacement.vm is not None and pod.vm_pid == replacement.vm.pid
        runtime("delete", "--force", "rt")
        ready_standby(no_leaks)  # the replacement's replacement
        result = virtc(no_leaks, "factory", "pool", "--size", "0")
        assert result.returncode == 0 and "stopped" in result.stdout, result.stderr
        assert pool.standbys(no_leaks) == []
    finally:
        pool.set_pool_size(templated.path.parent, 0)
        pool.stop(no_leaks)


def test_a_networked_pod_takes_a_waiting_clone_and_gets_its_nic(
    pooled: Template, no_leaks: Path, busybox_rootfs: Path, lab: Lab
) -> None:
    standby = ready_standby(no_leaks)
    assert standby.vm is not None
    pair = lab.pod()
    api.run_pod(networked_pod("netpool", pair, busybox_rootfs))
    assert api.pod_status("netpool").vm_pid == standby.vm.pid
    assert "inet 192.0.2.2/24" in container_run("netpool", "ip -o addr show")
    container_run("netpool", "ping -c 1 -W 30 192.0.2.1")
    answer = in_peer(pair, "busybox", "ping", "-c", "1", "-W", "30", "192.0.2.2")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    api.stop_pod("netpool")
    assert tun_links(pair.path) == []
    api.delete_pod("netpool")


def test_a_pool_whose_clone_died_is_refilled_by_the_next_templated_pod(
    pooled: Template, no_leaks: Path, busybox_rootfs: Path
) -> None:
    standby = ready_standby(no_leaks)
    assert standby.vm is not None
    hostproc.kill(standby.vm)  # the waiting VM dies: its standby ends, the pool is short
    deadline = time.monotonic() + 60  # a hang guard
    while pool.standbys(no_leaks):
        assert time.monotonic() < deadline, pool.standbys(no_leaks)
        time.sleep(0.1)
    api.run_pod(PodConfig(id="refill"))
    assert api.pod_status("refill").template == pooled.key  # a clone, not the pool's
    ready_standby(no_leaks, other_than=standby.path.name)
    api.delete_pod("refill", force=True)
