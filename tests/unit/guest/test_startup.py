"""Start-up: the command line's channels, and what importing the agent loads."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from tests.unit.guest.harness import AGENT, NEEDS_RUNC, ROOT, AgentClient

pytestmark = NEEDS_RUNC


def test_connect_option(agent_rootfs: str) -> None:
    state = tempfile.mkdtemp(prefix="vca-", dir="/tmp")
    path = os.path.join(state, "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), VC_AGENT_RUNTIME="runc")
    argv = [*AGENT, "--connect", path, "--state-dir", state]
    proc = subprocess.Popen(argv, env=env)
    try:
        server.settimeout(10)
        conn, _ = server.accept()
        client = AgentClient(conn)
        client.hello()
        assert client.call("ping") == {}
        assert client.call("guest_details")["runtime"].startswith("runc")
        conn.close()
        assert proc.wait(timeout=10) == 0
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def test_agent_module_imports_are_lean() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys, json;"
            f"sys.path.insert(0, {str(ROOT / 'src')!r});"
            "import virtcontainers.guest.agent;"
            "print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(out.stdout))
    # Importing the package loads all of it, as the guest's start stub does.
    assert "virtcontainers.guest.agent.startup" in modules
    heavy_modules = ("asyncio", "subprocess", "argparse", "ctypes", "shutil", "traceback")
    for heavy in (*heavy_modules, "typing", "dataclasses", "ipaddress"):
        assert heavy not in modules, heavy
