"""Containers of one pod joining another's namespaces (a CRI pod's ipc and uts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtcontainers import oci, spec
from virtcontainers.config import Cmd, ContainerConfig
from virtcontainers.errors import ConfigError
from virtcontainers.oci.namespaces import Peer


def test_spec_points_joined_namespaces_at_the_other_containers_pid(tmp_path: Path) -> None:
    config = ContainerConfig(
        "app", tmp_path, Cmd(("sh",)), hostname="app", join_namespaces={"ipc": "sb", "uts": "sb"}
    )
    guest = spec.container_spec(config, "pod", {"sb": 42}.__getitem__)
    namespaces = {ns["type"]: ns.get("path") for ns in guest["linux"]["namespaces"]}
    assert namespaces["ipc"] == "/proc/42/ns/ipc"
    assert namespaces["uts"] == "/proc/42/ns/uts"
    assert namespaces["pid"] is None
    assert "hostname" not in guest


def test_join_namespaces_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be joined"):
        ContainerConfig("app", tmp_path, Cmd(("sh",)), join_namespaces={"network": "sb"})
    with pytest.raises(ConfigError, match="cannot join itself"):
        ContainerConfig("app", tmp_path, Cmd(("sh",)), join_namespaces={"ipc": "app"})


def test_cri_containers_join_their_sandbox(tmp_path: Path) -> None:
    base = oci.default_spec()
    base["root"] = {"path": str(tmp_path)}
    base["linux"]["namespaces"] = [
        {"type": "pid"},
        {"type": "ipc", "path": "/proc/123/ns/ipc"},
        {"type": "uts", "path": "/proc/123/ns/uts"},
        {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/x"},
    ]
    base["annotations"] = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "sb1",
    }
    (tmp_path / "config.json").write_text(json.dumps(base))
    sandbox = {123: Peer("sb1", "sb1")}.get
    config = oci.load_bundle(tmp_path).resolve_namespaces(sandbox).container_config("app")
    assert dict(config.join_namespaces) == {"ipc": "sb1", "uts": "sb1"}

    base["annotations"]["io.kubernetes.cri.container-type"] = "sandbox"
    for namespace in base["linux"]["namespaces"]:
        if namespace["type"] != "network":
            namespace.pop("path", None)
    (tmp_path / "config.json").write_text(json.dumps(base))
    assert not oci.load_bundle(tmp_path).container_config("sb1").join_namespaces


def test_a_joined_mount_namespace_is_named_mnt_under_proc(tmp_path: Path) -> None:
    config = ContainerConfig("app", tmp_path, Cmd(("sh",)), join_namespaces={"mount": "sb"})
    guest = spec.container_spec(config, "pod", {"sb": 42}.__getitem__)
    assert {"type": "mount", "path": "/proc/42/ns/mnt"} in guest["linux"]["namespaces"]
