"""VM templates: what one is (template.py), making one (maker.py), keeping and
picking them (templates.py, the Factory), each module only importing those
before it; __main__.py is the background builder that templates.py starts.

May import the vocabulary at the root, hypervisor/ and agent/ (their
interfaces and factories, never a driver or client), host/, and image/ and
storage/ to find the shape of the current image on this host.
"""
