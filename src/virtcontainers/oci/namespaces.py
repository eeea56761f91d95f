"""Namespace paths: what a container in a VM can join, and what it cannot.

A VM cannot join a host namespace.  What a container can join is a namespace
of another container of its pod, inside the guest.  Engines name another
container's namespace by that container's pid, the one its runtime reported
(for vc-runtime, the shim's pid of ``state`` and ``--pid-file``): containerd's
CRI plugin points a pod's containers at ``/proc/<sandbox pid>/ns/ipc`` (and
``uts``, ``pid``, ``net``), podman's ``--ipc container:X`` and pods likewise.

So a namespace path must read ``/proc/<pid>/ns/<type>``, with the entry's own
type; the runtime then finds which of its containers has that pid
(:func:`resolve`), and the container joins that one's namespace in the guest.
Any other path is refused, and so is a container in another pod (another VM).

Network paths are the exception: a path that names no container of the
runtime is the pod's network namespace (the VM is put on it, see
translate.py), so only ``/proc/<pid>/ns/net`` paths are looked up, and a
container found there only decides which pod the container joins.

A namespace left out is the runtime's own, the node's.  A CRI sandbox
leaves out those its pod shares with the node (:func:`refuse_node_namespaces`),
which a VM cannot share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci._json import Loc

#: The names of namespaces under /proc/<pid>/ns, by OCI namespace type.
PROC_NAMES = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}
_PROC_NS = re.compile(r"/proc/([1-9][0-9]{0,9})/ns/([a-z_]+)")
#: Namespace type -> (the pod setting that leaves it out of a CRI sandbox, why a VM cannot).
NODE_SETTINGS = {
    "network": (
        "hostNetwork",
        "the pod's network is its VM's, which has its own interfaces and cannot use the node's",
    ),
    "ipc": (
        "hostIPC",
        "the pod's System V IPC and POSIX message queues are its guest kernel's, not the node's",
    ),
}


@dataclass(frozen=True)
class NamespacePath:
    """A ``/proc/<pid>/ns/<type>`` path of a namespace entry, to be resolved."""

    kind: str
    """The entry's OCI type (``ipc``, ``network``, ...)."""
    pid: int
    """0 for a network path of another form: a host network namespace."""
    path: str
    where: str
    """Its JSON location, e.g. ``config.json: linux.namespaces[1].path``."""


class Peer(NamedTuple):
    """A container of the runtime, found by the pid that a namespace path names."""

    container_id: str
    pod_id: str


@dataclass(frozen=True)
class Resolution:
    pod_id: str | None
    """The pod the container must run in (None: the bundle's own choice)."""
    joins: dict[str, str]
    """Namespace type -> id of the container whose namespace it joins in the guest."""


def parse_path(kind: str, path: str, loc: Loc) -> NamespacePath:
    """The namespace a path names by pid; refused unless it is one (network excepted).

    ``loc`` is the entry's path field.  A network path of another form is a
    host network namespace (pid 0), the pod's.
    """
    match = _PROC_NS.fullmatch(path)
    if match is None:
        if kind == "network":
            return NamespacePath(kind=kind, pid=0, path=path, where=str(loc))
        raise loc.error(
            f"{path} is not a namespace a container in a VM can join: only the namespaces of "
            f"containers of its own pod can be joined, named as /proc/<pid>/ns/{PROC_NAMES[kind]} "
            "with the pid the runtime reports for that container"
        )
    pid, name = int(match.group(1)), match.group(2)
    if name not in PROC_NAMES.values():
        raise loc.error(
            f"{path}: /proc/<pid>/ns has no {name!r} (the {kind} namespace is "
            f"{PROC_NAMES[kind]!r} there)"
        )
    if name != PROC_NAMES[kind]:
        raise loc.error(f"{path} is a namespace of type {name!r}, but this entry is {kind!r}")
    return NamespacePath(kind=kind, pid=pid, path=path, where=str(loc))


def refuse_node_namespaces(kinds: Collection[str], loc: Loc) -> None:
    """Refuse a CRI sandbox that shares the node's network or IPC namespace.

    containerd and CRI-O give a pod's sandbox a namespace of every type the pod
    does not share with the node, and leave out the ones it does.  ``kinds``
    are the sandbox's namespace types, ``loc`` is ``linux.namespaces``.
    Raises RuntimeSpecError naming the pod's setting.
    """
    for kind, (setting, reason) in NODE_SETTINGS.items():
        if kind not in kinds:
            raise loc.error(
                f"this CRI sandbox has no {kind} namespace: its pod shares the node's "
                f"({setting}: true), which a pod in a VM cannot do: {reason}. Run the pod "
                f"without {setting}, or with a runtime handler that does not make a VM (runc)"
            )


def resolve(
    paths: Sequence[NamespacePath],
    find: Callable[[int], Peer | None],
    pod_id: str | None,
    makes_pod: bool,
) -> Resolution:
    """Which containers ``paths`` name, and so which pod the container joins.

    ``pod_id`` is the pod the bundle already belongs to (a CRI container's
    sandbox), ``makes_pod`` whether it creates one (a CRI sandbox).  Raises
    RuntimeSpecError for a path that names no container of the runtime, or one
    in another pod.
    """
    joins: dict[str, str] = {}
    host_network: NamespacePath | None = None
    joined_by: Peer | None = None
    for ns in paths:
        peer = find(ns.pid) if ns.pid else None
        if peer is None:
            if ns.kind == "network":
                host_network = ns  # the pod's network namespace (translate.py)
                continue
            raise RuntimeSpecError(
                f"{ns.where}: {ns.path}: pid {ns.pid} is not a container of this runtime, and "
                "a container in a VM can only join namespaces of containers of its own pod"
            )
        if makes_pod:
            raise RuntimeSpecError(
                f"{ns.where}: {ns.path} is the {ns.kind} namespace of container "
                f"{peer.container_id} (pod {peer.pod_id}), but this bundle is a sandbox, which "
                "makes a new pod: it cannot join another pod's namespaces"
            )
        if pod_id is None:
            pod_id, joined_by = peer.pod_id, peer
        elif peer.pod_id != pod_id:
            raise RuntimeSpecError(
                f"{ns.where}: {ns.path} is the {ns.kind} namespace of container "
                f"{peer.container_id}, which runs in pod {peer.pod_id}, not in pod {pod_id} "
                "with this container: containers in different VMs cannot share namespaces"
            )
        if ns.kind != "network":
            joins[ns.kind] = peer.container_id
    if joined_by is not None and host_network is not None:
        raise RuntimeSpecError(
            f"{host_network.where}: {host_network.path}: this container joins pod "
            f"{joined_by.pod_id} (it shares namespaces with container {joined_by.container_id}), "
            "whose network is its VM's, not this network namespace"
        )
    return Resolution(pod_id=pod_id, joins=joins)
