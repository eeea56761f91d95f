"""What crosses the channel: the wire format shared with the host, and the
agent's bounds on what it sends."""

from __future__ import annotations

try:
    from virtcontainers.agent import protocol
except ImportError:  # in the guest the module sits beside the agent package
    import vc_protocol as protocol  # type: ignore[import-not-found,no-redef]

__all__ = ["AGENT_VERSION", "CHUNK", "ERROR_LIMIT", "WINDOW", "bounded", "protocol"]

AGENT_VERSION = "0.1.0"
WINDOW = protocol.STREAM_WINDOW
CHUNK = protocol.DATA_CHUNK
ERROR_LIMIT = 4096
"""Runtime error text sent to the host is bounded to this many bytes."""


def bounded(text: str, limit: int = ERROR_LIMIT) -> str:
    raw = text.strip().encode(errors="replace")
    if len(raw) <= limit:
        return raw.decode(errors="replace")
    return raw[: limit - 3].decode(errors="ignore") + "..."
