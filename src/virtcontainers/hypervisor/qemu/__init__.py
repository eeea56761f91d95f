"""The QEMU driver: its config checked into a command line, launching or
adopting QEMU, the running process and its end, its QMP session, hot-plug,
saved state, virtiofsd and the confinement of what it runs.

May import hypervisor/ (the interface and devices) and the vocabulary at the root.
"""
