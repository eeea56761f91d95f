"""The host's TSC frequency, for the guest's tsc_early_khz= parameter.

On microvm the guest has no PIT/HPET/PM timer to calibrate its TSC against,
so the host passes the value it measured at its own boot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

# "tsc: Refined TSC clocksource calibration: 2095.077 MHz" is more precise than
# "tsc: Detected 2100.000 MHz processor", so it wins when both are logged.
_REFINED = re.compile(r"tsc: Refined TSC clocksource calibration: (\d+\.\d+) MHz")
_DETECTED = re.compile(r"tsc: Detected (\d+\.\d+) MHz")
_CPUINFO = re.compile(r"^cpu MHz\s*:\s*(\d+(?:\.\d+)?)", re.MULTILINE)


def khz_from_kernel_log(log: str) -> int | None:
    """TSC kHz from kernel log text, or None when the log does not say."""
    for pattern in (_REFINED, _DETECTED):
        found = pattern.findall(log)
        if found:
            return round(float(found[-1]) * 1000)
    return None


def khz_from_cpuinfo(text: str) -> int | None:
    """CPU kHz from /proc/cpuinfo text (an approximation of the TSC rate)."""
    found = _CPUINFO.search(text)
    return round(float(found.group(1)) * 1000) if found else None


def _command_output(argv: list[str]) -> str:
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/bin:/bin:/usr/sbin:/sbin")
    if exe is None:
        return ""
    try:
        done = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def host_tsc_khz() -> int | None:
    """The host's TSC frequency in kHz, or None when it cannot be found.

    Tries the kernel log (dmesg, then the journal), then /proc/cpuinfo.
    """
    for argv in (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-q"]):
        khz = khz_from_kernel_log(_command_output(argv))
        if khz:
            return khz
    try:
        return khz_from_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None
