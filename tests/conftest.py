"""Shared fixtures: an isolated run root for every test that touches pods, images, ptys."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtcontainers import api
from virtcontainers.factory import pool
from virtcontainers.storage import mounts

# A pod that finds no template would start a template VM in the background:
# on a shared 2-core runner, dozens of them at once.  Only the tests of that
# feature turn it on, each with a factory directory of its own.
os.environ["VC_AUTO_TEMPLATES"] = "0"
# Nor does a pod claim or refill a pool of waiting clones: that feature's tests
# turn it on, with a factory directory of their own.
os.environ["VC_POOL"] = "0"


def remove_all_pods() -> None:
    """Stop and delete every pod of the current run root; report, don't stop, on errors."""
    for pod in api.list_pods():
        try:
            if pod.state.value in ("running", "paused"):
                api.stop_pod(pod.id)
            api.delete_pod(pod.id)
        except Exception as exc:  # keep cleaning the others
            print(f"cleanup of pod {pod.id} failed: {exc}")


def short_temp_dir(prefix: str) -> Path:
    """A temp dir with a short path: unix socket paths must fit in 107 bytes, and
    pytest's own temp dirs grow with the test name and its session counter."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture
def run_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """VC_RUN_DIR in a temp dir; afterwards every pod is stopped and deleted."""
    base = short_temp_dir("vc-")
    root = base / "run"
    monkeypatch.setenv("VC_RUN_DIR", str(root))
    try:
        yield root
        pool.stop(root)
        remove_all_pods()
        mounts.detach_all_under(base)
        leftovers = list(root.rglob("*")) if root.exists() else []
        assert not [p for p in leftovers if p.name != "pods"], f"left behind: {leftovers}"
    finally:
        mounts.detach_all_under(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Any]:
    """Network namespaces and veths the test makes (tests/netlab.py), all removed after it."""
    from tests.netlab import Lab

    made = Lab()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def guest_image() -> object:
    """The guest image `make test` built; the suite fails clearly without it."""
    from virtcontainers.image import ImageNotBuiltError, find_image

    try:
        return find_image()
    except ImageNotBuiltError as exc:
        pytest.fail(f"{exc} (run `make image` or `virtc image build`)")


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    from virtcontainers.image import build_busybox_rootfs

    return build_busybox_rootfs()


def pty_read_until(fd: int, token: bytes, buffer: bytearray, timeout: float = 120) -> bool:
    """Read a pty master into ``buffer`` until ``token`` shows up (or time runs out)."""
    deadline = time.monotonic() + timeout
    while token not in buffer and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                buffer += os.read(fd, 4096)
            except OSError:
                break
    return token in buffer


def shell_session_in_pty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``argv`` (which starts an interactive ``sh``) on a new terminal, type
    a command and ``exit 6``; returns the exit status and what the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    output = bytearray()
    try:
        assert pty_read_until(fd, b"# ", output), output.decode(errors="replace")
        os.write(fd, b"tty; echo mark-$((6*7))\r")
        assert pty_read_until(fd, b"mark-42", output), output.decode(errors="replace")
        os.write(fd, b"exit 6\r")
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), bytes(output)
    finally:
        os.close(fd)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@pytest.fixture(autouse=True)
def signal_handlers_restored() -> Iterator[None]:
    """A CLI run in-process (CliRunner) installs its own handlers: vc-runtime
    create's SIGTERM raises SystemExit.  Left in place, a child that a later
    test forks would inherit them and could unwind into pytest itself."""
    signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGWINCH)
    saved = {signum: signal.getsignal(signum) for signum in signums}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
