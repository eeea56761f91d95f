"""Guest image builder: ELF vmlinux, tiny initrd and squashfs root, cached by input digest.

See docs/image.md.
"""

from virtcontainers.image.builder import (
    GuestImage,
    ImageNotBuiltError,
    ImageSources,
    build_image,
    build_image_from,
    find_image,
    find_image_from,
)
from virtcontainers.image.busybox import build_busybox_rootfs
from virtcontainers.image.cache import default_cache_dir
from virtcontainers.image.rootfs import AgentSources

__all__ = [
    "AgentSources",
    "GuestImage",
    "ImageNotBuiltError",
    "ImageSources",
    "build_busybox_rootfs",
    "build_image",
    "build_image_from",
    "default_cache_dir",
    "find_image",
    "find_image_from",
]
