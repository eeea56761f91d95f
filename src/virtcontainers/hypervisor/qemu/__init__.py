"""The QEMU driver: its command line, QMP session, hot-plug, saved state,
virtiofsd and the confinement of what it runs.

May import hypervisor/ (the interface and devices) and the vocabulary at the root.
"""
