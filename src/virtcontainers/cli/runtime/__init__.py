"""vc-runtime: the runc-compatible CLI, its state files and its pid-file shim.

May import api, oci/, storage/blockdev (a rootfs on a block device) and the vocabulary.
"""
