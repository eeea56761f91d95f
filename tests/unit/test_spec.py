"""The process objects the guest gets: made once, from the Cmd."""

from __future__ import annotations

from pathlib import Path

from virtcontainers import spec
from virtcontainers.config import Cmd, ContainerConfig, User

ROOTFS = Path("/nonexistent/rootfs")
SETTINGS = {"capabilities": {"bounding": ["CAP_KILL"]}, "oomScoreAdj": 100}


def test_a_container_process_is_its_cmd_with_its_settings() -> None:
    cmd = Cmd(("id",), cwd="/tmp", user=User(1, 2, (3,)), runtime_settings=SETTINGS)
    config = ContainerConfig("c", ROOTFS, cmd, oci={"hostname": "h"})
    assert spec.container_spec(config, "pod")["process"] == {
        **SETTINGS,
        "terminal": False,
        "user": {"uid": 1, "gid": 2, "additionalGids": [3]},
        "args": ["id"],
        "env": list(cmd.env),
        "cwd": "/tmp",
    }


def test_a_cmd_without_settings_gets_the_defaults() -> None:
    config = ContainerConfig("c", ROOTFS, Cmd(("id",)))
    process = spec.container_spec(config, "pod")["process"]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["noNewPrivileges"] is True
    assert process["capabilities"]["bounding"] == spec.DEFAULT_CAPABILITIES


def test_an_exec_runs_with_its_containers_settings() -> None:
    config = ContainerConfig("c", ROOTFS, Cmd(("sleep", "1"), runtime_settings=SETTINGS))
    process = spec.process_spec(config, Cmd(("ps",), user=User(5, 5), terminal=True))
    assert process == {**SETTINGS, **spec.oci_process(Cmd(("ps",), user=User(5, 5), terminal=True))}
    assert process["user"] == {"uid": 5, "gid": 5}
    default = spec.process_spec(ContainerConfig("d", ROOTFS, Cmd(("true",))), Cmd(("ps",)))
    assert default["rlimits"] == spec.default_runtime_settings()["rlimits"]


def test_a_process_in_the_vm_has_no_settings() -> None:
    assert spec.oci_process(Cmd(("ls",), runtime_settings=SETTINGS)) == {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["ls"],
        "env": list(Cmd(("ls",)).env),
        "cwd": "/",
    }


def test_the_settings_are_copied_not_shared() -> None:
    config = ContainerConfig("c", ROOTFS, Cmd(("id",), runtime_settings=SETTINGS))
    spec.container_spec(config, "pod")["process"]["capabilities"]["bounding"].append("CAP_X")
    assert SETTINGS["capabilities"] == {"bounding": ["CAP_KILL"]}
