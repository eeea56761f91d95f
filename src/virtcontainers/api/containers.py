"""The API's containers: create, start, stop, pause, delete, and their limits and usage."""

from __future__ import annotations

from virtcontainers.agent.results import ContainerStats
from virtcontainers.api.common import START_TIMEOUT, live_call, pod_store
from virtcontainers.config import ContainerConfig
from virtcontainers.daemon import calls
from virtcontainers.daemon.client import LIVE, call_daemon, reconcile
from virtcontainers.errors import ExistsError, NotFoundError, StateError
from virtcontainers.ids import validate_id
from virtcontainers.limits import Limits
from virtcontainers.records import ContainerRecord
from virtcontainers.states import ContainerState
from virtcontainers.status import ContainerStatus
from virtcontainers.stdio import Stdio
from virtcontainers.storage.shareddir import SharedDir


def create_container(
    pod_id: str, config: ContainerConfig, stdio: Stdio | None = None
) -> ContainerStatus:
    """Add a container; in a running pod it is created in the VM at once.

    ``stdio`` fds become the container process's stdin/stdout/stderr (the
    daemon keeps duplicates; the caller may close its own).  Without them,
    output goes to the pod's ``logs/<container>.log``, rotated at
    ``Resources.log_mib``.
    """
    config.check_host()
    store = pod_store()
    with store.locked(pod_id, "create a container in"):
        record = reconcile(store, pod_id, held=True)
        if record.state not in LIVE:  # no VM: the record is ours to edit
            if config.id in record.containers:
                raise ExistsError("container", config.id)
            if stdio is not None:
                raise StateError(
                    f"pod {pod_id!r}",
                    "attach stdio to a container in",
                    record.state.value,
                    [s.value for s in LIVE],
                )
            entry = ContainerRecord(config)
            record.containers[config.id] = entry
            store.save(record)
            return ContainerStatus.from_record(entry)
    request = calls.CreateContainer(config)
    return ContainerStatus.from_record(call_daemon(store, record, request, stdio, START_TIMEOUT))


def delete_container(pod_id: str, container_id: str) -> None:
    """Remove a container that is not running."""
    validate_id("container", container_id)
    store = pod_store()
    with store.locked(pod_id, "delete a container in") as lock:
        record = reconcile(store, pod_id, held=True)
        if record.state not in LIVE:  # no VM: the record is ours to edit
            entry = record.containers.get(container_id)
            if entry is None:
                raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
            entry.state.require(
                container_id, "delete", ContainerState.CREATED, ContainerState.STOPPED
            )
            del record.containers[container_id]
            store.save(record)
            SharedDir(lock.paths).remove_layer(container_id)
            return
    call_daemon(store, record, calls.DeleteContainer(container_id))


def start_container(pod_id: str, container_id: str) -> None:
    live_call(pod_id, calls.StartContainer(container_id))


def stop_container(pod_id: str, container_id: str, timeout: int = 10) -> None:
    """SIGTERM the container, SIGKILL after ``timeout`` seconds."""
    live_call(pod_id, calls.StopContainer(container_id, timeout), timeout=timeout + 60.0)


def container_status(pod_id: str, container_id: str) -> ContainerStatus:
    validate_id("container", container_id)
    record = reconcile(pod_store(), pod_id)
    entry = record.containers.get(container_id)
    if entry is None:
        raise NotFoundError("container", container_id, f"in pod {pod_id!r}")
    return ContainerStatus.from_record(entry)


def pause_container(pod_id: str, container_id: str) -> None:
    live_call(pod_id, calls.PauseContainer(container_id))


def resume_container(pod_id: str, container_id: str) -> None:
    live_call(pod_id, calls.ResumeContainer(container_id))


def update_container(pod_id: str, container_id: str, limits: Limits) -> None:
    """Change a created or running container's limits; None fields stay as they are.

    Raises ConfigError when a limit is more than the pod's VM has (the VM does
    not grow), and AgentError "runtime" when the guest refuses it (a memory
    limit below what the container uses now, say).
    """
    live_call(pod_id, calls.UpdateContainer(container_id, limits))


def container_stats(pod_id: str, container_id: str) -> ContainerStats:
    """What a container uses now, read from its cgroup in the guest."""
    return live_call(pod_id, calls.GetContainerStats(container_id))
