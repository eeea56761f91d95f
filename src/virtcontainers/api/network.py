"""The API's network: interfaces carried into a running pod's VM, and out again."""

from __future__ import annotations

from virtcontainers.api.common import live_call
from virtcontainers.daemon import calls
from virtcontainers.status import InterfaceStatus

# A hot-plug waits for the guest twice at worst (the NIC to appear, then to let
# go of it again when the guest's configuration fails): a minute each.
INTERFACE_TIMEOUT = 180.0


def add_interface(pod_id: str, name: str) -> InterfaceStatus:
    """Carry one more interface of the pod's network namespace into its running VM.

    Put the interface in the namespace first (a veth, a macvlan, ...), with
    its addresses and routes: the guest takes them, as it takes those of the
    interfaces found at boot.  Returns when the guest has it configured.
    Raises StateError (the pod is not running), ConfigError (the pod has no
    network namespace, or the interface cannot be carried), NotFoundError
    (no such interface in the namespace), ExistsError (attached already),
    NetworkError, HypervisorError (no free hot-plug slot), AgentError.
    """
    request = calls.AddInterface(name)
    return live_call(pod_id, request, timeout=INTERFACE_TIMEOUT)


def remove_interface(pod_id: str, name: str) -> None:
    """Take an interface out of the pod's running VM, and leave it in the namespace
    exactly as the caller gave it.

    Returns when the guest has let the NIC go (its addresses and routes go
    with it).  Raises StateError, ConfigError (no network namespace),
    NotFoundError (the interface is not attached), HypervisorError (the guest
    did not release the NIC: it stays attached; try again), NetworkError.
    """
    request = calls.RemoveInterface(name)
    live_call(pod_id, request, timeout=INTERFACE_TIMEOUT)


def list_interfaces(pod_id: str) -> list[InterfaceStatus]:
    """The interfaces the pod's VM carries: those found at boot, then those added."""
    return live_call(pod_id, calls.ListInterfaces())
