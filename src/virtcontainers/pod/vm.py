"""What a pod's parts drive: its VM and the agent in it, with the pod's name and log.

The boot, the hot-plugged interfaces and the block volumes are given this, not
the :class:`~virtcontainers.pod.pod.Pod` that holds them: they act on the VM,
and the pod keeps its record and its state to itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from virtcontainers.agent.base import Agent
from virtcontainers.hypervisor.base import Hypervisor


@dataclass(frozen=True)
class PodVM:
    """One pod's hypervisor and agent; ``pod_id`` and ``log`` name the pod in messages."""

    pod_id: str
    hypervisor: Hypervisor
    agent: Agent
    log: logging.Logger
