"""What the guest sees of the host's files: the shared directory, the shared
filesystem's choice, host mounts made through file descriptors, and deleting
what the guest wrote.

May import the vocabulary at the root and hypervisor/ (for device kinds).
"""
