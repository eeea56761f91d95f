"""The demo: a pod VM, a container that greets, an exec, and a clean stop.

It is also the shortest example of a runtime built on the library: translate
what you are asked into PodConfig/ContainerConfig, then call the API.
"""

from __future__ import annotations

import os
import sys

from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.image import build_busybox_rootfs

POD = f"demo-{os.getpid()}"
# The container's first process ignores a SIGTERM it has no handler for (it is
# PID 1 of its namespace): without this trap the stop below would wait its
# whole timeout and then kill it.
STAY = "; trap 'exit 0' TERM; sleep 600 & wait"
GREETING = (
    "echo 'Hello from a container in a virtcontainers pod!'; echo \"guest kernel: $(uname -r)\""
)


def main() -> int:
    rootfs = build_busybox_rootfs()
    print(f"» starting pod {POD} (a QEMU VM)", file=sys.stderr)
    api.run_pod(PodConfig(id=POD))
    try:
        # The pod daemon writes the container's stdout straight into our pipe.
        read_end, write_end = os.pipe()
        greeter = ContainerConfig(
            "greeter", rootfs, Cmd(("sh", "-c", GREETING + STAY)), writable_layer=True
        )
        api.create_container(POD, greeter, api.Stdio(stdout=write_end, stderr=2))
        os.close(write_end)
        api.start_container(POD, "greeter")
        with os.fdopen(read_end) as output:
            for _ in range(2):
                print(output.readline(), end="", flush=True)
        exec_cmd = Cmd(
            ("sh", "-c", 'echo "exec in $(hostname): $(cat /proc/version | cut -c1-40)..."')
        )
        handle = api.enter_container(POD, "greeter", exec_cmd, api.Stdio(stdout=1, stderr=2))
        status = api.wait_process(POD, "greeter", handle.exec_id)
        print(f"» exec exited with {status.exit_code}", file=sys.stderr)
        api.stop_container(POD, "greeter", timeout=2)
    finally:
        api.stop_pod(POD)
        api.delete_pod(POD)
    leftovers = [p.id for p in api.list_pods() if p.id == POD]
    print(f"» pod stopped and deleted; left behind: {leftovers or 'nothing'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
