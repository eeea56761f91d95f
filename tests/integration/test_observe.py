"""virtc top and virtc metrics over a real pod: a container burning CPU shows up."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import pty_read_until
from tests.integration.conftest import shell
from tests.netlab import Lab, ip
from virtcontainers import api
from virtcontainers.config import ContainerConfig, PodConfig

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

VIRTC = str(Path(sys.executable).with_name("virtc"))
SCRAPE = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=60).read().decode())
"""


@pytest.fixture
def busy_pod(no_leaks: Path, busybox_rootfs: Path) -> str:
    burner = ContainerConfig(
        "burn", busybox_rootfs, shell("while :; do :; done"), writable_layer=True
    )
    api.run_pod(PodConfig(id="obs", containers=(burner,)))
    return "obs"


def test_top_shows_the_pod_and_its_busy_container_on_a_terminal(busy_pod: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(VIRTC, [VIRTC, "top", "--interval", "1"])
    output = bytearray()
    try:
        # The second view has a CPU share: the pod's row then ends in a percentage.
        assert pty_read_until(fd, b"%", output), output.decode(errors="replace")
        assert pty_read_until(fd, b"burn", output), output.decode(errors="replace")
        os.kill(pid, signal.SIGINT)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    finally:
        os.close(fd)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "POD / CONTAINER" in text and "obs" in text and "running" in text
    assert re.search(r"\d+\.\d MiB", text)


def test_the_metrics_endpoint_is_scraped_in_a_test_namespace(busy_pod: str, lab: Lab) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    enter = ["nsenter", f"--net={path}"]
    server = subprocess.Popen(
        [*enter, VIRTC, "metrics", "--listen", "127.0.0.1:9477"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert server.stderr is not None
        assert "serving metrics" in server.stderr.readline()
        scraped = subprocess.run(
            [*enter, sys.executable, "-c", SCRAPE, "9477"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = scraped.stdout
    assert 'vc_pods{state="running"} 1.0' in text
    pss = re.search(r'vc_pod_pss_bytes\{pod="obs",process="qemu"\} (\S+)', text)
    assert pss and float(pss.group(1)) > 0
    cpu = re.search(r'vc_container_cpu_seconds_total\{container="burn",pod="obs"\} (\S+)', text)
    assert cpu and float(cpu.group(1)) > 0, text
