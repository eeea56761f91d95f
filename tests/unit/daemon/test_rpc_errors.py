"""Every error crosses a real pod daemon as its own class, with its fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api, errors
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.daemon import rpc
from virtcontainers.errors import VcError

SAMPLES: list[VcError] = [
    errors.VcError("plain"),
    errors.ConfigError("resources.memory_mib", "too small"),
    errors.NotFoundError("container", "c9", "in pod 'p'"),
    errors.ExistsError("pod", "p"),
    errors.ExistsError("interface", "eth1", "in pod 'p': it is attached to the VM already"),
    errors.StateError("pod 'p'", "start", "running", ["created", "stopped"]),
    errors.ImageError("no kernel"),
    errors.TemplateError("no template for this shape"),
    errors.HypervisorError("QMP failed"),
    errors.VMLaunchError("QEMU exited", ["qemu-system-x86_64", "-M", "microvm"], "console text"),
    errors.AgentError("exec", "runtime", "crun exited with 1"),
    errors.AgentProtocolError("frame too large"),
    errors.DaemonError("daemon gone"),
    errors.BusyError("p", "stop", 300.0),
    errors.NetworkError("/run/netns/n", "cannot make tap vc0", "p"),
    errors.CorruptRecordError("p", "/run/p/state.json", "not JSON"),
    errors.RuntimeSpecError("config.json: bad"),
]


def test_the_samples_cover_every_error_class() -> None:
    classes = {
        cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, VcError) and not name.startswith("_")
    }
    assert classes == {type(sample) for sample in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda e: type(e).__name__)
def test_errors_round_trip_through_a_daemon(
    run_root: Path,
    image: ImagePaths,
    rootfs: Path,
    sample: VcError,
) -> None:
    api.run_pod(mock_pod("errs", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    wire = json.dumps(errors.error_to_dict(sample))
    with pytest.raises(VcError) as caught:
        api.enter_container("errs", "c", Cmd(("raise", wire)))
    received = caught.value
    assert type(received) is type(sample)
    assert str(received) == str(sample)
    assert received.fields() == sample.fields()
    api.stop_pod("errs")


def test_an_unexpected_failure_names_the_pod_and_the_operation(
    run_root: Path,
    image: ImagePaths,
    rootfs: Path,
) -> None:
    api.run_pod(mock_pod("crashy", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    with pytest.raises(errors.DaemonError) as caught:
        api.enter_container("crashy", "c", Cmd(("crash",)))
    message = str(caught.value)
    assert "pod 'crashy'" in message and "exec failed unexpectedly" in message
    assert "KeyError" in message
    # The daemon carries on serving.
    assert api.pod_status("crashy").state.value == "running"
    api.stop_pod("crashy")


def test_bad_parameters_are_refused_by_name(
    run_root: Path,
    image: ImagePaths,
    rootfs: Path,
) -> None:
    api.run_pod(mock_pod("params", image, ContainerConfig("c", rootfs, Cmd(("sleep",)))))
    socket = run_root / "pods" / "params" / "daemon.sock"
    cases: dict[str, tuple[dict[str, object], str]] = {
        "nope": ({}, "method"),
        "resize": ({"container_id": "c", "exec_id": None, "rows": -1, "cols": 5}, "resize.rows"),
        "kill": ({"container_id": "c", "exec_id": None, "signal": 0, "all": False}, "kill.signal"),
        "start_container": ({"container_id": "../x"}, "container id"),
        "wait": ({"container_id": "c"}, "wait.exec_id"),
        "stop": ({"extra": 1}, "stop"),
        "add_interface": ({"name": "a/b"}, "add_interface.name"),
        "remove_interface": ({"name": 7}, "remove_interface.name"),
        "list_interfaces": ({"name": "eth0"}, "list_interfaces"),
    }
    for method, (params, field) in cases.items():
        with pytest.raises(errors.ConfigError) as caught:
            rpc.call(socket, method, {**params, "stdio": []})
        assert caught.value.field == field, (method, caught.value)
    api.stop_pod("params")
