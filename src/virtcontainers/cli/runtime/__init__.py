"""vc-runtime: the runc-compatible CLI, its state files and its pid-file shim.

May import api, oci/ and the vocabulary.
"""
