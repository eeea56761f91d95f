"""Host probing: which accelerator to use, and the host's TSC frequency.

Every probe takes its paths as arguments so tests can feed fake files.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.base import Accelerator

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO=0xAE, 0x00)
KVM_API_VERSION = 12
ENV_OVERRIDE = "VC_ACCEL"

_TSC_REFINED = re.compile(r"tsc: Refined TSC clocksource calibration: ([0-9]+(?:\.[0-9]+)?) MHz")
_TSC_DETECTED = re.compile(r"tsc: Detected ([0-9]+(?:\.[0-9]+)?) MHz")
_CPU_MHZ = re.compile(r"^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.MULTILINE)


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _kvm_api_version(kvm_path: Path) -> tuple[int | None, str]:
    """Open *kvm_path* read-write and ask its API version; (None, why) on failure."""
    try:
        fd = os.open(kvm_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"{kvm_path} cannot be opened read-write ({exc.strerror})"
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION), ""
    except OSError as exc:
        # Not a KVM device (e.g. a fake file in tests): the open was enough.
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return KVM_API_VERSION, ""
        return None, f"KVM_GET_API_VERSION on {kvm_path} failed ({exc.strerror})"
    finally:
        os.close(fd)


def detect_accelerator(
    *,
    kvm_path: Path = Path("/dev/kvm"),
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
    modules_path: Path = Path("/sys/module"),
    env: Mapping[str, str] | None = None,
) -> tuple[Accelerator, str]:
    """Choose KVM or TCG and say why.

    KVM only when *kvm_path* opens read-write, answers KVM_GET_API_VERSION with
    12, the CPU advertises ``vmx`` or ``svm``, and the KVM module is not PVM
    (``kvm_pvm``: nested paravirtual KVM, where a stock kernel crawls).  The
    environment variable ``VC_ACCEL=kvm|tcg`` overrides the probe.

    Raises ConfigError if ``VC_ACCEL`` holds anything else.
    """
    env = os.environ if env is None else env
    forced = env.get(ENV_OVERRIDE, "").strip().lower()
    if forced:
        try:
            return Accelerator(forced), f"forced by {ENV_OVERRIDE}={forced}"
        except ValueError:
            raise ConfigError(ENV_OVERRIDE, f"{forced!r}: must be kvm or tcg") from None

    if not kvm_path.exists():
        return Accelerator.TCG, f"{kvm_path} does not exist"
    try:
        flags = cpu_flags(cpuinfo_path.read_text())
    except OSError as exc:
        return Accelerator.TCG, f"cannot read {cpuinfo_path} ({exc.strerror})"
    if (modules_path / "kvm_pvm").exists():
        return Accelerator.TCG, "KVM is nested PVM (kvm_pvm loaded): guests crawl, using TCG"
    if not flags & {"vmx", "svm"}:
        return Accelerator.TCG, "no vmx/svm CPU flag (nested or disabled virtualization)"
    version, why = _kvm_api_version(kvm_path)
    if version is None:
        return Accelerator.TCG, why
    if version != KVM_API_VERSION:
        return Accelerator.TCG, f"unexpected KVM API version {version}"
    virt = " ".join(sorted(flags & {"vmx", "svm"}))
    return Accelerator.KVM, f"{kvm_path} usable and CPU has {virt}"


def parse_tsc_khz(kernel_log: str) -> int | None:
    """The TSC frequency in kHz from a kernel log; the refined value wins."""
    for pattern in (_TSC_REFINED, _TSC_DETECTED):
        matches = pattern.findall(kernel_log)
        if matches:
            return round(float(matches[-1]) * 1000)
    return None


def read_kmsg(path: Path = Path("/dev/kmsg"), max_records: int = 5000) -> str:
    """The kernel ring buffer as text ('' if unreadable), without blocking."""
    lines: list[str] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        while len(lines) < max_records:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten while reading
                    continue
                break
            if not record:
                break
            lines.append(record.decode(errors="replace").partition(";")[2].rstrip("\n"))
    finally:
        os.close(fd)
    return "\n".join(lines)


def host_tsc_khz(
    *, kmsg_path: Path = Path("/dev/kmsg"), cpuinfo_path: Path = Path("/proc/cpuinfo")
) -> int | None:
    """The host TSC frequency in kHz, or None if unknown.

    From the kernel log ("tsc: Refined TSC clocksource calibration" or "tsc:
    Detected"), else /proc/cpuinfo "cpu MHz" if the CPU has constant_tsc.
    """
    khz = parse_tsc_khz(read_kmsg(kmsg_path))
    if khz is not None:
        return khz
    try:
        cpuinfo = cpuinfo_path.read_text()
    except OSError:
        return None
    match = _CPU_MHZ.search(cpuinfo)
    if match is None or "constant_tsc" not in cpu_flags(cpuinfo):
        return None
    return round(float(match.group(1)) * 1000)


@functools.cache
def cached_host_tsc_khz() -> int | None:
    """:func:`host_tsc_khz` for the real host, probed once per process."""
    return host_tsc_khz()
