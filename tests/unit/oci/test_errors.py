"""virtcontainers.oci: a bad bundle is refused with a message naming the file and JSON path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import load_bundle


def good() -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    }


def load_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RuntimeSpecError) as info:
        load_bundle(tmp_path)
    return str(info.value)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSpecError) as info:
        load_bundle(tmp_path)
    assert str(info.value) == f"config.json: {tmp_path}/config.json does not exist"


def test_missing_bundle_dir(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSpecError, match="is not a directory"):
        load_bundle(tmp_path / "nope")


def test_malformed_json(tmp_path: Path) -> None:
    assert (
        load_error(tmp_path, '{"ociVersion": "1.0.2",\n "root": }')
        == "config.json: malformed JSON at line 2 column 10: Expecting value"
    )


def test_not_an_object(tmp_path: Path) -> None:
    assert load_error(tmp_path, "[1, 2]") == "config.json: must be an object, got a list"


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = spec
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return edit


_DELETE = object()

CASES = [
    ("ociVersion", _DELETE, "config.json: ociVersion: is required"),
    ("ociVersion", 1, "config.json: ociVersion: must be a string, got a number"),
    ("ociVersion", "latest", "config.json: ociVersion: 'latest' is not a SemVer version"),
    ("ociVersion", "2.0.0", "config.json: ociVersion: '2.0.0' is not supported (only 1.x)"),
    ("root", _DELETE, "config.json: root: is required (root.path names the container's rootfs)"),
    ("root", "rootfs", "config.json: root: must be an object, got a string"),
    ("root.path", _DELETE, "config.json: root.path: is required"),
    ("root.path", None, "config.json: root.path: must be a string, got null"),
    ("root.readonly", "yes", "config.json: root.readonly: must be a boolean, got a string"),
    ("process", [], "config.json: process: must be an object, got a list"),
    ("process.args", _DELETE, "config.json: process.args: must be a non-empty list of strings"),
    ("process.args", [], "config.json: process.args: must be a non-empty list of strings"),
    ("process.args", "sh", "config.json: process.args: must be a non-empty list of strings"),
    ("process.args", ["sh", 1], "config.json: process.args[1]: must be a string, got a number"),
    ("process.env", ["A=1", "B"], "config.json: process.env[1]: must be NAME=VALUE, got 'B'"),
    ("process.env", {"A": "1"}, "config.json: process.env: must be a list of strings"),
    ("process.cwd", _DELETE,
     "config.json: process.cwd: is required (the absolute working directory)"),
    ("process.cwd", "tmp", "config.json: process.cwd: must be an absolute path, got 'tmp'"),
    ("process.terminal", 1, "config.json: process.terminal: must be a boolean, got a number"),
    ("process.user", 0, "config.json: process.user: must be an object, got a number"),
    ("process.user.uid", -1, "config.json: process.user.uid: must be at least 0, got -1"),
    ("process.user.gid", "0", "config.json: process.user.gid: must be an integer, got a string"),
    ("process.user.additionalGids", [1, True],
     "config.json: process.user.additionalGids[1]: must be an integer, got a boolean"),
    ("hostname", "bad_name", "config.json: hostname: 'bad_name' is not a valid hostname "
     "(1-63 letters, digits, '.' or '-')"),
    ("annotations", {"a": 1}, "config.json: annotations.a: must be a string, got a number"),
    ("mounts", {}, "config.json: mounts: must be a list of objects, got an object"),
    ("mounts", [{"type": "tmpfs"}],
     "config.json: mounts[0].destination: must be a string, got null"),
    ("mounts", [{"destination": "/x", "type": "bind", "source": "/nonexistent/vc-test"}],
     "config.json: mounts[0].source: /nonexistent/vc-test does not exist on the host"),
    ("mounts", [{"destination": "/x", "options": ["rbind"]}],
     "config.json: mounts[0].source: is required for a bind mount"),
    ("mounts", [{"destination": "/x", "type": "ext4", "source": "/dev/sdb1"}],
     "config.json: mounts[0].type: 'ext4' cannot be mounted in a VM: only bind mounts of host "
     "paths and kernel filesystems (cgroup, cgroup2, devpts, mqueue, proc, ramfs, sysfs, tmpfs) "
     "are supported"),
    ("mounts", [{"destination": "/x", "source": "none"}],
     "config.json: mounts[0].type: is required unless the mount is a bind mount"),
    ("mounts", [{"destination": "/x", "type": "tmpfs", "options": "ro"}],
     "config.json: mounts[0].options: must be a list of strings"),
    ("linux", [], "config.json: linux: must be an object, got a list"),
    ("linux", {"namespaces": [{"type": "net"}]},
     "config.json: linux.namespaces[0].type: unknown namespace 'net' (known: cgroup, ipc, mount, "
     "network, pid, time, user, uts)"),
    ("linux", {"devices": [{"type": "c"}]},
     "config.json: linux.devices[0].path: must be a string, got null"),
    ("linux", {"devices": {}},
     "config.json: linux.devices: must be a list of objects, got an object"),
    ("linux", {"resources": {"memory": {"limit": "1G"}}},
     "config.json: linux.resources.memory.limit: must be an integer, got a string"),
    ("linux", {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/seccomp.sock"}},
     "config.json: linux.seccomp.listenerPath: /run/seccomp.sock: a seccomp notify listener on "
     "the host cannot receive notifications from a container in a VM"),
    ("hooks", {"prestart": [{"path": "hook.sh"}]},
     "config.json: hooks.prestart[0].path: must be an absolute path, got 'hook.sh'"),
    ("hooks", {"prestart": [{"path": "/bin/true", "timeout": 0}]},
     "config.json: hooks.prestart[0].timeout: must be at least 1, got 0"),
    ("hooks", {"poststart": [{"path": "/bin/true", "env": ["X"]}]},
     "config.json: hooks.poststart[0].env[0]: must be NAME=VALUE, got 'X'"),
    ("hooks", {"prestop": []},
     "config.json: hooks.prestop: unknown hook stage (known: prestart, createRuntime, "
     "createContainer, startContainer, poststart, poststop)"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[c[2] for c in CASES])
def test_invalid_field(tmp_path: Path, path: str, value: object, message: str) -> None:
    spec = good()
    _set(path, value)(spec)
    assert load_error(tmp_path, json.dumps(spec)) == message


def test_root_missing_on_disk(tmp_path: Path) -> None:
    spec = good()
    spec["root"]["path"] = "merged"
    assert load_error(tmp_path, json.dumps(spec)) == (
        f"config.json: root.path: {tmp_path}/merged does not exist"
    )


def test_root_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    spec = good()
    spec["root"]["path"] = str(tmp_path / "file")
    assert load_error(tmp_path, json.dumps(spec)) == (
        f"config.json: root.path: {tmp_path}/file is not a directory"
    )


def test_a_rootfs_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "rootfs").symlink_to("/")
    (bundle / "config.json").write_text(json.dumps(good()))
    with pytest.raises(RuntimeSpecError) as info:
        load_bundle(bundle)
    assert str(info.value) == (
        f"config.json: root.path: {bundle}/rootfs in bundle {bundle} is a symlink or passes "
        "through one (to /); as runc, the rootfs is refused unless named by its real path"
    )


def test_a_rootfs_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real" / "rootfs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    spec = good()
    spec["root"]["path"] = str(tmp_path / "link" / "rootfs")
    assert f"to {tmp_path}/real/rootfs" in load_error(tmp_path, json.dumps(spec))
    spec["root"]["path"] = "link/rootfs"
    assert f"{tmp_path}/link/rootfs in bundle {tmp_path} is a symlink" in load_error(
        tmp_path, json.dumps(spec)
    )


def test_a_bundle_reached_through_a_symlink_keeps_its_relative_rootfs(tmp_path: Path) -> None:
    (tmp_path / "real" / "rootfs").mkdir(parents=True)
    (tmp_path / "real" / "config.json").write_text(json.dumps(good()))
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert load_bundle(tmp_path / "link").rootfs == tmp_path / "real" / "rootfs"


def test_bad_container_id(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(good()))
    bundle = load_bundle(tmp_path)
    with pytest.raises(RuntimeSpecError, match=re.escape("invalid container id")):
        bundle.container_config("-bad id")
