"""Which shared filesystem carries container root filesystems into the guest.

``choose_shared_fs()`` answers for the pod about to boot:

- ``VC_SHARED_FS=9p`` or ``VC_SHARED_FS=virtiofs`` forces a kind (virtiofs
  without a virtiofsd installed is a ConfigError);
- otherwise virtio-fs where virtiofsd is installed and the VM runs under KVM,
  else virtio-9p.  Under TCG virtio-fs measured no faster to start a pod and
  1.3-1.9x slower for file I/O than 9p (docs/measurements.md), so emulated
  VMs keep 9p; under KVM virtio-fs is the field's choice (vhost-user, no 9p
  round trip per operation), which this machine cannot measure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.accel import detect_accelerator
from virtcontainers.hypervisor.base import Accelerator
from virtcontainers.hypervisor.devices import SharedFsKind
from virtcontainers.hypervisor.qemu.virtiofsd import find_virtiofsd

ENV = "VC_SHARED_FS"
NAMES = {"9p": SharedFsKind.VIRTIO_9P, "virtiofs": SharedFsKind.VIRTIO_FS}


def choose_shared_fs(
    environ: Mapping[str, str] | None = None, accelerator: Accelerator | None = None
) -> SharedFsKind:
    """The shared filesystem kind for a new pod VM (see the module docstring)."""
    env = os.environ if environ is None else environ
    wanted = env.get(ENV, "").strip()
    if wanted:
        try:
            kind = NAMES[wanted]
        except KeyError:
            raise ConfigError(ENV, f"{wanted!r}: must be one of {', '.join(NAMES)}") from None
        if kind is SharedFsKind.VIRTIO_FS and find_virtiofsd() is None:
            raise ConfigError(ENV, "virtiofs needs virtiofsd: apt-get install virtiofsd")
        return kind
    if find_virtiofsd() is None:
        return SharedFsKind.VIRTIO_9P
    if accelerator is None:
        accelerator, _reason = detect_accelerator(env=env)
    return SharedFsKind.VIRTIO_FS if accelerator is Accelerator.KVM else SharedFsKind.VIRTIO_9P
