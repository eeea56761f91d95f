"""Configs refuse bad input with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.agent import protocol
from virtcontainers.agent.protocol import MAX_PAYLOAD
from virtcontainers.config import MAX_CMD_BYTES, Cmd, ContainerConfig, PodConfig, Resources, User
from virtcontainers.errors import ConfigError
from virtcontainers.spec import container_spec
from virtcontainers.volumes import Mount


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda root: PodConfig(id="bad id"), "pod id"),
        (lambda root: PodConfig(id="-leading-dash"), "pod id"),
        (lambda root: PodConfig(id="x" * 65), "pod id"),
        (lambda root: Resources(memory_mib=16), "resources.memory_mib"),
        (lambda root: Resources(memory_mib=10**9).check_host(), "resources.memory_mib"),
        (lambda root: Resources(vcpus=0), "resources.vcpus"),
        (lambda root: Resources(vcpus=True), "resources.vcpus"),
        (lambda root: Cmd(()), "cmd.args"),
        (lambda root: Cmd(("sh",), env=("NOEQUALS",)), "cmd.env"),
        (lambda root: Cmd(("sh",), cwd="relative"), "cmd.cwd"),
        (lambda root: Cmd(("sh",), user="root"), "cmd.user"),  # type: ignore[arg-type]
        (lambda root: User(uid=-1), "cmd.user.uid"),
        (lambda root: User(gid=2**32 - 1), "cmd.user.gid"),
        (lambda root: User(additional_gids=(1, True)), "cmd.user.additional_gids"),
        (lambda root: User.parse("root"), "cmd.user"),
        (lambda root: User.parse("1:2:3:4"), "cmd.user"),
        (lambda root: Cmd(("sh",), runtime_settings={"args": ["x"]}), "cmd.runtime_settings"),
        (
            lambda root: ContainerConfig("c", root, Cmd(("sh",)), oci={"process": {}}),
            "container.oci",
        ),
        (
            lambda root: ContainerConfig("c", root / "missing", Cmd(("sh",))).check_host(),
            "container.rootfs",
        ),
        (lambda root: ContainerConfig("c", Path("relative"), Cmd(("sh",))), "container.rootfs"),
        (lambda root: Mount(str(root / "missing"), "/data").check_host(), "mount.source"),
        (lambda root: Mount(str(root), "data"), "mount.destination"),
        (lambda root: PodConfig(id="p", hypervisor="xen"), "pod.hypervisor"),
    ],
)
def test_bad_values_name_their_field(make: object, field: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        make(tmp_path)  # type: ignore[operator]
    assert caught.value.field == field


def test_duplicate_container_ids(tmp_path: Path) -> None:
    container = ContainerConfig("c", tmp_path, Cmd(("sh",)))
    with pytest.raises(ConfigError, match="appears twice"):
        PodConfig(id="p", containers=(container, container))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown field.*'memroy'"):
        PodConfig.from_dict({"id": "p", "resources": {"memroy": 512}})
    with pytest.raises(ConfigError, match=r"unknown field.*'colour'"):
        PodConfig.from_dict({"id": "p", "colour": "blue"})


def test_round_trip_through_dicts(tmp_path: Path) -> None:
    container = ContainerConfig(
        "c",
        tmp_path,
        Cmd(
            ("sh", "-c", "true"),
            env=("A=1",),
            user=User(1, 2, (3, 4)),
            terminal=True,
            runtime_settings={"noNewPrivileges": True},
        ),
        mounts=(Mount(str(tmp_path), "/data", read_only=True),),
        annotations={"k": "v"},
    )
    pod = PodConfig(id="p", resources=Resources(2, 1024), containers=(container,), hostname="h")
    assert PodConfig.from_dict(pod.to_dict()) == pod
    assert container.to_dict()["cmd"]["user"] == {"uid": 1, "gid": 2, "additional_gids": [3, 4]}


def test_a_user_is_parsed_as_typed() -> None:
    assert User.parse("1000") == User(1000, 1000)
    assert User.parse("1000:") == User(1000, 1000)
    assert User.parse("1000:10") == User(1000, 10)
    assert User.parse("0:0:4,27") == User(0, 0, (4, 27))


def test_a_container_stored_before_cmd_had_runtime_settings_loads(tmp_path: Path) -> None:
    """Its user was text and its process settings were in its spec's process."""
    process = {"args": ["sh"], "user": {"uid": 1, "gid": 2}, "noNewPrivileges": False}
    stored = {
        "id": "c",
        "rootfs": str(tmp_path),
        "cmd": {"args": ["sh"], "env": [], "cwd": "/", "user": "1:2:3,4", "terminal": False},
        "oci": {"hostname": "h", "process": process},
    }
    config = ContainerConfig.from_dict(stored)
    assert config.cmd.user == User(1, 2, (3, 4))
    assert config.cmd.runtime_settings == {"noNewPrivileges": False}
    assert config.oci == {"hostname": "h"}
    without_process = ContainerConfig.from_dict({**stored, "oci": {"hostname": "h"}})
    assert without_process.cmd.runtime_settings == {}  # it had none, not the defaults
    without_spec = ContainerConfig.from_dict({**stored, "oci": None})
    assert without_spec.cmd.runtime_settings is None


def test_a_bad_config_leaves_nothing_behind(run_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        api.create_pod(PodConfig(id="p", resources=Resources(memory_mib=1)))
    with pytest.raises(ConfigError, match="more than the host"):
        api.create_pod(PodConfig(id="p", resources=Resources(memory_mib=10**9)))
    missing = ContainerConfig("c", tmp_path / "missing", Cmd(("sh",)))
    with pytest.raises(ConfigError, match="is not a directory"):
        api.create_pod(PodConfig(id="p", hypervisor="mock", containers=(missing,)))
    assert api.list_pods() == []


def test_a_stored_config_loads_when_the_host_changed(run_root: Path, tmp_path: Path) -> None:
    """Host checks happen once, at create: a record stays loadable afterwards."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    container = ContainerConfig("c", rootfs, Cmd(("sh",)), mounts=(Mount(str(volume), "/v"),))
    api.create_pod(PodConfig(id="p", hypervisor="mock", containers=(container,)))
    rootfs.rmdir()
    volume.rmdir()
    assert api.pod_status("p").containers[0].rootfs == rootfs
    api.delete_pod("p")


def test_forward_loopback_needs_a_netns_and_is_a_bool() -> None:
    config = PodConfig(id="p", netns="/run/netns/x", forward_loopback=True)
    assert PodConfig.from_dict(config.to_dict()) == config
    assert PodConfig.from_dict({"id": "p"}).forward_loopback is False
    with pytest.raises(ConfigError, match=r"forward_loopback.*netns"):
        PodConfig(id="p", forward_loopback=True)
    with pytest.raises(ConfigError, match="forward_loopback"):
        PodConfig(id="p", netns="/run/netns/x", forward_loopback="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "env"),
    [(("sh", "x" * 1_200_000), ()), (("sh",), ("BIG=" + "y" * 6_000_000,))],
    ids=["argv of 1.2 MB", "env of 6 MB"],
)
def test_a_command_too_big_for_one_request_to_the_guest_is_refused(
    args: tuple[str, ...], env: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError, match=f"more than the {MAX_CMD_BYTES} a request"):
        Cmd(args, env)
    assert MAX_CMD_BYTES <= MAX_PAYLOAD // 2


def test_a_command_that_fits_is_taken_and_its_spec_fits_a_frame(tmp_path: Path) -> None:
    cmd = Cmd(("sh", "x" * (MAX_CMD_BYTES - 100)))
    config = ContainerConfig("c", tmp_path, cmd)
    frame = protocol.request(1, "create_container", {"bundle": container_spec(config, "h")})
    assert len(frame) < MAX_PAYLOAD
