"""A pod as its daemon holds it: the Pod and its own life, its containers'
lifecycle and the processes in its guest, the VM's boot, NICs, hot-plugged
interfaces and volumes, the processes' relays and output sinks.

May import the vocabulary at the root, hypervisor/, agent/, network/, storage/,
host/ and factory/; never daemon/, api or cli/.
"""
