"""Lifecycle states of pods and containers, with their allowed transitions.

An operation in the wrong state raises :class:`StateError` naming both the
current state and the states it needs.
"""

from __future__ import annotations

import enum

from virtcontainers.errors import StateError


class PodState(enum.Enum):
    CREATED = "created"  # configured, no VM
    RUNNING = "running"  # VM up, daemon serving
    PAUSED = "paused"  # VM's vCPUs stopped
    STOPPED = "stopped"  # VM gone; may be started again or deleted

    def require(self, pod_id: str, operation: str, *allowed: PodState) -> None:
        if self not in allowed:
            raise StateError(f"pod {pod_id!r}", operation, self.value, [s.value for s in allowed])

    def check_transition(self, pod_id: str, target: PodState) -> None:
        if target not in _POD_TRANSITIONS[self]:
            allowed = [s for s, targets in _POD_TRANSITIONS.items() if target in targets]
            self.require(pod_id, f"move to {target.value}", *allowed)


_POD_TRANSITIONS: dict[PodState, frozenset[PodState]] = {
    PodState.CREATED: frozenset({PodState.RUNNING, PodState.STOPPED}),
    PodState.RUNNING: frozenset({PodState.PAUSED, PodState.STOPPED}),
    PodState.PAUSED: frozenset({PodState.RUNNING, PodState.STOPPED}),
    PodState.STOPPED: frozenset({PodState.RUNNING}),
}


class ContainerState(enum.Enum):
    CREATED = "created"  # configured (and created in the VM when the pod runs)
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def require(self, container_id: str, operation: str, *allowed: ContainerState) -> None:
        if self not in allowed:
            raise StateError(
                f"container {container_id!r}", operation, self.value, [s.value for s in allowed]
            )

    def check_transition(self, container_id: str, target: ContainerState) -> None:
        if target not in _CONTAINER_TRANSITIONS[self]:
            allowed = [s for s, targets in _CONTAINER_TRANSITIONS.items() if target in targets]
            self.require(container_id, f"move to {target.value}", *allowed)


_CONTAINER_TRANSITIONS: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.CREATED: frozenset({ContainerState.RUNNING, ContainerState.STOPPED}),
    ContainerState.RUNNING: frozenset({ContainerState.PAUSED, ContainerState.STOPPED}),
    ContainerState.PAUSED: frozenset({ContainerState.RUNNING, ContainerState.STOPPED}),
    ContainerState.STOPPED: frozenset({ContainerState.CREATED}),
}
