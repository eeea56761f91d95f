"""Accelerator detection and host TSC probing, from fake files."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers.errors import ConfigError
from virtcontainers.hypervisor.accel import (
    cpu_flags,
    detect_accelerator,
    host_tsc_khz,
    parse_tsc_khz,
)
from virtcontainers.hypervisor.base import Accelerator

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2100.000
flags\t\t: fpu vme de pse tsc msr {extra} constant_tsc
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    (tmp_path / "kvm").write_bytes(b"")
    (tmp_path / "modules" / "kvm").mkdir(parents=True)
    return tmp_path


def _detect(host: Path, flags: str, env: dict[str, str] | None = None) -> tuple[Accelerator, str]:
    (host / "cpuinfo").write_text(CPUINFO.format(extra=flags))
    return detect_accelerator(
        kvm_path=host / "kvm",
        cpuinfo_path=host / "cpuinfo",
        modules_path=host / "modules",
        env=env or {},
    )


def test_kvm_with_vmx(host: Path) -> None:
    accel, reason = _detect(host, "vmx")
    assert accel is Accelerator.KVM
    assert "vmx" in reason


def test_kvm_with_svm(host: Path) -> None:
    assert _detect(host, "svm")[0] is Accelerator.KVM


def test_no_virt_flag_is_tcg(host: Path) -> None:
    accel, reason = _detect(host, "")
    assert accel is Accelerator.TCG
    assert "vmx/svm" in reason


def test_pvm_is_tcg(host: Path) -> None:
    (host / "modules" / "kvm_pvm").mkdir()
    accel, reason = _detect(host, "vmx")
    assert accel is Accelerator.TCG
    assert "PVM" in reason


def test_missing_dev_kvm_is_tcg(host: Path) -> None:
    (host / "kvm").unlink()
    accel, reason = _detect(host, "vmx")
    assert accel is Accelerator.TCG
    assert "does not exist" in reason


def test_unopenable_dev_kvm_is_tcg(host: Path) -> None:
    (host / "kvm").unlink()
    (host / "kvm").mkdir()  # opening a directory read-write fails
    accel, reason = _detect(host, "vmx")
    assert accel is Accelerator.TCG
    assert "read-write" in reason


def test_env_override(host: Path) -> None:
    assert _detect(host, "", {"VC_ACCEL": "kvm"})[0] is Accelerator.KVM
    accel, reason = _detect(host, "vmx", {"VC_ACCEL": "TCG"})
    assert accel is Accelerator.TCG
    assert "VC_ACCEL" in reason
    with pytest.raises(ConfigError, match="VC_ACCEL"):
        _detect(host, "", {"VC_ACCEL": "hvf"})


def test_cpu_flags() -> None:
    assert "vmx" in cpu_flags(CPUINFO.format(extra="vmx"))
    assert cpu_flags("processor : 0\n") == frozenset()


def test_parse_tsc_khz() -> None:
    log = "tsc: Detected 2596.120 MHz processor\nother\n"
    assert parse_tsc_khz(log) == 2596120
    refined = log + "tsc: Refined TSC clocksource calibration: 2596.993 MHz\n"
    assert parse_tsc_khz(refined) == 2596993
    assert parse_tsc_khz("nothing here") is None


def test_host_tsc_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=""))
    assert host_tsc_khz(kmsg_path=tmp_path / "none", cpuinfo_path=cpuinfo) == 2100000
    cpuinfo.write_text(CPUINFO.replace("constant_tsc", ""))
    assert host_tsc_khz(kmsg_path=tmp_path / "none", cpuinfo_path=cpuinfo) is None
    assert host_tsc_khz(kmsg_path=tmp_path / "none", cpuinfo_path=tmp_path / "none") is None
