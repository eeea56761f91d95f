"""The OCI documents containerd sends inside a task call, as virtcontainers values.

Exec carries the process (runtime-spec ``Process``) and Update the new
``LinuxResources``, each as JSON in a google.protobuf.Any.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import any_pb2

from virtcontainers import oci
from virtcontainers.config import Cmd
from virtcontainers.errors import ConfigError, RuntimeSpecError
from virtcontainers.limits import CPU_PERIOD_US, Limits

PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


def _document(packed: any_pb2.Any, expected: str) -> Mapping[str, Any]:
    if packed.type_url != expected:
        raise RuntimeSpecError(f"{packed.type_url!r}: expected a {expected.rsplit('/', 1)[-1]}")
    try:
        document = json.loads(packed.value)
    except (ValueError, RecursionError) as exc:
        raise RuntimeSpecError(f"{expected}: {exc}") from None
    if not isinstance(document, dict):
        raise RuntimeSpecError(f"{expected}: not a JSON object")
    return document


def exec_cmd(packed: any_pb2.Any) -> Cmd:
    """The Cmd of an Exec's process spec; RuntimeSpecError naming what is wrong."""
    return oci.process_from_json(_document(packed, PROCESS_URL), "exec process")


def _positive(value: object) -> int | None:
    """A limit, or None for none: engines write -1 or 0 for "no limit"."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _section(resources: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resources.get(key) or {}
    if not isinstance(value, dict):
        raise RuntimeSpecError(f"{RESOURCES_URL}: {key}: not a JSON object")
    return value


def update_limits(packed: any_pb2.Any) -> Limits:
    """The memory, CPU and pids limits of an Update; the other settings cannot
    change in the guest after creation and are left as they are."""
    resources = _document(packed, RESOURCES_URL)
    memory, cpu, pids = (_section(resources, key) for key in ("memory", "cpu", "pids"))
    quota, period = _positive(cpu.get("quota")), _positive(cpu.get("period")) or CPU_PERIOD_US
    try:
        return Limits(
            memory_bytes=_positive(memory.get("limit")),
            pids=_positive(pids.get("limit")),
            cpus=quota / period if quota is not None else None,
        )
    except ConfigError as exc:
        raise RuntimeSpecError(f"{RESOURCES_URL}: {exc}") from None
