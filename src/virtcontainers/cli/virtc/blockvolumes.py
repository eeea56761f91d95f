"""virtc's block volume options: disk images hot-plugged into the pod's VM."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from virtcontainers.config import MAX_HOTPLUG_SLOTS
from virtcontainers.errors import ConfigError
from virtcontainers.volumes import FILESYSTEMS, FORMATS, BlockVolume

USAGE = "IMAGE:CONTAINER[:OPTIONS]"
OPTIONS_HELP = f"OPTIONS: comma-separated ro, rw, {', '.join(FORMATS)}, {', '.join(FILESYSTEMS)}"


def block_volume_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--block-volume, any number of times; see :func:`parse_block_volume`."""
    return click.option(
        "--block-volume",
        "block_volumes",
        multiple=True,
        metavar=USAGE,
        help=f"A disk image (default raw, ext4) mounted in the container. {OPTIONS_HELP}.",
    )(command)


def hotplug_slots_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--hotplug-slots",
        type=click.IntRange(0, MAX_HOTPLUG_SLOTS),
        default=0,
        show_default=True,
        help="Empty PCIe slots for devices added while the pod runs (block volumes).",
    )(command)


def parse_block_volume(text: str) -> BlockVolume:
    """``/img/data.qcow2:/data:ro,qcow2`` -> a read-only qcow2 volume at /data.

    The format is said, never guessed from the image: a guest that writes a
    qcow2 header into a raw image must not change how it is opened next.
    """
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise click.BadParameter(f"{text!r} is not {USAGE}", param_hint="--block-volume")
    values: dict[str, Any] = {"source": Path(parts[0]).absolute(), "destination": parts[1]}
    for option in parts[2].split(",") if len(parts) == 3 else ():
        if option in ("ro", "rw"):
            values["read_only"] = option == "ro"
        elif option in FORMATS:
            values["format"] = option
        elif option in FILESYSTEMS:
            values["fstype"] = option
        else:
            raise click.BadParameter(
                f"{text!r}: unknown option {option!r} ({OPTIONS_HELP})", param_hint="--block-volume"
            )
    try:
        volume = BlockVolume(**values)
        volume.check_host()
    except ConfigError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--block-volume") from None
    return volume
