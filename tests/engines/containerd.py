"""A private containerd: its own config, root, state and socket in a temp dir.

Used by the `ctr` tests and the CRI test. Whatever the test did, the daemon
is stopped, the shims it started are ended, its mounts detached and its
directory removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import short_temp_dir


def run_engine(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """An engine command with its output captured and no stdin; never raises on failure."""
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Containerd:
    base: Path
    address: str
    env: dict[str, str]
    namespace: str = "vctest"
    """The containerd namespace `ctr` works in (the CRI plugin's is k8s.io)."""
    netns: str | None = None
    daemon: subprocess.Popen[bytes] | None = None

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        return run_engine(argv, self.env, timeout)

    def log_tail(self, size: int = 4000) -> str:
        path = self.base / "containerd.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def start(self) -> None:
        """Start containerd on :attr:`base` (its config, root and state); wait until it answers."""
        prefix = ["nsenter", f"--net={self.netns}"] if self.netns else []
        with (self.base / "containerd.log").open("a") as log:
            self.daemon = subprocess.Popen(
                [*prefix, "containerd", "--config", str(self.base / "config.toml")],
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            assert self.daemon.poll() is None, self.log_tail()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to containerd alone, as a service manager stops it: its shims
        (sessions of their own) and their tasks keep running."""
        assert self.daemon is not None
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def restart(self) -> None:
        """Stop containerd and start it again on the same root and state."""
        self.stop()
        self.start()


def config_toml(base: Path, address: str, plugins: str = "", cgroups: bool = False) -> str:
    """containerd's config: everything of its own under ``base``.

    ``plugins`` is more TOML, under ``[plugins."io.containerd.grpc.v1.cri"]``;
    with ``cgroups``, the CRI plugin gives its containers host cgroups.
    """
    return (
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        f'[grpc]\n  address = "{address}"\n[ttrpc]\n  address = "{address}.ttrpc"\n'
        '[plugins]\n  [plugins."io.containerd.grpc.v1.cri"]\n'
        f"    disable_cgroup = {str(not cgroups).lower()}\n" + plugins
    )


@contextmanager
def running_containerd(
    env: dict[str, str],
    plugins: str = "",
    netns: str | None = None,
    namespace: str = "vctest",
    before_stop: Callable[[Containerd], None] | None = None,
    cgroups: bool = False,
) -> Iterator[Containerd]:
    """containerd started with :func:`config_toml`, ready for `ctr`; stopped afterwards.

    With ``netns`` (a path), containerd runs in that network namespace: what
    CNI makes for its pods (bridge, host ends of veths) lives there. Before it
    is stopped, ``before_stop`` gets a chance to tear down what the test left
    (e.g. CRI sandboxes), then every task of ``namespace`` is killed and deleted.
    """
    base = short_temp_dir("vcctd-")  # its ttrpc socket path must fit in 104 bytes
    address = str(base / "containerd.sock")
    (base / "config.toml").write_text(config_toml(base, address, plugins, cgroups))
    engine = Containerd(base, address, env, namespace, netns)
    try:
        engine.start()
        yield engine
    finally:
        daemon = engine.daemon
        try:
            if before_stop is not None and daemon is not None and daemon.poll() is None:
                before_stop(engine)
        finally:
            _remove_tasks(engine)
            if daemon is not None:
                os.killpg(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(daemon.pid, signal.SIGKILL)
                    daemon.wait()
            _end_shims(address)
            unmount_under(base)
            shutil.rmtree(base, ignore_errors=True)


def _remove_tasks(engine: Containerd) -> None:
    for task in engine.ctr("tasks", "ls", "-q").stdout.split():
        engine.ctr("tasks", "kill", "-s", "SIGKILL", task)
        engine.ctr("tasks", "delete", "--force", task)
    for container in engine.ctr("containers", "ls", "-q").stdout.split():
        engine.ctr("containers", "delete", container)


VC_SHIM = "containerd-shim-vc-v2"
VC_SHIM_RUNTIME = "io.containerd.vc.v2"
"""The runtime name containerd turns into the shim's binary name."""


def with_vc_shim(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the virtualenv's bin first on PATH, where containerd looks for
    containerd-shim-vc-v2 (the package's console script)."""
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', os.defpath)}"}


def shim_pids(address: str) -> list[int]:
    """The shims this containerd started, runc's and ours (they outlive it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = argv[1:3] == [b"-m", b"virtcontainers.shim"]
        if (ours or b"containerd-shim-runc-v2" in argv[0]) and address.encode() in argv:
            found.append(int(entry.name))
    return found


def _end_shims(address: str) -> None:
    """The shims this containerd started: ended by pid."""
    for pid in shim_pids(address):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unmount_under(path: Path) -> None:
    """containerd leaves its snapshot and rootfs mounts behind when killed."""
    from virtcontainers.storage import mounts

    mounts.detach_all_under(path)
