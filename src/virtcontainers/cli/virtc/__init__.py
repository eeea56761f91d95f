"""virtc: the demo CLI over the API (one module per command group).

May import api and the vocabulary; anything else goes through api.
"""
