"""virtc's container and pod options, shared by its commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from virtcontainers.cli.virtc.common import progress
from virtcontainers.config import BOOT_MODES, Cmd, ContainerConfig
from virtcontainers.limits import Limits
from virtcontainers.volumes import Mount


def container_config(
    container_id: str,
    rootfs: Path | None,
    cmd: Cmd,
    mounts: tuple[Mount, ...],
    limits: Limits | None = None,
) -> ContainerConfig:
    """A container on ``rootfs``, or on the built busybox rootfs with a layer of its own.

    The busybox rootfs is one directory for every pod: it stays read-only, and
    each container's writes go to its own layer, deleted with the container.
    """
    limits = limits or Limits()
    if rootfs is not None:
        return ContainerConfig(container_id, rootfs.resolve(), cmd, mounts, limits=limits)
    from virtcontainers.image import build_busybox_rootfs

    base = build_busybox_rootfs(progress=progress)
    return ContainerConfig(container_id, base, cmd, mounts, writable_layer=True, limits=limits)


def boot_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--boot auto|template|cold (PodConfig.boot)."""
    return click.option(
        "--boot",
        type=click.Choice(BOOT_MODES),
        default="auto",
        show_default=True,
        help="Start the VM from a template (virtc factory init), boot it cold, or "
        "take a template when one fits.",
    )(command)


def forward_loopback_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--forward-loopback (PodConfig.forward_loopback)."""
    return click.option(
        "--forward-loopback",
        is_flag=True,
        help="TCP to localhost inside --netns reaches the same port in the VM "
        "(as containerd's port-forward needs).",
    )(command)


def parse_mount(text: str) -> Mount:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise click.BadParameter(f"{text!r} is not HOST:CONTAINER[:ro|rw]", param_hint="--volume")
    return Mount(parts[0], parts[1], read_only=len(parts) == 3 and parts[2] == "ro")
