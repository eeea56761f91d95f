"""virtcontainers.oci: linux.devices made in the guest; bind options applied or refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from virtcontainers import spec as guest_spec
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import ConfigError, RuntimeSpecError
from virtcontainers.oci import Bundle, load_bundle
from virtcontainers.volumes import Mount

DEVICES = [
    {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
    {"path": "/dev/sdz", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660,
     "uid": 1000, "gid": 6},
    {"path": "/dev/ufoo", "type": "u", "major": 240, "minor": 1},
    {"path": "/dev/myfifo", "type": "p", "fileMode": 0o644, "uid": 5, "gid": 7},
]  # fmt: skip


def load(tmp_path: Path, **sections: Any) -> Bundle:
    spec: dict[str, Any] = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/"},
        **sections,
    }
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return load_bundle(tmp_path)


def test_devices_pass_to_the_guests_crun(tmp_path: Path) -> None:
    """crun makes each node, of the guest's device of that number, as on a host."""
    bundle = load(tmp_path, linux={"devices": DEVICES})
    assert bundle.guest_spec["linux"]["devices"] == DEVICES
    assert bundle.warnings == ()


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"path": "dev/x", "type": "c", "major": 1, "minor": 3},
         "[0].path: must be an absolute path, got 'dev/x'"),
        ({"path": "/dev/x", "type": "s", "major": 1, "minor": 3},
         "[0].type: 's' is not a device type (c, u: character; b: block; p: fifo)"),
        ({"path": "/dev/x", "major": 1, "minor": 3}, "[0].type: must be a string, got null"),
        ({"path": "/dev/x", "type": "b", "minor": 3},
         "[0].major: is required for a device of type 'b'"),
        ({"path": "/dev/x", "type": "c", "major": 1, "minor": -3},
         "[0].minor: must be at least 0, got -3"),
        ({"path": "/dev/x", "type": "c", "major": 1, "minor": 3, "fileMode": 0o10666},
         "[0].fileMode: 0o10666 is not a file mode (permission bits, at most 0o7777)"),
        ({"path": "/dev/x", "type": "p", "uid": 2**32}, "[0].uid: 4294967296 is not a valid id"),
    ],
)  # fmt: skip
def test_bad_devices_are_refused(tmp_path: Path, device: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeSpecError) as caught:
        load(tmp_path, linux={"devices": [device]})
    assert str(caught.value).startswith("config.json: linux.devices" + message)


def test_a_bind_of_a_host_device_becomes_its_node(tmp_path: Path) -> None:
    source = "/dev/tty0" if Path("/dev/tty0").exists() else "/dev/console"
    info = os.stat(source)
    bundle = load(
        tmp_path,
        mounts=[{"destination": "/dev/mine", "type": "bind", "source": source}],
        linux={"devices": [DEVICES[0]]},
    )
    assert bundle.mounts == ()
    assert bundle.guest_spec["mounts"] == []
    assert bundle.guest_spec["linux"]["devices"] == [
        DEVICES[0],
        {
            "path": "/dev/mine",
            "type": "c",
            "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev),
            "fileMode": info.st_mode & 0o7777,
            "uid": info.st_uid,
            "gid": info.st_gid,
        },
    ]
    assert f"bind of host device {source} on /dev/mine made as a device node" in bundle.warnings[0]


def test_bind_options_are_kept_for_the_guest(tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    options = ["bind", "ro", "nosuid", "rnodev", "noexec", "rslave", "runbindable", "rw", "rro"]
    mount = {"destination": "/v", "type": "bind", "source": "vol", "options": options}
    bundle = load(tmp_path, mounts=[mount])
    expected = Mount(
        str(tmp_path / "vol"),
        "/v",
        read_only=True,  # the last of ro/rw/rro/rrw wins
        options=("bind", "nosuid", "rnodev", "noexec", "rslave", "runbindable"),
    )
    assert bundle.mounts == (expected,)
    assert (expected.recursive, expected.propagation) == (False, "rslave")
    assert bundle.warnings == ()
    # In the guest the share is one mount: crun gets the plain forms of the flags.
    assert guest_spec.guest_bind_options(expected) == [
        "rbind", "ro", "nosuid", "nodev", "noexec", "rslave", "runbindable",
    ]  # fmt: skip
    config = ContainerConfig("c", tmp_path, Cmd(("true",)), mounts=(expected,))
    assert ContainerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("options", "propagation", "recursive"),
    [
        ((), "private", True),
        (("rbind", "rslave", "rprivate"), "private", True),
        (("bind", "rbind", "slave"), "slave", True),
    ],
)
def test_mount_propagation_and_recursion(
    options: tuple[str, ...], propagation: str, recursive: bool
) -> None:
    mount = Mount("/src", "/dst", options=options)
    assert (mount.propagation, mount.recursive) == (propagation, recursive)


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ({"options": ["rbind", "rshared"]},
         "mounts[0].options[1]: 'rshared': mounts made in the container cannot propagate back to "
         "the host across the VM boundary (the bind of "),
        ({"options": ["shared"]}, "mounts[0].options[0]: 'shared': mounts made in the container"),
        ({"options": ["rbind", "idmap"]},
         "mounts[0].options[1]: 'idmap' is not an option vc-runtime can apply to a bind mount "
         "(known: async, atime, bind, defaults,"),
        ({"options": ["nosymfollow"]}, "mounts[0].options[0]: 'nosymfollow' is not an option"),
        ({"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
         "mounts[0].uidMappings: id-mapped bind mounts are not supported"),
    ],
)  # fmt: skip
def test_bind_options_that_cannot_be_applied_are_refused(
    tmp_path: Path, mount: dict[str, Any], message: str
) -> None:
    (tmp_path / "vol").mkdir()
    with pytest.raises(RuntimeSpecError) as caught:
        load(tmp_path, mounts=[{"destination": "/v", "type": "bind", "source": "vol", **mount}])
    assert str(caught.value).startswith("config.json: " + message)


def test_a_bidirectional_bind_names_the_kubernetes_setting(tmp_path: Path) -> None:
    """The CRI's mountPropagation: Bidirectional is an rshared bind (and rootfs)."""
    (tmp_path / "vol").mkdir()
    bind = {"destination": "/v", "type": "bind", "source": "vol", "options": ["rbind", "rshared"]}
    with pytest.raises(RuntimeSpecError) as caught:
        load(tmp_path, mounts=[bind])
    assert str(caught.value).endswith("on /v; Kubernetes' mountPropagation: Bidirectional)")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("rshared",), "'rshared': mounts made in a container cannot propagate to the host"),
        (("ro",), "'ro' is not a bind mount option"),
        ("nosuid", "expected a list of strings, got str"),
    ],
)
def test_mount_options_are_validated(options: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Mount("/src", "/dst", options=options)  # type: ignore[arg-type]


def test_a_relative_mount_destination_is_taken_from_root_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    bundle = load(
        tmp_path,
        mounts=[
            {"destination": "v", "type": "bind", "source": "vol"},
            {"destination": "/abs", "type": "bind", "source": "vol"},
            {"destination": "run/x", "type": "tmpfs", "source": "tmpfs"},
        ],
    )
    assert [m.destination for m in bundle.mounts] == ["/v", "/abs"]
    assert bundle.warnings == (
        "config.json: mounts[0].destination: 'v' is not absolute: taken as /v; support "
        "for relative mount destinations will be removed (runc warns the same)",
        "config.json: mounts[2].destination: 'run/x' is not absolute: taken as /run/x; "
        "support for relative mount destinations will be removed (runc warns the same)",
    )
