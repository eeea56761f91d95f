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
from virtcontainers.errors import RuntimeSpecError
from virtcontainers.limits import Limits
from virtcontainers.oci.resources import update_limits as update_limits_of

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


def update_limits(packed: any_pb2.Any) -> Limits:
    """The memory, CPU and pids limits of an Update; the other settings cannot
    change in the guest after creation and are left as they are."""
    return update_limits_of(_document(packed, RESOURCES_URL), RESOURCES_URL)
