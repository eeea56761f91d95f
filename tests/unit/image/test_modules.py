"""Module selection and load order from synthetic modules.dep / modules.builtin."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from virtcontainers.errors import ImageError
from virtcontainers.image.modules import (
    ON_DEMAND_MODULES,
    expand_patterns,
    module_name,
    order_modules,
    parse_modules_builtin,
    parse_modules_dep,
    plain_module_path,
    read_module,
)

DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko kernel/fs/fscache/fscache.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
"""
BUILTIN = "kernel/fs/squashfs/squashfs.ko\nkernel/fs/overlayfs/overlay.ko\n"


def _index(order: list[str], name: str) -> int:
    return [module_name(path) for path in order].index(name)


def test_module_name_strips_path_and_suffix() -> None:
    assert module_name("kernel/fs/9p/9p.ko.xz") == "9p"
    assert module_name("kernel/net/x/vsock-loopback.ko") == "vsock_loopback"


def test_dependencies_come_first() -> None:
    deps = parse_modules_dep(DEP)
    order = order_modules(["virtio_pci", "virtio_blk", "9p"], deps, set())
    assert _index(order, "virtio_ring") < _index(order, "virtio_pci")
    assert _index(order, "virtio") < _index(order, "virtio_blk")
    assert _index(order, "netfs") < _index(order, "fscache") < _index(order, "9p")
    assert len(order) == len(set(order))  # each module once


def test_builtin_modules_are_skipped() -> None:
    order = order_modules(
        ["squashfs", "overlay", "virtio_blk"],
        parse_modules_dep(DEP),
        parse_modules_builtin(BUILTIN),
    )
    names = [module_name(path) for path in order]
    assert names == ["virtio", "virtio_ring", "virtio_blk"]


def test_unknown_module_is_an_error() -> None:
    with pytest.raises(ImageError, match="nosuch"):
        order_modules(["nosuch"], parse_modules_dep(DEP), set())


def test_cycle_is_an_error() -> None:
    deps = {"a.ko": ["b.ko"], "b.ko": ["a.ko"]}
    with pytest.raises(ImageError, match="cycle"):
        order_modules(["a"], deps, set())


def test_read_module_decompresses_xz(tmp_path: Path) -> None:
    plain = b"\x7fELF module"
    (tmp_path / "m.ko.xz").write_bytes(lzma.compress(plain))
    (tmp_path / "p.ko").write_bytes(plain)
    assert read_module(tmp_path / "m.ko.xz") == plain
    assert read_module(tmp_path / "p.ko") == plain


NETFILTER_DEP = """\
kernel/net/llc/llc.ko:
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko kernel/net/802/stp.ko \
kernel/net/llc/llc.ko
kernel/drivers/net/veth.ko:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/net/netfilter/nfnetlink.ko:
kernel/net/netfilter/nfnetlink_log.ko: kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nfnetlink_queue.ko: kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko \
kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nft_masq.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nf_nat.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack_netlink.ko: kernel/net/netfilter/nf_conntrack.ko \
kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nf_nat.ko: kernel/net/netfilter/nf_conntrack.ko
kernel/net/netfilter/nf_log_syslog.ko:
kernel/net/netfilter/x_tables.ko:
kernel/net/netfilter/xt_comment.ko: kernel/net/netfilter/x_tables.ko
kernel/net/netfilter/xt_ipvs.ko: kernel/net/netfilter/ipvs/ip_vs.ko \
kernel/net/netfilter/x_tables.ko
kernel/net/netfilter/ipvs/ip_vs.ko:
kernel/net/ipv4/netfilter/ip_tables.ko: kernel/net/netfilter/x_tables.ko
kernel/net/ipv4/netfilter/iptable_nat.ko: kernel/net/ipv4/netfilter/ip_tables.ko \
kernel/net/netfilter/nf_nat.ko
kernel/net/ipv4/netfilter/ipt_REJECT.ko: kernel/net/netfilter/x_tables.ko
kernel/net/ipv6/netfilter/ip6_tables.ko: kernel/net/netfilter/x_tables.ko
kernel/net/ipv6/netfilter/ip6table_filter.ko: kernel/net/ipv6/netfilter/ip6_tables.ko
kernel/net/ipv6/netfilter/ip6t_REJECT.ko: kernel/net/netfilter/x_tables.ko
kernel/net/sched/act_ipt.ko: kernel/net/netfilter/x_tables.ko
kernel/drivers/net/wireguard/wireguard.ko:
"""


def test_patterns_take_whole_families() -> None:
    names = expand_patterns(["nft_*", "xt_*", "veth"], parse_modules_dep(NETFILTER_DEP), set())
    assert names == ["nft_ct", "nft_masq", "veth", "xt_comment", "xt_ipvs"]


def test_the_on_demand_families_bring_their_dependencies_and_nothing_else() -> None:
    deps = parse_modules_dep(NETFILTER_DEP)
    order = order_modules(expand_patterns(ON_DEMAND_MODULES, deps, set()), deps, set())
    names = [module_name(path) for path in order]
    assert {"bridge", "br_netfilter", "veth", "overlay", "nf_tables", "iptable_nat"} <= set(names)
    # Pulled in by dependencies, not named.
    assert {"stp", "llc", "libcrc32c", "ip_vs"} <= set(names)
    assert _index(order, "llc") < _index(order, "stp") < _index(order, "bridge")
    assert _index(order, "nf_conntrack") < _index(order, "nf_nat") < _index(order, "nft_masq")
    assert not {"act_ipt", "wireguard"} & set(names)
    assert len(names) == len(set(names))


def test_a_built_in_family_needs_no_module() -> None:
    deps = parse_modules_dep(NETFILTER_DEP)
    assert expand_patterns(["squashfs", "overlay"], deps, parse_modules_builtin(BUILTIN)) == [
        "overlay"
    ]


def test_a_family_the_kernel_lacks_is_an_error() -> None:
    with pytest.raises(ImageError, match="nft_\\*"):
        expand_patterns(["nft_*"], parse_modules_dep(DEP), set())


def test_plain_module_path_drops_the_compression_suffix() -> None:
    assert plain_module_path("kernel/fs/overlay.ko.xz") == "kernel/fs/overlay.ko"
    assert plain_module_path("kernel/net/bridge/bridge.ko") == "kernel/net/bridge/bridge.ko"
