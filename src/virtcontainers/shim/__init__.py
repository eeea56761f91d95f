"""containerd's shim v2 for virtcontainers: ttrpc, the task service, events.

May import the public api, oci/, storage/blockdev (a rootfs on a block device)
and the vocabulary at the root; nothing of cli/.
"""
