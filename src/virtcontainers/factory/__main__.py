"""The background template builder: ``python -m virtcontainers.factory --lock-fd N DIR SHAPE``.

Started by :meth:`~virtcontainers.factory.templates.Factory.start_auto_build`
for a pod that found no template: it leaves the pod's cgroup, lowers its
priority, makes the template of SHAPE (JSON, ``TemplateShape.to_json``) in
the factory DIR, and prunes.  It holds the inherited lock on fd N until it
exits, so no second background build starts meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from virtcontainers.errors import VcError
from virtcontainers.factory.template import TemplateShape
from virtcontainers.factory.templates import Factory
from virtcontainers.host.cgroup import leave_to_root

NICENESS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtcontainers.factory")
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("root", type=Path)
    parser.add_argument("shape")
    args = parser.parse_args(argv)
    os.set_inheritable(args.lock_fd, False)  # QEMU needs no copy of it
    os.ftruncate(args.lock_fd, 0)
    os.pwrite(args.lock_fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for a reader
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    leave_to_root()
    os.nice(NICENESS)
    shape = TemplateShape.from_json(json.loads(args.shape))
    factory = Factory(args.root)
    started = time.monotonic()
    try:
        template = asyncio.run(
            factory.build(shape, automatic=True, progress=logging.getLogger("factory").info)
        )
        removed = factory.prune_automatic()
    except VcError as exc:
        logging.error("no template made for %s: %s", shape.describe(), exc)
        return 1
    logging.info(
        "template %s ready after %.1fs%s",
        template.key,
        time.monotonic() - started,
        f"; removed {', '.join(removed)}" if removed else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
