"""The guest kernel loads the modules privileged workloads ask for, as a Linux host does.

Nothing is loaded at boot: a bridge, a veth pair, an overlay mount or an
nftables rule makes the kernel run /sbin/modprobe in the guest, which finds
the module in the image.  An unprivileged container is refused before the
kernel asks for anything, so no module is loaded for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import run_exec, shell
from virtcontainers import api
from virtcontainers.config import Cmd, ContainerConfig, PodConfig
from virtcontainers.image.rootfs import shared_libraries
from virtcontainers.oci.defaults import ALL_CAPABILITIES

pytestmark = [pytest.mark.vm, pytest.mark.usefixtures("guest_image")]

PRIVILEGED = {
    "capabilities": {
        "bounding": ALL_CAPABILITIES,
        "effective": ALL_CAPABILITIES,
        "permitted": ALL_CAPABILITIES,
    },
    "noNewPrivileges": False,
}

BRIDGE_VETH_OVERLAY = """
set -e
ip link add name br0 type bridge
brctl addbr br1
ip link add name vc0 type veth
ip link set vc0 master br0
ip link show vc0 | grep -q "master br0"
mkdir /tmp/ov
mount -t tmpfs tmpfs /tmp/ov
mkdir /tmp/ov/lower /tmp/ov/upper /tmp/ov/work /tmp/ov/merged
echo lower >/tmp/ov/lower/file
mount -t overlay overlay -o lowerdir=/tmp/ov/lower,upperdir=/tmp/ov/upper,workdir=/tmp/ov/work \
    /tmp/ov/merged
echo upper >>/tmp/ov/merged/file
cat /tmp/ov/upper/file
"""

NFT_RULES = """
set -e
nft add table ip vc
nft 'add chain ip vc post { type nat hook postrouting priority 100; }'
nft add rule ip vc post oifname br0 masquerade
nft 'add chain ip vc in { type filter hook input priority 0; }'
nft add rule ip vc in ct state established,related accept
nft add rule ip vc in tcp dport 9 counter drop
nft list table ip vc
"""

UNPRIVILEGED_ATTEMPTS = """
ip link add name br0 type bridge && echo made-bridge
ip link add name vc0 type veth && echo made-veth
mkdir -p /tmp/ov/lower /tmp/ov/upper /tmp/ov/work /tmp/ov/merged
mount -t overlay overlay -o lowerdir=/tmp/ov/lower,upperdir=/tmp/ov/upper,workdir=/tmp/ov/work \
    /tmp/ov/merged && echo mounted
insmod /bin/busybox && echo inserted
exit 0
"""


def sleeper(rootfs: Path, settings: dict[str, object] | None) -> ContainerConfig:
    cmd = Cmd(("sh", "-c", "exec sleep 1000"), runtime_settings=settings)
    return ContainerConfig("c", rootfs, cmd, writable_layer=True)


def in_container(pod: str, script: str) -> str:
    out, err, code = run_exec(pod, "c", shell(script))
    assert code == 0, err.decode()
    return out.decode()


def loaded_modules(pod: str) -> set[str]:
    return {line.split()[0] for line in in_container(pod, "cat /proc/modules").splitlines()}


@pytest.fixture
def nft_rootfs(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """The busybox rootfs with the host's nft and the libraries it links."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("the host has no nft to put in the container (apt-get install nftables)")
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    for host_file in (Path(nft), *shared_libraries([Path(nft)])):
        dest = rootfs / host_file.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_file.resolve(), dest)
        shutil.copymode(host_file.resolve(), dest)
    return rootfs


def test_a_privileged_container_makes_bridges_veths_and_overlays(
    no_leaks: Path, busybox_rootfs: Path
) -> None:
    api.run_pod(PodConfig(id="mods", containers=(sleeper(busybox_rootfs, PRIVILEGED),)))
    assert not {"bridge", "veth", "overlay"} & loaded_modules("mods")

    assert in_container("mods", BRIDGE_VETH_OVERLAY) == "lower\nupper\n"
    assert {"bridge", "stp", "llc", "veth", "overlay"} <= loaded_modules("mods")


def test_a_privileged_container_sets_nftables_rules(no_leaks: Path, nft_rootfs: Path) -> None:
    api.run_pod(PodConfig(id="nft", containers=(sleeper(nft_rootfs, PRIVILEGED),)))

    listing = in_container("nft", NFT_RULES)
    assert "masquerade" in listing and "tcp dport 9 counter" in listing
    wanted = {"nf_tables", "nfnetlink", "nft_chain_nat", "nft_masq", "nft_ct", "nf_conntrack"}
    assert wanted <= loaded_modules("nft")


def test_an_unprivileged_container_loads_nothing(no_leaks: Path, busybox_rootfs: Path) -> None:
    api.run_pod(PodConfig(id="plain", containers=(sleeper(busybox_rootfs, None),)))
    before = loaded_modules("plain")

    out, err, code = run_exec("plain", "c", shell(UNPRIVILEGED_ATTEMPTS))
    assert (out, code) == (b"", 0)
    refusals = err.decode().splitlines()
    assert len(refusals) == 4, refusals
    assert all("not permitted" in line or "permission denied" in line for line in refusals)
    assert loaded_modules("plain") == before

    # brctl's ioctl asks for the bridge module before it checks the caller's
    # CAP_NET_ADMIN, on any Linux: the module may load, the bridge is refused.
    out, err, code = run_exec("plain", "c", Cmd(("brctl", "addbr", "br1")))
    assert code != 0 and b"Operation not permitted" in err, err.decode()
    assert "br1" not in in_container("plain", "ip link")
