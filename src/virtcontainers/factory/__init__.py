"""VM templates: kept and picked (templates.py), made (maker.py).

May import the vocabulary at the root, hypervisor/ and agent/ (through their factories).
"""
