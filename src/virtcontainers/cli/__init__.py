"""The front-ends people type: ``virtc`` (cli/virtc/) and ``vc-runtime`` (cli/runtime/),
with what both share (signal names).

May import the public api, oci/ and the vocabulary at the root; nothing below api
except through it.
"""
