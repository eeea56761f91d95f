"""virtcontainers.oci: process_from_json (exec --process), default_spec and features."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from virtcontainers.config import Cmd, User
from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import default_spec, features, load_bundle, process_from_json


def test_process_from_json() -> None:
    process = {
        "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 33, "gid": 33, "additionalGids": [4]},
        "args": ["ps", "aux"],
        "env": ["PATH=/bin", "TERM=xterm"],
        "cwd": "/var/www",
        "capabilities": {"bounding": ["CAP_KILL"]},
        "noNewPrivileges": True,
    }
    cmd = process_from_json(process, "process.json")
    assert cmd == Cmd(
        args=("ps", "aux"),
        env=("PATH=/bin", "TERM=xterm"),
        cwd="/var/www",
        user=User(33, 33, (4,)),
        terminal=True,
        runtime_settings={
            "consoleSize": {"height": 24, "width": 80},
            "capabilities": {"bounding": ["CAP_KILL"]},
            "noNewPrivileges": True,
        },
    )
    assert cmd.runtime_settings is not None
    assert cmd.runtime_settings["capabilities"] is not process["capabilities"]


def test_process_from_json_drops_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    process = {"args": ["id"], "cwd": "/", "user": {"uid": 0, "gid": 0, "username": "root"},
               "apparmorProfile": "unconfined"}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="virtcontainers.oci"):
        cmd = process_from_json(process, "/tmp/p.json")
    assert cmd.user == User()
    assert cmd.runtime_settings == {}
    assert "/tmp/p.json: user.username: 'root' dropped" in caplog.text
    assert "/tmp/p.json: apparmorProfile: 'unconfined' dropped" in caplog.text


@pytest.mark.parametrize(
    ("process", "message"),
    [
        ([], "p.json: must be an object, got a list"),
        ({"cwd": "/"}, "p.json: args: must be a non-empty list of strings"),
        ({"args": ["x"]}, "p.json: cwd: is required (the absolute working directory)"),
        ({"args": ["x"], "cwd": "/", "env": ["=x", "nope"]},
         "p.json: env[1]: must be NAME=VALUE, got 'nope'"),
        ({"args": ["x"], "cwd": "/", "user": {"uid": 2**32}},
         "p.json: user.uid: 4294967296 is not a valid id (at most 4294967294)"),
    ],
)  # fmt: skip
def test_process_from_json_errors(process: object, message: str) -> None:
    with pytest.raises(RuntimeSpecError) as info:
        process_from_json(process, "p.json")  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_loads_cleanly(tmp_path: Path, rootless: bool) -> None:
    spec = default_spec(rootless=rootless)
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(spec, indent=2))
    bundle = load_bundle(tmp_path)
    assert bundle.warnings == ()
    assert bundle.read_only_rootfs is True
    assert bundle.process_cmd().args == ("sh",)
    assert bundle.process_cmd().terminal is True
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert {m["destination"] for m in spec["mounts"]} >= {"/proc", "/dev", "/dev/pts", "/sys"}
    types = [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert "network" not in types
    assert ("user" in types) is rootless
    if rootless:
        assert spec["linux"]["uidMappings"] == [
            {"containerID": 0, "hostID": os.geteuid(), "size": 1}
        ]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert default_spec() == default_spec()  # fresh each time
    assert default_spec() is not default_spec()


def test_features() -> None:
    doc = features()
    json.dumps(doc)
    assert doc["ociVersionMin"] == "1.0.0"
    assert doc["ociVersionMax"] == "1.1.0"
    assert doc["hooks"] == [
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
    ]  # fmt: skip
    linux = doc["linux"]
    assert "network" in linux["namespaces"] and "user" in linux["namespaces"]
    assert "CAP_SYS_ADMIN" in linux["capabilities"] and len(linux["capabilities"]) == 41
    assert linux["cgroup"]["v2"] is True and linux["cgroup"]["v1"] is False
    assert linux["seccomp"]["enabled"] is True
    assert "SCMP_ACT_NOTIFY" not in linux["seccomp"]["actions"]
    assert linux["apparmor"] == {"enabled": False}
    assert linux["selinux"] == {"enabled": False}
    assert "rbind" in doc["mountOptions"]
    assert doc["annotations"]["org.virtcontainers.isolation"] == "vm"
