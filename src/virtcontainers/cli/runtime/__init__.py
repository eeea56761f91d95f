"""vc-runtime: the runc-compatible CLI (``main``, its commands in ``create``,
``control``, ``observe`` and ``exec``, made of ``lifecycle``), its state files
and its pid-file shim.

May import api, oci/, storage/blockdev (a rootfs on a block device) and the vocabulary.
"""
