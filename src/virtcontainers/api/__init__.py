"""The public API: pods and containers.

Every function is synchronous and thin: validate, locate the pod, act
(directly on the store while the pod has no VM, through the pod's daemon
while it runs), answer.  Any process on the host may call any function for
any pod.  Errors are :class:`~virtcontainers.errors.VcError` subclasses.

Import it from here, the public surface; a module per subject holds the
functions: ``pods``, ``containers``, ``processes``, ``events``, ``network``,
and ``common`` what they share (the store, a call to a running pod's daemon).

May import the rooms below it in the layers (daemon/ and down), never oci/,
cli/ or shim/; importing it loads no asyncio.
"""

from __future__ import annotations

from virtcontainers.agent.results import ContainerStats, ExitStatus, ProcessInfo
from virtcontainers.api.containers import (
    container_stats,
    container_status,
    create_container,
    delete_container,
    pause_container,
    resume_container,
    start_container,
    stop_container,
    update_container,
)
from virtcontainers.api.events import follow_events, pod_events
from virtcontainers.api.network import add_interface, list_interfaces, remove_interface
from virtcontainers.api.pods import (
    collect_garbage,
    create_pod,
    delete_pod,
    list_pod_errors,
    list_pods,
    pause_pod,
    pod_status,
    resume_pod,
    run_pod,
    start_pod,
    stop_pod,
)
from virtcontainers.api.processes import (
    attach_container,
    attach_process,
    enter_container,
    enter_pod,
    kill_container,
    list_processes,
    resize_terminal,
    signal_process,
    wait_container,
    wait_process,
)
from virtcontainers.events import Event
from virtcontainers.status import ContainerStatus, InterfaceStatus, PodStatus, ProcessHandle
from virtcontainers.stdio import Stdio

__all__ = [
    "ContainerStats",
    "ContainerStatus",
    "Event",
    "ExitStatus",
    "InterfaceStatus",
    "PodStatus",
    "ProcessHandle",
    "ProcessInfo",
    "Stdio",
    "add_interface",
    "attach_container",
    "attach_process",
    "collect_garbage",
    "container_stats",
    "container_status",
    "create_container",
    "create_pod",
    "delete_container",
    "delete_pod",
    "enter_container",
    "enter_pod",
    "follow_events",
    "kill_container",
    "list_interfaces",
    "list_pod_errors",
    "list_pods",
    "list_processes",
    "pause_container",
    "pause_pod",
    "pod_events",
    "pod_status",
    "remove_interface",
    "resize_terminal",
    "resume_container",
    "resume_pod",
    "run_pod",
    "signal_process",
    "start_container",
    "start_pod",
    "stop_container",
    "stop_pod",
    "update_container",
    "wait_container",
    "wait_process",
]
