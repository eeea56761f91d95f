"""The host side of pod networking: the VM takes over the interfaces of a namespace.

The caller (a CNI plugin, netavark, a CRI) makes a network namespace with
interfaces in it; :class:`~virtcontainers.network.podnetwork.PodNetwork` gives
each of them a tap for QEMU and joins the two with tc redirects.  See
docs/network.md.

Import the submodules directly: :mod:`.netns` (checking a path) costs nothing,
while :mod:`.discovery` and :mod:`.podnetwork` import pyroute2 (≈0.3 s), which
only pods that have a network should pay for.
"""
