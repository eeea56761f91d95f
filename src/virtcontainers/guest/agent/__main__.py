"""``python -m virtcontainers.guest.agent``: how host tests start the agent."""

import sys

from .startup import main

sys.exit(main())
