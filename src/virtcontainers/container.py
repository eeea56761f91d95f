"""A container: its config, lifecycle state and processes, as one pod holds it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from virtcontainers.agent.base import ExitStatus
from virtcontainers.config import ContainerConfig
from virtcontainers.errors import NotFoundError
from virtcontainers.process import GuestProcess
from virtcontainers.states import ContainerState

MAX_FINISHED_EXECS = 256


@dataclass
class Container:
    config: ContainerConfig
    state: ContainerState = ContainerState.CREATED
    pid: int | None = None
    exit: ExitStatus | None = None
    oom_killed: bool = False
    in_guest: bool = False
    init: GuestProcess | None = None
    execs: dict[str, GuestProcess] = field(default_factory=dict)
    _exec_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def id(self) -> str:
        return self.config.id

    def move_to(self, target: ContainerState) -> None:
        self.state.check_transition(self.id, target)
        self.state = target

    def new_exec_id(self) -> str:
        while True:
            candidate = f"exec-{next(self._exec_numbers)}"
            if candidate not in self.execs:
                return candidate

    def process(self, exec_id: str | None) -> GuestProcess:
        if exec_id is None:
            if self.init is None:
                raise NotFoundError(
                    "process", f"{self.id}/init", "the container has no process yet"
                )
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFoundError("process", f"{self.id}/{exec_id}") from None

    def forget_finished_execs(self) -> None:
        finished = [k for k, p in self.execs.items() if p.status is not None]
        for exec_id in finished[: max(0, len(finished) - MAX_FINISHED_EXECS)]:
            del self.execs[exec_id]

    def to_record(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "state": self.state.value,
            "pid": self.pid,
            "exit_code": self.exit.exit_code if self.exit else None,
            "signal": self.exit.signal if self.exit else None,
            "oom_killed": self.oom_killed,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Container:
        exit_code = record.get("exit_code")
        return cls(
            config=ContainerConfig.from_dict(record["config"]),
            state=ContainerState(record["state"]),
            pid=record.get("pid"),
            exit=ExitStatus(exit_code, record.get("signal")) if exit_code is not None else None,
            oom_killed=bool(record.get("oom_killed")),
        )
