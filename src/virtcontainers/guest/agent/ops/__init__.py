"""The agent's operations, one module per family; the op table maps names to them.

Standard library only; may import the agent's core modules, never the host's.
"""
