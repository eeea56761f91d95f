"""Lifecycle states of pods and containers, with their allowed transitions.

One state machine, :class:`Lifecycle`, serves every lifecycle (pods,
containers, and the hypervisor's VMs): an enum whose class names its table
of transitions.  An operation in the wrong state raises :class:`StateError`
naming both the current state and the states it needs; every state change
goes through :meth:`Lifecycle.moved_to`, which checks it against the table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from virtcontainers.errors import StateError


class Lifecycle(enum.Enum):
    r"""A state; each subclass is :func:`register`\ ed with what it describes
    and its transitions."""

    @classmethod
    def noun(cls) -> str:
        return _REGISTERED[cls][0]

    @classmethod
    def transitions(cls) -> Mapping[Lifecycle, frozenset[Lifecycle]]:
        return _REGISTERED[cls][1]

    def require(self, ident: str, operation: str, *allowed: Lifecycle) -> None:
        """Raise StateError unless this state is one of ``allowed``."""
        if self not in allowed:
            what = f"{self.noun()} {ident!r}"
            raise StateError(what, operation, self.value, [s.value for s in allowed])

    def moved_to(self, ident: str, target: L) -> L:
        """``target``, if the table allows moving there from here (else StateError)."""
        table = self.transitions()
        if target not in table.get(self, frozenset()):
            sources = [state for state, targets in table.items() if target in targets]
            self.require(ident, f"move to {target.value}", *sources)
        return target


L = TypeVar("L", bound=Lifecycle)
Table = Mapping[Lifecycle, frozenset[Lifecycle]]
_REGISTERED: dict[type[Lifecycle], tuple[str, Table]] = {}


def register(lifecycle: type[Lifecycle], noun: str, moves: Mapping[str, str]) -> None:
    """Name what ``lifecycle`` describes (in errors) and the moves it allows:
    from each state (by value) to the states listed after it, space-separated."""
    table = {
        lifecycle(source): frozenset(lifecycle(target) for target in targets.split())
        for source, targets in moves.items()
    }
    _REGISTERED[lifecycle] = (noun, table)


class PodState(Lifecycle):
    CREATED = "created"  # configured, no VM
    STARTING = "starting"  # its daemon is booting the VM
    RUNNING = "running"  # VM up, daemon serving
    PAUSED = "paused"  # VM's vCPUs stopped
    STOPPED = "stopped"  # VM gone; may be started again or deleted


class ContainerState(Lifecycle):
    CREATED = "created"  # configured (and created in the VM when the pod runs)
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


register(
    PodState,
    "pod",
    {
        "created": "starting stopped",
        "starting": "running stopped",
        "running": "paused stopped",
        "paused": "running stopped",
        "stopped": "starting",
    },
)

register(
    ContainerState,
    "container",
    {
        "created": "running stopped",
        "running": "paused stopped",
        "paused": "running stopped",
        "stopped": "created",
    },
)
