"""containerd's generated messages, as the shim reaches them."""

from __future__ import annotations

from virtcontainers.shim import protos


def test_the_task_service_is_containerds() -> None:
    service = protos.task.DESCRIPTOR.services_by_name["Task"]
    assert protos.TASK_SERVICE == "containerd.task.v2.Task"
    assert {m.name for m in service.methods} >= {
        "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill",
        "Exec", "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown",
    }  # fmt: skip
    assert protos.EVENTS_SERVICE == "containerd.services.events.ttrpc.v1.Events"


def test_pack_uses_the_bare_type_urls_containerd_registers() -> None:
    packed = protos.pack(protos.events.TaskExit(container_id="c1", exit_status=3))
    assert packed.type_url == "containerd.events.TaskExit"
    assert protos.pack(protos.cgroups_v1.Metrics()).type_url == "io.containerd.cgroups.v1.Metrics"
    assert protos.pack(protos.cgroups_v2.Metrics()).type_url == "io.containerd.cgroups.v2.Metrics"
    exit_event = protos.events.TaskExit()
    exit_event.ParseFromString(packed.value)
    assert (exit_event.container_id, exit_event.exit_status) == ("c1", 3)
