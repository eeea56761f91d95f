"""What happens in a pod, as a numbered stream that callers can follow.

The pod daemon keeps the last events in memory
(:class:`~virtcontainers.pod.eventlog.EventLog`); a caller asks for those after
the last number it saw and waits, bounded, for new ones.
Kinds:

- ``start``: a container's process started;
- ``exit``: a container's process ended (``exit_code``, ``signal``);
- ``oom``: the guest's kernel killed a process of a container for memory;
- ``paused`` / ``resumed``: a container, or the pod (no ``container_id``);
- ``stopped``: the pod stopped (``error`` says why when it was not asked to:
  the VM died, say).  It is the last event of a pod's run;
- ``boot``: a step of the pod's start (``step``: "VM launched", "agent
  answered", ...), for timing it (:mod:`virtcontainers.cli.virtc.timings`);
- ``clone``: the pod's VM resumed as a clone of a template (``resumed_random``:
  the first 32 bytes, in hex, its /dev/urandom gave before the host's seed;
  see docs/factory.md).
- ``reattach``: a step of a new daemon taking over the pod after its daemon
  died (``step``: "VM adopted", "agent answered", "serving"); the events of
  the dead daemon are not kept, so a new run of numbers starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

KINDS = ("start", "exit", "oom", "paused", "resumed", "stopped", "boot", "clone", "reattach")


class EventDict(TypedDict):
    seq: int
    time: float
    kind: str
    container_id: str | None
    fields: dict[str, int | str | None]


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    kind: str
    container_id: str | None = None
    fields: dict[str, int | str | None] = field(default_factory=dict)

    def to_dict(self) -> EventDict:
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "container_id": self.container_id,
            "fields": dict(self.fields),
        }

    @classmethod
    def from_dict(cls, data: object) -> Event:
        """Raises ValueError for anything but an event this module wrote."""
        if not isinstance(data, dict):
            raise ValueError(f"{data!r} is not an event")
        seq, when, kind = data.get("seq"), data.get("time"), data.get("kind")
        container_id, fields = data.get("container_id"), data.get("fields")
        if (
            not isinstance(seq, int)
            or not isinstance(when, int | float)
            or kind not in KINDS
            or not (container_id is None or isinstance(container_id, str))
            or not isinstance(fields, dict)
            or not all(isinstance(v, int | str | None) for v in fields.values())
        ):
            raise ValueError(f"{data!r} is not an event")
        assert isinstance(kind, str)
        return cls(seq, float(when), kind, container_id, dict(fields))
