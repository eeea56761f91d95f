#!/bin/sh
# /init of the virtcontainers initrd (busybox sh, PID 1).
#
# Loads the modules shipped in /lib/modules (already in dependency order),
# mounts the read-only squashfs root from /dev/vda, prepares the writable and
# virtual filesystems, and switch_roots into the agent (Python as PID 1).
# Any failure is reported on the console and powers the VM off, so the host
# never waits on a VM that cannot boot.  Silent otherwise: boot time matters.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
NEWROOT=/newroot
AGENT="/usr/bin/python3.11 -S /opt/vc/agent/start.py"

fail() {
    echo "vc-init: $*" >/dev/console
    echo "vc-init: powering off" >/dev/console
    poweroff -f
    # poweroff needs ACPI; sysrq works without it, and a PID 1 exit panics (panic=-1).
    echo o >/proc/sysrq-trigger
    exit 1
}

mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "cannot mount /dev"

# Is there a virtio device with this id (0x0001 network, 0x0005 balloon,
# 0x0009 9p, 0x001a virtio-fs)?  The virtio devices exist once virtio_pci is
# loaded, before the modules of their drivers are: their ids are read then,
# once, with shell builtins only (a grep per question cost ≈24 ms under TCG).
VIRTIO_IDS=""
has_virtio() {
    if [ -z "$VIRTIO_IDS" ]; then
        VIRTIO_IDS=" "
        for dev in /sys/bus/virtio/devices/*/device; do
            [ -e "$dev" ] && read -r id <"$dev" && VIRTIO_IDS="$VIRTIO_IDS$id "
        done
    fi
    case "$VIRTIO_IDS" in *" $1 "*) return 0 ;; esac
    return 1
}

# Can a NIC or a disk arrive later?  The host gives a VM PCIe hot-plug slots
# only when it may hot-plug NICs or block volumes into it, and the modules are
# gone after switch_root: load virtio_net and ext4 now for such a VM.
has_hotplug_slots() {
    for slot in /sys/bus/pci/slots/*; do
        [ -e "$slot" ] && return 0
    done
    return 1
}

# The modules of a device are loaded only when the VM has one: every module
# costs boot time, so a pod without a NIC or a share does not pay for them.
for ko in /lib/modules/*.ko; do
    [ -e "$ko" ] || break
    case "${ko##*/}" in
        [0-9]*-9pnet.ko | [0-9]*-9pnet_virtio.ko | [0-9]*-netfs.ko | [0-9]*-fscache.ko | [0-9]*-9p.ko)
            has_virtio 0x0009 || continue ;;
        [0-9]*-fuse.ko | [0-9]*-virtiofs.ko)
            has_virtio 0x001a || continue ;;
        [0-9]*-failover.ko | [0-9]*-net_failover.ko | [0-9]*-virtio_net.ko)
            has_virtio 0x0001 || has_hotplug_slots || continue ;;
        [0-9]*-crc16.ko | [0-9]*-mbcache.ko | [0-9]*-jbd2.ko | [0-9]*-crc32c_generic.ko | [0-9]*-ext4.ko)
            has_hotplug_slots || continue ;;
        [0-9]*-virtio_balloon.ko)
            has_virtio 0x0005 || continue ;;
    esac
    insmod "$ko" || fail "cannot load kernel module $ko"
done

# vc.template: this VM becomes a template (factory.py) that is saved once its
# agent is up.  QEMU cannot save a VM whose guest has mounted a 9p share (a
# migration blocker), so the share is left to each clone's agent (init_clone).
TEMPLATE=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vc.hostname=*) hostname "${arg#vc.hostname=}" || fail "cannot set the hostname" ;;
        vc.template) TEMPLATE=1 ;;
    esac
done

# virtio-blk probes asynchronously on some kernels: wait up to 5 s for the disk.
tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    [ "$tries" -le 500 ] || fail "no root disk /dev/vda (is the squashfs attached as the first virtio-blk disk?)"
    usleep 10000
done
mount -t squashfs -o ro /dev/vda "$NEWROOT" || fail "cannot mount the squashfs root from /dev/vda"

mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$NEWROOT/run" || fail "cannot mount /run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$NEWROOT/tmp" || fail "cannot mount /tmp"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$NEWROOT/var" || fail "cannot mount /var"
mkdir -p -m 1777 "$NEWROOT/var/tmp"
mkdir -p "$NEWROOT/run/vc/shared" || fail "cannot create /run/vc/shared"

# The host shares a directory under the tag "vcshared" (when it has one): over
# virtio-fs when the VM has a virtio-fs device (its tag is not in sysfs on 6.1,
# so try the mount), else over virtio-9p.
if [ -n "$TEMPLATE" ]; then
    : # a clone's agent mounts it
elif has_virtio 0x001a && mount -t virtiofs vcshared "$NEWROOT/run/vc/shared" 2>/dev/null; then
    : # mounted over virtio-fs
else
    for tag in /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag; do
        [ -e "$tag" ] || break
        if [ "$(tr -d '\000\n' <"$tag")" = vcshared ]; then
            mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none \
                vcshared "$NEWROOT/run/vc/shared" || fail "cannot mount the vcshared 9p share"
        fi
    done
fi

mount --move /proc "$NEWROOT/proc" || fail "cannot move /proc"
mount --move /sys "$NEWROOT/sys" || fail "cannot move /sys"
mount --move /dev "$NEWROOT/dev" || fail "cannot move /dev"

mkdir -p "$NEWROOT/dev/pts" "$NEWROOT/dev/shm"
mount -t devpts -o nosuid,noexec,mode=0620,gid=5,ptmxmode=0666 devpts "$NEWROOT/dev/pts" \
    || fail "cannot mount /dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$NEWROOT/dev/shm" || fail "cannot mount /dev/shm"

# Pure cgroup v2 for crun, with every available controller delegated to children.
CG="$NEWROOT/sys/fs/cgroup"
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 "$CG" || fail "cannot mount cgroup2"
for controller in $(cat "$CG/cgroup.controllers"); do
    echo "+$controller" >"$CG/cgroup.subtree_control" 2>/dev/null
done

# shellcheck disable=SC2086 # AGENT is split into argv on purpose
exec switch_root "$NEWROOT" $AGENT
fail "cannot switch_root into the agent ($AGENT)"
