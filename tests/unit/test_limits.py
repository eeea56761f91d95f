"""Container limits: parsing, checking against the VM, and the guest spec they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virtcontainers import spec
from virtcontainers.config import Cmd, ContainerConfig, PodConfig, Resources
from virtcontainers.errors import ConfigError
from virtcontainers.limits import Limits, parse_size

ROOTFS = Path("/nonexistent/rootfs")


@pytest.mark.parametrize(
    ("text", "size"),
    [("64M", 64 << 20), ("1g", 1 << 30), ("512MiB", 512 << 20), ("4096k", 4 << 20),
     ("1048576", 1 << 20), ("100b", 100)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size("--memory-limit", text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "1.5G", "64X", "64 M M"])
def test_bad_sizes_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--memory-limit"):
        parse_size("--memory-limit", text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory_bytes": 1 << 20}, "below the minimum"),
        ({"memory_bytes": "64M"}, "not a whole number"),
        ({"memory_bytes": True}, "not a whole number"),
        ({"pids": 0}, "outside 1.."),
        ({"pids": 2.5}, "not a whole number"),
        ({"cpus": 0.001}, "below 0.01"),
        ({"cpus": "1"}, "not a number"),
    ],
)
def test_bad_limits_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Limits(**fields)


def test_a_limit_beyond_the_vm_is_refused_with_the_container_named() -> None:
    big = ContainerConfig("big", ROOTFS, Cmd(("true",)), limits=Limits(memory_bytes=1 << 30))
    with pytest.raises(ConfigError, match="'big': a limit of 1024 MiB is more than its pod's VM"):
        PodConfig(id="p", resources=Resources(memory_mib=512), containers=(big,))
    hungry = ContainerConfig("cpu", ROOTFS, Cmd(("true",)), limits=Limits(cpus=2.5))
    with pytest.raises(ConfigError, match=r"2\.5 CPUs is more than its pod.s VM has"):
        PodConfig(id="p", resources=Resources(vcpus=2), containers=(hungry,))
    PodConfig(id="p", resources=Resources(vcpus=3), containers=(hungry,))


def test_limits_round_trip_and_unknown_fields_are_refused() -> None:
    limits = Limits(memory_bytes=64 << 20, pids=32, cpus=0.5)
    config = ContainerConfig("c", ROOTFS, Cmd(("true",)), limits=limits)
    assert ContainerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown field"):
        Limits.from_dict({"memory": 1})


def test_the_guest_spec_carries_the_limits_over_the_ocis() -> None:
    oci = {"linux": {"resources": {"memory": {"reservation": 1 << 20}, "cpu": {"shares": 512}}}}
    limits = Limits(memory_bytes=64 << 20, pids=32, cpus=0.5)
    config = ContainerConfig("c", ROOTFS, Cmd(("true",)), oci=oci, limits=limits)
    resources = spec.container_spec(config, "h")["linux"]["resources"]
    assert resources == {
        "memory": {"reservation": 1 << 20, "limit": 64 << 20, "swap": 64 << 20},
        "cpu": {"shares": 512, "quota": 50_000, "period": 100_000},
        "pids": {"limit": 32},
    }
    assert oci["linux"]["resources"]["memory"] == {"reservation": 1 << 20}  # not changed


def test_no_limits_no_resources() -> None:
    config = ContainerConfig("c", ROOTFS, Cmd(("true",)))
    assert "resources" not in spec.container_spec(config, "h")["linux"]
