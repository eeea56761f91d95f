"""The host side of pods outside their VM: host cgroups, processes known by pidfd,
waiting on fds, log tails, clean-up and the collection of what dead pods left.

May import the vocabulary at the root, storage/ and network/.
"""
