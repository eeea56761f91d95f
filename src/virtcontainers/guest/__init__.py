"""What runs inside the VM: the agent (guest/agent/), standard library only.

Imports nothing of the host's package but the wire format it shares with it
(agent/protocol.py, copied into the image beside the agent).
"""
