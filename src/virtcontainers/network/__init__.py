"""The host side of pod networking: the VM takes over the interfaces of a namespace.

The caller (a CNI plugin, netavark, a CRI) makes a network namespace with
interfaces in it; :class:`PodNetwork` gives each of them a tap for QEMU and
joins the two with tc redirects.  See docs/network.md.
"""

from virtcontainers.network.discovery import Interface, Route, discover
from virtcontainers.network.netns import check_netns
from virtcontainers.network.podnetwork import Endpoint, PodNetwork, release

__all__ = [
    "Endpoint",
    "Interface",
    "PodNetwork",
    "Route",
    "check_netns",
    "discover",
    "release",
]
