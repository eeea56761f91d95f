"""Task events, published to containerd as its shims do: Forward over ttrpc.

containerd names its ttrpc socket in the shim's TTRPC_ADDRESS.  Events are
sent one at a time, in the order they happened (containerd must see a task's
start before its exit); one that cannot be sent is tried again a few times,
then dropped with a warning: the task's own calls still answer the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from virtcontainers.shim import ttrpc
from virtcontainers.shim.protos import EVENTS_SERVICE, event_service, events, pack

log = logging.getLogger(__name__)
FORWARD_TIMEOUT = 5.0
ATTEMPTS = 5

TOPICS: dict[type[Message], str] = {
    events.TaskCreate: "/tasks/create",
    events.TaskStart: "/tasks/start",
    events.TaskExit: "/tasks/exit",
    events.TaskDelete: "/tasks/delete",
    events.TaskExecAdded: "/tasks/exec-added",
    events.TaskExecStarted: "/tasks/exec-started",
    events.TaskOOM: "/tasks/oom",
    events.TaskPaused: "/tasks/paused",
    events.TaskResumed: "/tasks/resumed",
}


def envelope(namespace: str, event: Message, when_ns: int) -> event_service.ForwardRequest:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromNanoseconds(when_ns)
    return event_service.ForwardRequest(
        envelope=event_service.Envelope(
            timestamp=timestamp, namespace=namespace, topic=TOPICS[type(event)], event=pack(event)
        )
    )


class Publisher:
    """Sends events to containerd's ttrpc address, in order, from a task of its own."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address = address.removeprefix("unix://")
        self.namespace = namespace
        self._queue: asyncio.Queue[event_service.ForwardRequest] = asyncio.Queue()
        self._client: ttrpc.Client | None = None
        self._task = asyncio.create_task(self._send_all())

    def publish(self, event: Message) -> None:
        """Queue ``event`` (one of :data:`TOPICS`) to be sent; returns at once."""
        log.debug("event %s %s", TOPICS[type(event)], event)
        self._queue.put_nowait(envelope(self.namespace, event, time.time_ns()))

    async def _send_all(self) -> None:
        while True:
            request = await self._queue.get()
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    await self._forward(request)
                    break
                except (OSError, ttrpc.TtrpcError) as exc:
                    await self._disconnect()
                    if attempt == ATTEMPTS:
                        log.warning("dropped event %s: %s", request.envelope.topic, exc)
                    else:
                        await asyncio.sleep(attempt * 0.5)
            self._queue.task_done()

    async def _forward(self, request: event_service.ForwardRequest) -> None:
        if self._client is None:
            self._client = await ttrpc.Client.connect(self.address)
        await self._client.call(
            EVENTS_SERVICE, "Forward", request.SerializeToString(), timeout=FORWARD_TIMEOUT
        )

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def close(self, timeout: float = FORWARD_TIMEOUT) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._disconnect()
