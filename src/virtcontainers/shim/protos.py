"""containerd's messages, as the shim uses them: the one way into the generated code.

``make deps`` generates them from containerd 1.6's own .proto files
(scripts/gen-shim-protos.sh) into ``_gen/``, which is never committed.  Their
protobuf names are containerd's, so their type URLs are the ones containerd's
typeurl registry knows.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message

try:
    from virtcontainers.shim._gen.cgroups.stats.v1 import metrics_pb2 as cgroups_v1
    from virtcontainers.shim._gen.cgroups.v2.stats import metrics_pb2 as cgroups_v2
    from virtcontainers.shim._gen.containerd.api.events import task_pb2 as events
    from virtcontainers.shim._gen.containerd.api.services.ttrpc.events.v1 import (
        events_pb2 as event_service,
    )
    from virtcontainers.shim._gen.containerd.api.types.task import task_pb2 as task_types
    from virtcontainers.shim._gen.containerd.runtime.v2.task import shim_pb2 as task
except ModuleNotFoundError as exc:  # pragma: no cover - a checkout without `make deps`
    raise ModuleNotFoundError(
        "containerd's messages for the shim are not generated: run `make deps` "
        "(scripts/gen-shim-protos.sh)"
    ) from exc

__all__ = [
    "EVENTS_SERVICE",
    "TASK_SERVICE",
    "cgroups_v1",
    "cgroups_v2",
    "event_service",
    "events",
    "pack",
    "task",
    "task_types",
]

TASK_SERVICE = task.DESCRIPTOR.services_by_name["Task"].full_name
EVENTS_SERVICE = event_service.DESCRIPTOR.services_by_name["Events"].full_name


def pack(message: Message) -> any_pb2.Any:
    """``message`` in an Any whose type URL is its bare protobuf name, as
    containerd's typeurl writes and reads it (no ``type.googleapis.com/``)."""
    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())
