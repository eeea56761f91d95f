"""VM templates without a VM: the argv of a template and of a clone, template
keys, the factory directory, the choice between a clone and a cold boot, and
the daemon's clone path with the mock hypervisor and agent."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.unit.agent.test_client import next_frame, with_guest
from tests.unit.conftest import mock_pod
from tests.unit.guest.harness import AgentCallError, spawn_agent
from virtcontainers import api
from virtcontainers.agent import protocol
from virtcontainers.agent.client import AgentClient
from virtcontainers.agent.protocol import FrameDecoder
from virtcontainers.agent.results import CloneInit
from virtcontainers.cli.virtc.main import cli as virtc_cli
from virtcontainers.config import ImagePaths, PodConfig, Resources
from virtcontainers.errors import AgentProtocolError, ConfigError, NotFoundError, TemplateError
from virtcontainers.factory.template import TEMPLATE_PARAM, Template, TemplateShape
from virtcontainers.factory.templates import (
    AUTO_LOCK,
    AUTO_LOG,
    Factory,
    auto_templates_enabled,
    factory_dir,
)
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.base import Accelerator, MemoryFile, VMConfig
from virtcontainers.hypervisor.devices import SharedFsKind
from virtcontainers.hypervisor.qemu.command import QemuCommand
from virtcontainers.hypervisor.qemu.driver import QemuHypervisor
from virtcontainers.pod.boot import template_for_pod
from virtcontainers.storage.sharedfs import choose_shared_fs

TCG = Accelerator.TCG
NINE_P = SharedFsKind.VIRTIO_9P


@pytest.fixture(autouse=True)
def default_factory_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Factories live under each test's run root (or where the test says)."""
    monkeypatch.delenv("VC_FACTORY_DIR", raising=False)


def shape_of(image: ImagePaths, **changes: object) -> TemplateShape:
    fields: dict[str, object] = {
        "image": image,
        "vcpus": 1,
        "memory_mib": 512,
        "kernel_params": (),
        "accelerator": TCG,
        "shared_fs": NINE_P,
    }
    fields.update(changes)
    return TemplateShape(**fields)  # type: ignore[arg-type]


def fake_template(root: Path, shape: TemplateShape) -> Template:
    """A template directory as ``Factory.build`` leaves it, with placeholder files."""
    path = root / shape.key
    path.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    for name in ("memory", "state", "lock"):
        (path / name).write_bytes(b"")
    template = Template(path, shape.key, shape, time.time(), 1.0, shape.identity())
    (path / "template.json").write_text(json.dumps(template.to_json()))
    return template


def clone_command(tmp_path: Path, image: ImagePaths, incoming_fd: int | None) -> QemuCommand:
    shape = shape_of(image)
    memory = MemoryFile(tmp_path / "memory", shared=incoming_fd is None)
    incoming = tmp_path / "state" if incoming_fd is not None else None
    config = shape.vm_config(
        "vm1", tmp_path / "run", tmp_path / "a.sock", tmp_path, memory, incoming
    )
    return QemuCommand(config, TCG, shape.machine, config.devices, incoming_fd=incoming_fd)


# --- the command line ------------------------------------------------------------------


def test_template_vm_writes_its_ram_through_to_the_file(tmp_path: Path, image: ImagePaths) -> None:
    argv = clone_command(tmp_path, image, None).argv()
    backend = argv[argv.index("-object") + 1]
    assert backend == (
        f"memory-backend-file,id=vc-mem,size=512M,mem-path={tmp_path}/memory,share=on"
    )
    # q35: QEMU gives the VM generation id an ACPI table there, not on microvm.
    assert argv[argv.index("-M") + 1] == "q35,memory-backend=vc-mem"
    assert "vmgenid,id=vc-genid,guid=auto" in argv
    assert "-incoming" not in argv
    assert argv[argv.index("-append") + 1].endswith(f" {TEMPLATE_PARAM}")


def test_clone_maps_the_file_privately_and_waits_for_its_state(
    tmp_path: Path, image: ImagePaths
) -> None:
    command = clone_command(tmp_path, image, 7)
    argv = command.argv()
    assert "share=off" in argv[argv.index("-object") + 1]
    assert argv[argv.index("-incoming") + 1] == "defer"
    assert command.incoming_uri == "fd:7"
    assert 7 in command.passed_fds()
    # Same devices, same ids, in the same order as the template it loads.
    template = clone_command(tmp_path, image, None).argv()
    assert [a for a in argv if a.startswith(("virtio-", "vmgenid"))] == [
        a for a in template if a.startswith(("virtio-", "vmgenid"))
    ]
    assert "vmgenid,id=vc-genid,guid=auto" in argv  # a new generation id at each launch


def test_a_clone_may_not_write_through_to_its_template(tmp_path: Path, image: ImagePaths) -> None:
    with pytest.raises(ConfigError, match="copy-on-write"):
        VMConfig(
            vm_id="vm1",
            kernel=image.kernel,
            initrd=image.initrd,
            run_dir=tmp_path,
            memory_file=MemoryFile(tmp_path / "memory", shared=True),
            incoming=tmp_path / "state",
        )


def test_create_checks_the_saved_state_and_memory_file(tmp_path: Path, image: ImagePaths) -> None:
    shape = shape_of(image)
    private = MemoryFile(tmp_path / "memory", shared=False)
    config = shape.vm_config("vm1", tmp_path / "run", tmp_path / "a.sock", tmp_path, private)
    with pytest.raises(ConfigError, match="memory does not exist"):
        asyncio_run(QemuHypervisor().create(config))
    (tmp_path / "memory").write_bytes(b"")
    with_state = shape.vm_config(
        "vm1", tmp_path / "run", tmp_path / "a.sock", tmp_path, private, tmp_path / "state"
    )
    with pytest.raises(ConfigError, match="state does not exist"):
        asyncio_run(QemuHypervisor().create(with_state))


def asyncio_run(coroutine: Coroutine[object, object, object]) -> None:
    asyncio.run(coroutine)


# --- keys -------------------------------------------------------------------------------


def test_the_key_follows_everything_that_shapes_the_vm(image: ImagePaths) -> None:
    base = shape_of(image)
    assert base.key == shape_of(image).key
    others = [
        shape_of(image, vcpus=2),
        shape_of(image, memory_mib=1024),
        shape_of(image, kernel_params=("quiet",)),
        shape_of(image, accelerator=Accelerator.KVM),
        shape_of(image, shared_fs=SharedFsKind.VIRTIO_FS),
        shape_of(image, machine="microvm"),
    ]
    keys = {s.key for s in others}
    assert base.key not in keys and len(keys) == len(others)


def test_a_rebuilt_image_changes_the_key(image: ImagePaths) -> None:
    before = shape_of(image).key
    stamp = image.rootfs.stat().st_mtime_ns
    os.utime(image.rootfs, ns=(stamp, stamp + 1_000_000_000))
    assert shape_of(image).key != before


def test_a_missing_image_file_is_named(image: ImagePaths) -> None:
    image.initrd.unlink()
    with pytest.raises(TemplateError, match=f"initrd {image.initrd} cannot be read"):
        _ = shape_of(image).key


def test_a_host_without_qemu_has_no_current_template(
    tmp_path: Path, image: ImagePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fake_template(tmp_path / "factory", shape_of(image))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(TemplateError, match="qemu-system-x86_64 not found; install QEMU"):
        _ = shape_of(image).key
    assert not made.current()


# --- the factory directory ------------------------------------------------------------


def test_factory_dir_is_under_the_run_root_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert factory_dir(tmp_path) == tmp_path / "factory"
    monkeypatch.setenv("VC_FACTORY_DIR", str(tmp_path / "elsewhere"))
    assert factory_dir(tmp_path) == tmp_path / "elsewhere"


def test_find_lease_and_destroy(tmp_path: Path, image: ImagePaths) -> None:
    root = tmp_path / "factory"
    shape = shape_of(image)
    made = fake_template(root, shape)
    factory = Factory(root)
    assert factory.find(shape.key) == made
    assert factory.templates() == [made]
    with factory.lease(shape.key) as leased:
        assert leased == made
    assert made.current()
    assert factory.destroy() == [shape.key]
    assert not root.exists()
    with factory.lease(shape.key) as leased:
        assert leased is None
    assert factory.destroy() == []


def test_destroy_by_key_and_unknown_keys(tmp_path: Path, image: ImagePaths) -> None:
    root = tmp_path / "factory"
    small = fake_template(root, shape_of(image, memory_mib=256))
    large = fake_template(root, shape_of(image))
    factory = Factory(root)
    with pytest.raises(TemplateError, match="no template nope"):
        factory.destroy("nope")
    assert factory.destroy(small.key) == [small.key]
    assert factory.templates() == [large]


def test_stale_and_broken_templates_are_pruned(tmp_path: Path, image: ImagePaths) -> None:
    root = tmp_path / "factory"
    kept = fake_template(root, shape_of(image, memory_mib=256))
    stale = fake_template(root, shape_of(image))
    stale_record = json.loads((stale.path / "template.json").read_text())
    stale_record["vcpus"] = 3  # its key no longer says what it is
    (stale.path / "template.json").write_text(json.dumps(stale_record))
    (root / "0123456789abcdef").mkdir()  # no record at all
    factory = Factory(root)
    assert [t.key for t in factory.templates() if not t.current()] == [stale.key]
    assert factory.broken() == [root / "0123456789abcdef"]
    assert sorted(factory.prune()) == sorted([stale.key, "0123456789abcdef"])
    assert factory.templates() == [kept]


def test_a_factory_dir_others_may_write_is_refused(tmp_path: Path, image: ImagePaths) -> None:
    root = tmp_path / "factory"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    with pytest.raises(TemplateError, match="others may write"):
        Factory(root).destroy()
    with pytest.raises(TemplateError, match="others may write"):
        chosen(image, tmp_path, pod(image, "auto"))  # a pod will not load from it either


def test_virtio_fs_pods_cannot_be_templated(tmp_path: Path, image: ImagePaths) -> None:
    shape = shape_of(image, shared_fs=SharedFsKind.VIRTIO_FS)
    with pytest.raises(TemplateError, match="VC_SHARED_FS=9p"):
        asyncio_run(Factory(tmp_path / "factory").build(shape))
    assert not (tmp_path / "factory").exists()


# --- a clone, or a cold boot ----------------------------------------------------------


def pod(image: ImagePaths, boot: str, **kw: object) -> PodConfig:
    return PodConfig(id="p", image=image, boot=boot, **kw)  # type: ignore[arg-type]


def chosen(
    image: ImagePaths,
    root: Path,
    config: PodConfig,
    shared_fs: SharedFsKind = NINE_P,
    nics: int = 0,
) -> Template | None:
    with template_for_pod(config, image, TCG, shared_fs, root / "factory", nics) as template:
        return template


def test_auto_takes_a_matching_template_and_boots_cold_otherwise(
    tmp_path: Path, image: ImagePaths
) -> None:
    assert chosen(image, tmp_path, pod(image, "auto")) is None
    made = fake_template(tmp_path / "factory", shape_of(image))
    assert chosen(image, tmp_path, pod(image, "auto")) == made
    assert chosen(image, tmp_path, pod(image, "cold")) is None
    bigger = pod(image, "auto", resources=Resources(memory_mib=1024))
    assert chosen(image, tmp_path, bigger) is None
    # A network namespace's NICs are hot-plugged into a clone's spare slots,
    # as long as the template has enough of them.
    networked = pod(image, "auto", netns="/run/netns/x")
    assert chosen(image, tmp_path, networked, nics=4) == made
    assert chosen(image, tmp_path, networked, nics=5) is None


def test_template_mode_says_what_is_missing_and_how_to_make_it(
    tmp_path: Path, image: ImagePaths
) -> None:
    fake_template(tmp_path / "factory", shape_of(image))
    config = pod(image, "template", resources=Resources(vcpus=2, memory_mib=1024))
    with pytest.raises(TemplateError) as info:
        chosen(image, tmp_path, config)
    message = str(info.value)
    assert "pod 'p' asks to start from a VM template" in message
    assert "1 vCPU, 512 MiB" in message  # what there is
    assert "virtc factory init --vcpus 2 --memory 1024" in message
    with pytest.raises(TemplateError, match=r"needs 9 PCIe slots \(5 NIC\(s\), 4 spare\)"):
        chosen(image, tmp_path, pod(image, "template", netns="/run/netns/x"), nics=5)
    with pytest.raises(TemplateError, match="virtio-fs, which QEMU cannot save"):
        chosen(image, tmp_path, pod(image, "template"), SharedFsKind.VIRTIO_FS)


def test_the_pods_automatic_template_switch_is_checked_and_kept() -> None:
    with pytest.raises(ConfigError, match="auto_template"):
        PodConfig(id="p", auto_template="no")  # type: ignore[arg-type]
    config = PodConfig(id="p", auto_template=False)
    assert PodConfig.from_dict(config.to_dict()).auto_template is False
    stored = dict(config.to_dict())
    del stored["auto_template"]  # a record from before automatic templates
    assert PodConfig.from_dict(stored).auto_template is True


def test_pod_boot_mode_is_checked_and_kept() -> None:
    with pytest.raises(ConfigError, match="'warm' is not one of auto, template, cold"):
        PodConfig(id="p", boot="warm")
    config = PodConfig(id="p", boot="cold")
    assert PodConfig.from_dict(config.to_dict()).boot == "cold"
    stored = dict(config.to_dict())
    del stored["boot"]  # a record from before templates
    assert PodConfig.from_dict(stored).boot == "auto"


# --- the daemon's clone path, with the mock hypervisor and agent -----------------------


def test_a_mock_pod_starts_from_a_matching_template(run_root: Path, image: ImagePaths) -> None:
    accelerator, _ = detect_accelerator()
    config = mock_pod("tp", image)
    shape = TemplateShape.for_pod(config, image, accelerator, choose_shared_fs(None, accelerator))
    factory = Factory(run_root / "factory")
    made = fake_template(factory.root, shape)
    try:
        assert api.run_pod(config).template == made.key
        api.stop_pod("tp")
        cold = dataclasses.replace(mock_pod("tc", image), boot="cold")
        assert api.run_pod(cold).template is None
        api.stop_pod("tc")
    finally:
        factory.destroy()


def test_a_mock_pod_without_its_template_fails_clearly(run_root: Path, image: ImagePaths) -> None:
    config = dataclasses.replace(mock_pod("tx", image), boot="template")
    with pytest.raises(TemplateError, match="virtc factory init --vcpus 1 --memory 512"):
        api.run_pod(config)
    with pytest.raises(NotFoundError):
        api.pod_status("tx")  # run_pod deletes a pod that failed to start


# --- the agent's side --------------------------------------------------------------------

GOOD_ARGS: dict[str, Any] = {
    "hostname": "pod-1",
    "seed": "ab" * 32,
    "time_ns": 1_700_000_000_000_000_000,
    "shared_fs": "virtio-9p",
}


@pytest.mark.parametrize(
    "changes",
    [
        {"hostname": "-bad"},
        {"hostname": "a" * 64},
        {"seed": "ab" * 31},
        {"seed": "AB" * 32},
        {"seed": "xy" * 32},
        {"time_ns": True},
        {"time_ns": 0},
        {"shared_fs": "nfs"},
        {"extra": 1},
    ],
)
def test_init_clone_checks_its_arguments(changes: dict[str, Any]) -> None:
    with spawn_agent() as harness:
        harness.client.hello()
        with pytest.raises(AgentCallError) as info:
            harness.client.call("init_clone", **{**GOOD_ARGS, **changes})
        assert info.value.kind == "invalid", info.value.message


def test_init_clone_refuses_to_change_the_host() -> None:
    """Off PID 1 the agent runs on a host (tests): its name and clock are not its own."""
    with spawn_agent() as harness:
        harness.client.hello()
        with pytest.raises(AgentCallError) as info:
            harness.client.call("init_clone", **GOOD_ARGS)
        assert info.value.kind == "state"


def test_the_client_sends_init_clone_and_checks_its_answer(tmp_path: Path) -> None:
    async def guest(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dec: FrameDecoder
    ) -> None:
        request = await next_frame(reader, dec)
        assert request.json()["args"] == {
            "hostname": "h",
            "seed": (b"s" * 32).hex(),
            "time_ns": 1,
            "shared_fs": None,
        }
        answer = {"reseeded": "yes", "resumed_random": "ab" * 32}
        writer.write(protocol.response_ok(request.stream, answer))
        await writer.drain()
        await reader.read()

    async def body(client: AgentClient) -> None:
        with pytest.raises(AgentProtocolError, match="reseeded='yes'"):
            await client.init_clone("h", b"s" * 32, 1, None)

    asyncio.run(with_guest(tmp_path, guest, body))


@pytest.mark.parametrize(
    "answer",
    [
        {"reseeded": True},
        {"reseeded": True, "resumed_random": "AB" * 32},
        {"reseeded": True, "resumed_random": "ab" * 33},
        {"reseeded": True, "resumed_random": "ab" * 31 + "xy"},
        {"reseeded": True, "resumed_random": 12},
        {"reseeded": 1, "resumed_random": "ab" * 32},
    ],
)
def test_a_clones_answer_is_checked(answer: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CloneInit.parse(answer)


def test_a_clones_answer_is_read() -> None:
    parsed = CloneInit.parse({"reseeded": False, "resumed_random": "0f" * 32})
    assert parsed == CloneInit(False, b"\x0f" * 32)


# --- the CLI -------------------------------------------------------------------------------


def test_virtc_factory_status_and_destroy_when_empty(run_root: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(virtc_cli, ["factory", "status"])
    assert result.exit_code == 0 and "no templates" in result.output
    result = runner.invoke(virtc_cli, ["factory", "status", "--json"])
    assert json.loads(result.output) == {"root": str(run_root / "factory"), "templates": []}
    result = runner.invoke(virtc_cli, ["factory", "destroy"])
    assert result.exit_code == 0 and "no templates" in result.output
    result = runner.invoke(virtc_cli, ["run", "--boot", "warm", "true"])
    assert result.exit_code == 2 and "'warm' is not one of" in result.output


# --- templates made in the background -------------------------------------------------


def wait_for_builder(root: Path, timeout: float = 60) -> None:
    """Until the background builder lets go of its lock (it has exited)."""
    fd = os.open(root / AUTO_LOCK, os.O_RDWR | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the background builder did not end"
                time.sleep(0.05)
    finally:
        os.close(fd)


def test_automatic_templates_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for off in ("0", "no", "False", " off"):
        monkeypatch.setenv("VC_AUTO_TEMPLATES", off)
        assert not auto_templates_enabled()
    monkeypatch.setenv("VC_AUTO_TEMPLATES", "1")
    assert auto_templates_enabled()
    monkeypatch.delenv("VC_AUTO_TEMPLATES")
    assert auto_templates_enabled()


def test_one_background_builder_at_a_time(tmp_path: Path, image: ImagePaths) -> None:
    """A real builder process, given an image whose files are gone: it fails
    fast, says why in its log, and lets go of the lock."""
    root = tmp_path / "factory"
    factory = Factory(root)
    shape = shape_of(dataclasses.replace(image, kernel=tmp_path / "no-kernel"))
    root.mkdir(mode=0o700)
    held = os.open(root / AUTO_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not factory.start_auto_build(shape)  # one runs already
    finally:
        os.close(held)
    assert factory.start_auto_build(shape)
    wait_for_builder(root)
    log = (root / AUTO_LOG).read_text()
    assert "no template made" in log and "no-kernel" in log, log
    assert factory.templates() == []
    assert factory.destroy() == []
    assert not root.exists()  # the builder's lock and log go with the rest


def test_a_pod_that_misses_starts_the_build_unless_turned_off(
    tmp_path: Path, image: ImagePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "factory"
    assert chosen(image, tmp_path, pod(image, "auto")) is None
    assert not root.exists()  # VC_AUTO_TEMPLATES=0 in the tests' environment
    monkeypatch.setenv("VC_AUTO_TEMPLATES", "1")
    assert chosen(image, tmp_path, pod(image, "cold")) is None
    assert not root.exists()
    mock = pod(image, "auto", hypervisor="mock")
    assert chosen(image, tmp_path, mock) is None
    assert not root.exists()  # templates are QEMU's
    assert chosen(image, tmp_path, pod(image, "auto", auto_template=False)) is None
    assert not root.exists()
    assert chosen(image, tmp_path, pod(image, "auto")) is None
    wait_for_builder(root)
    assert "no template made" in (root / AUTO_LOG).read_text()  # the placeholder image


def test_automatic_templates_are_bounded_and_hand_made_ones_kept(
    tmp_path: Path, image: ImagePaths
) -> None:
    root = tmp_path / "factory"
    hand = fake_template(root, shape_of(image, memory_mib=128))
    automatic = []
    for n, memory in enumerate((256, 384, 640, 768)):
        made = fake_template(root, shape_of(image, memory_mib=memory))
        marked = dataclasses.replace(made, automatic=True, created_at=1000.0 + n)
        (made.path / "template.json").write_text(json.dumps(marked.to_json()))
        automatic.append(made.key)
    factory = Factory(root)
    assert factory.prune_automatic(kept=3) == [automatic[0]]
    assert {t.key for t in factory.templates()} == {hand.key, *automatic[1:]}
    assert all(t.automatic for t in factory.templates() if t.key != hand.key)


def test_a_shape_survives_its_json(image: ImagePaths) -> None:
    shape = shape_of(image, kernel_params=("a=1",), hotplug_ports=3)
    assert TemplateShape.from_json(json.loads(json.dumps(shape.to_json()))) == shape
    with pytest.raises(ValueError, match="vcpus"):
        TemplateShape.from_json({**shape.to_json(), "vcpus": "1"})


def test_virtc_factory_status_says_how_each_template_was_made(
    run_root: Path, image: ImagePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = run_root / "factory"
    fake_template(root, shape_of(image, memory_mib=256))
    made = fake_template(root, shape_of(image))
    automatic = dataclasses.replace(made, automatic=True)
    (made.path / "template.json").write_text(json.dumps(automatic.to_json()))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(virtc_cli, ["factory", "status"])
    assert result.exit_code == 0, result.output
    assert "automatically" in result.output and "by hand" in result.output
    result = CliRunner().invoke(virtc_cli, ["factory", "status", "--json"])
    entries = {t["key"]: t["automatic"] for t in json.loads(result.output)["templates"]}
    assert entries[made.key] is True and len(entries) == 2
    Factory(root).destroy()
