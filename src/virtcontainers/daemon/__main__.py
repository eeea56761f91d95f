"""``python -m virtcontainers.daemon``: how a pod daemon is started (launcher.py)."""

from virtcontainers.daemon.server import main

main()
