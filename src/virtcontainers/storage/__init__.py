"""What the guest sees of the host's files: the shared directory, the shared
filesystem's choice, and host mounts made through file descriptors.

May import the vocabulary at the root and hypervisor/ (for device kinds).
"""
