"""critest (the CRI's conformance suite) against one private containerd, the vc
handler and runc in the same run; see docs/conformance.md.

Test-run tooling: it may import virtcontainers and tests.engines, nothing imports it.
"""
