"""``python -m virtcontainers.shim``: the shim's server, as ``start`` spawns it."""

from virtcontainers.shim.main import main

main()
