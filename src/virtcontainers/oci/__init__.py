"""OCI runtime-spec support: bundles to virtcontainers configs, hooks, CRI pod roles.

What is translated, dropped (with a warning) or refused is in docs/oci.md.
"""

from __future__ import annotations

from virtcontainers.oci.annotations import PodRole
from virtcontainers.oci.bundle import (
    Bundle,
    cgroups_path,
    load_bundle,
    process_from_json,
    read_role,
)
from virtcontainers.oci.defaults import default_spec, features
from virtcontainers.oci.hooks import STAGES, run_hooks
from virtcontainers.oci.namespaces import Peer

__all__ = [
    "STAGES",
    "Bundle",
    "Peer",
    "PodRole",
    "cgroups_path",
    "default_spec",
    "features",
    "load_bundle",
    "process_from_json",
    "read_role",
    "run_hooks",
]
