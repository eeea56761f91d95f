"""Pick the kernel modules the guest gets: those init.sh loads, and those loaded on demand.

busybox insmod does not resolve dependencies, so the initrd carries the
modules already sorted: every module after all the modules it depends on.
The modules loaded on demand sit in the root image with their modules.dep
and modules.alias, where the kernel's modprobe helper finds them.
"""

from __future__ import annotations

import fnmatch
import gzip
import lzma
import re
import shutil
import subprocess
from pathlib import Path

from virtcontainers.errors import ImageError

# What the guest needs, in the order it needs it: the root disk first (boot
# critical path), then the agent port, the shared directory, and the rest.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "squashfs",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "fuse",
    "virtiofs",
    "virtio_net",
    "crc32c_generic",
    "ext4",
    "virtio_balloon",
)
"""What the guest uses today: PCI transport, root disk, agent port, shared fs,
pod networking (virtio_net, which pulls in net_failover and failover), ext4
for block volumes (with jbd2, mbcache and crc16; ext4 asks the crypto API for
crc32c by name, which modules.dep does not list), and free page reporting
(virtio_balloon: the guest returns the pages it freed).

Each module costs boot time under TCG (the seven of networking, vsock and
overlay took ≈0.15 s of guest time), so a feature adds its modules when it
lands (vsock with the vsock agent channel), and init.sh loads those of a
device only when the VM has one: the shared-filesystem modules for 9p or
virtio-fs, the networking ones for a virtio-net NIC or for PCIe hot-plug
slots (a NIC may be hot-plugged later, when the initrd is gone), and ext4's
for hot-plug slots (a block volume arrives later too)."""

ON_DEMAND_MODULES: tuple[str, ...] = (
    "bridge",
    "br_netfilter",
    "veth",
    "overlay",
    "nfnetlink",
    "nfnetlink_log",
    "nfnetlink_queue",
    "nf_tables",
    "nft_*",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "nf_log_syslog",
    "x_tables",
    "xt_*",
    "ip_tables",
    "iptable_*",
    "ipt_*",
    "ip6_tables",
    "ip6table_*",
    "ip6t_*",
    "crc32c_generic",
)
"""What privileged workloads load (names or fnmatch patterns), as a Linux host
has it: bridges and veth pairs (CNI plugins, a container engine in the
container), overlayfs, and the netfilter families that nftables and iptables
(legacy and nft) ask for: nf_tables with every nft_* expression, conntrack,
NAT, x_tables with every xt_* match and target, the iptable_*/ip6table_*
tables, and the loggers and queues LOG, NFLOG and NFQUEUE hand packets to.
Their dependencies come with them. crc32c_generic: libcrc32c (nf_tables,
nf_conntrack) asks the crypto API for crc32c by name, which modules.dep does
not list.

None of them is loaded at boot: they cost only image bytes, which a squashfs
reads lazily; the kernel loads one through /sbin/modprobe when something asks
for its family (request_module)."""

_KO_SUFFIX = re.compile(r"\.ko(\.(xz|zst|gz))?$")


def module_name(path: str) -> str:
    """Canonical module name of a modules.dep path ("kernel/fs/9p/9p.ko.xz" -> "9p")."""
    base = path.rsplit("/", 1)[-1]
    return _KO_SUFFIX.sub("", base).replace("-", "_")


def plain_module_path(path: str) -> str:
    """Where a modules.dep path lands once unpacked ("kernel/fs/9p.ko.xz" -> "kernel/fs/9p.ko")."""
    return _KO_SUFFIX.sub(".ko", path)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """Parse modules.dep: module path -> paths of the modules it depends on."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        deps[module.strip()] = rest.split()
    return deps


def parse_modules_builtin(text: str) -> set[str]:
    """Parse modules.builtin into the set of module names compiled into the kernel."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def expand_patterns(
    patterns: tuple[str, ...] | list[str], deps: dict[str, list[str]], builtin: set[str]
) -> list[str]:
    """The names of the modules in modules.dep that match `patterns`, sorted.

    A pattern is a module name or an fnmatch pattern over module names.
    Built-in modules match no module (they need no loading). Raises:
        ImageError: a pattern matches neither a module nor a built-in.
    """
    names = sorted({module_name(path) for path in deps})
    matched: set[str] = set()
    for pattern in patterns:
        canonical = pattern.replace("-", "_")
        found = fnmatch.filter(names, canonical)
        if not found and not fnmatch.filter(builtin, canonical):
            raise ImageError(f"kernel module {pattern} is neither built in nor in modules.dep")
        matched.update(found)
    return sorted(matched)


def order_modules(
    wanted: tuple[str, ...] | list[str], deps: dict[str, list[str]], builtin: set[str]
) -> list[str]:
    """Return the modules.dep paths to load for `wanted`, dependencies first.

    Built-in modules are skipped. Raises:
        ImageError: a wanted module is neither built in nor in modules.dep.
    """
    by_name = {module_name(path): path for path in deps}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in chain:
            raise ImageError(f"kernel module dependency cycle: {' -> '.join((*chain, path))}")
        for dep in deps.get(path, []):
            visit(dep, (*chain, path))
        seen.add(path)
        ordered.append(path)

    for name in wanted:
        canonical = name.replace("-", "_")
        if canonical in builtin:
            continue
        if canonical not in by_name:
            raise ImageError(f"kernel module {name} is neither built in nor in modules.dep")
        visit(by_name[canonical], ())
    return ordered


def read_module(path: Path) -> bytes:
    """Return the uncompressed bytes of a .ko, .ko.xz, .ko.gz or .ko.zst file.

    busybox insmod only takes plain ELF objects, so compressed modules are
    unpacked at build time. Raises ImageError when zstd is needed but missing.
    """
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        exe = shutil.which("zstd")
        if exe is None:
            raise ImageError("zstd not found (needed for .ko.zst modules): apt-get install zstd")
        done = subprocess.run([exe, "-dc"], input=data, capture_output=True, check=True)
        return done.stdout
    return data
