"""The per-pod daemon: its declared calls, the local RPC, its launcher and its server.

May import the vocabulary at the root, pod/, host/, storage/, hypervisor/ and agent/.
"""
