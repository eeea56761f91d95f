"""A container: its config, lifecycle state and processes, as one pod holds it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from virtcontainers.errors import NotFoundError
from virtcontainers.pod.process import GuestProcess
from virtcontainers.records import ContainerRecord
from virtcontainers.states import ContainerState

MAX_FINISHED_EXECS = 256


@dataclass
class Container(ContainerRecord):
    """A container's record, plus what exists only while its pod runs."""

    in_guest: bool = False
    init: GuestProcess | None = None
    execs: dict[str, GuestProcess] = field(default_factory=dict)
    _exec_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def move_to(self, target: ContainerState) -> None:
        self.state = self.state.moved_to(self.id, target)

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

    def to_record(self) -> ContainerRecord:
        return ContainerRecord(
            self.config, self.state, self.pid, self.exit, self.oom_killed, self.logged
        )

    @classmethod
    def from_record(cls, record: ContainerRecord) -> Container:
        return cls(
            record.config, record.state, record.pid, record.exit, record.oom_killed, record.logged
        )
