"""Agents: the protocol and its factory (base.py), our guest agent's client, a mock.

Nothing is imported here: the wire format (protocol.py) is shared with the
guest agent, which must import no more than it uses.
"""
