"""Debian's docker-registry on 127.0.0.1 inside the run's network namespace, fed by skopeo."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.conformance.images import Image, layout_ref

PORT = 5000


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", *argv]


def _config(storage: Path) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{PORT}\n"
    )


def _answers(netns: str) -> bool:
    probe = in_netns(
        netns, ["busybox", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/v2/"]
    )
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@contextmanager
def running_registry(netns: str, work: Path, log: Path) -> Iterator[str]:
    """The registry serving ``work``'s storage; yields its address (host:port).

    Raises:
        RuntimeError: it did not answer within 30 s.
    """
    (work / "registry.yml").write_text(_config(work / "storage"))
    with log.open("w") as out:
        server = subprocess.Popen(
            in_netns(netns, ["docker-registry", "serve", str(work / "registry.yml")]),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not _answers(netns):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start; see {log}")
                time.sleep(0.2)
            yield f"127.0.0.1:{PORT}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def repository_path(name: str) -> str:
    """An image's name without its registry host: where a mirror serves it."""
    return name.split("/", 1)[1]


def push(netns: str, layout: Path, images: list[Image], address: str) -> None:
    """Every name of every image, from the layout into the registry.

    Raises:
        subprocess.CalledProcessError: skopeo failed (its stderr is in the exception).
    """
    for image in images:
        for name in image.names:
            subprocess.run(
                in_netns(
                    netns,
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--dest-tls-verify=false",
                        f"oci:{layout}:{layout_ref(name)}",
                        f"docker://{address}/{repository_path(name)}",
                    ],
                ),
                check=True,
                capture_output=True,
                text=True,
            )
