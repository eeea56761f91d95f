"""A pod as its daemon holds it: the VM's boot, NICs, hot-plugged interfaces and
volumes, containers, processes and their output sinks.

May import the vocabulary at the root, hypervisor/, agent/, network/, storage/,
host/ and factory/; never daemon/, api or cli/.
"""
