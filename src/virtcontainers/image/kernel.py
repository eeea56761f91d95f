"""The guest kernel: Debian's linux-image package, unpacked once per version.

The unpacked package is 400 MB; only the ELF vmlinux, the few modules the
initrd loads and the tree of the modules loaded on demand are kept, under
cache_dir/kernels/<package>_<version>-<key>/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import ImageError
from virtcontainers.image.modules import (
    GUEST_MODULES,
    ON_DEMAND_MODULES,
    expand_patterns,
    order_modules,
    parse_modules_builtin,
    parse_modules_dep,
    plain_module_path,
    read_module,
)
from virtcontainers.image.tools import run
from virtcontainers.image.vmlinux import extract_vmlinux, has_pvh_note

META_PACKAGE = "linux-image-amd64"
ON_DEMAND_DIR = "lib/modules"
APT_LISTS = Path("/var/lib/apt/lists")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelPackage:
    name: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian version of that package, e.g. 6.1.192-2

    @property
    def key(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class PreparedKernel:
    vmlinux: Path
    modules: tuple[Path, ...]  # plain .ko files, in load order
    on_demand: Path  # a lib/modules directory: <release>/ with modules.dep and modules.alias


def resolve_kernel_package(meta: str = META_PACKAGE) -> KernelPackage:
    """Return the kernel package that `meta` depends on, with its candidate version.

    Raises:
        ImageError: apt-cache is missing or does not know the package.
    """
    show = run(["apt-cache", "show", "--no-all-versions", meta], f"resolving {meta}")
    match = re.search(
        r"^Depends:.*?(linux-image-[^\s,(]+)(?:\s*\(=\s*([^)\s]+)\))?", show, re.MULTILINE
    )
    if match is None:
        raise ImageError(f"{meta} depends on no linux-image package: run apt-get update")
    name, version = match.group(1), match.group(2)
    if version is None:  # not pinned by the meta package: ask for the candidate
        policy = run(["apt-cache", "policy", name], f"resolving the version of {name}")
        found = re.search(r"Candidate:\s*(\S+)", policy)
        if found is None or found.group(1) == "(none)":
            raise ImageError(f"no installable version of {name}: run apt-get update")
        version = found.group(1)
    return KernelPackage(name, version)


def resolve_kernel_package_cached(memo: Path, meta: str = META_PACKAGE) -> KernelPackage:
    """resolve_kernel_package(), remembered in `memo` until the apt lists change.

    apt-cache takes over a second here (no pkgcache.bin), which would make a
    no-op build slow; `apt-get update` changes the lists and so the answer.
    """
    key = f"{meta}:{_apt_lists_stamp()}"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("key") == key:
            return KernelPackage(str(saved["name"]), str(saved["version"]))
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    package = resolve_kernel_package(meta)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "name": package.name, "version": package.version}))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache only costs the next caller another apt-cache run
    return package


def _apt_lists_stamp() -> str:
    stamps = []
    for path in (APT_LISTS, APT_LISTS / "partial"):
        try:
            stamps.append(str(path.stat().st_mtime_ns))
        except OSError:
            stamps.append("-")
    return ",".join(stamps)


def fetch_deb(package: KernelPackage, debs_dir: Path, progress: Progress) -> Path:
    """Download the package's .deb into debs_dir unless it is already there."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    existing = _find_deb(package, debs_dir)
    if existing is not None:
        return existing
    progress(f"downloading {package.name} {package.version}")
    run(["apt-get", "download", package.key], f"downloading {package.key}", cwd=debs_dir)
    found = _find_deb(package, debs_dir)
    if found is None:
        raise ImageError(f"apt-get download {package.key} left no .deb in {debs_dir}")
    return found


def _find_deb(package: KernelPackage, debs_dir: Path) -> Path | None:
    # apt-get names files <name>_<version with ':' as %3a>_<arch>.deb
    version = package.version.replace(":", "%3a")
    matches = sorted(debs_dir.glob(f"{package.name}_{version}_*.deb"))
    return matches[0] if matches else None


def _kernel_fingerprint() -> str:
    # Only the code that shapes the unpacked kernel: other builder changes
    # must not re-unpack 400 MB.
    digest = hashlib.sha256(repr((GUEST_MODULES, ON_DEMAND_MODULES)).encode())
    here = Path(__file__).parent
    for name in ("kernel.py", "modules.py", "vmlinux.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


def prepare_kernel(package: KernelPackage, cache_dir: Path, progress: Progress) -> PreparedKernel:
    """Return the vmlinux and ordered modules of `package`, unpacking it on first use.

    The caller holds the cache lock. Raises ImageError on any failure.
    """
    key = _kernel_fingerprint()
    final = cache_dir / "kernels" / f"{package.name}_{package.version}-{key}"
    if not (final / "vmlinux").exists():
        deb = fetch_deb(package, cache_dir / "debs", progress)
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".unpack-") as tmp:
            staged = Path(tmp) / "out"
            _unpack_kernel(deb, Path(tmp) / "tree", staged, progress)
            os.rename(staged, final)
    modules = tuple(sorted((final / "modules").glob("*.ko")))
    return PreparedKernel(final / "vmlinux", modules, final / ON_DEMAND_DIR)


def _unpack_kernel(deb: Path, tree: Path, out: Path, progress: Progress) -> None:
    progress(f"unpacking {deb.name}")
    run(["dpkg-deb", "-x", str(deb), str(tree)], f"unpacking {deb.name}")
    out.mkdir()
    vmlinuz = _single(tree.glob("boot/vmlinuz-*"), f"{deb.name} has no boot/vmlinuz-*")
    progress("extracting the ELF vmlinux")
    write_vmlinux(vmlinuz, out / "vmlinux", progress)
    moddir = _single(tree.glob("lib/modules/*"), f"{deb.name} has no lib/modules/<version>")
    progress(f"running depmod for {moddir.name}")
    run(["depmod", "-b", str(tree), moddir.name], "generating modules.dep")
    deps = parse_modules_dep((moddir / "modules.dep").read_text())
    builtin = parse_modules_builtin((moddir / "modules.builtin").read_text())
    ordered = order_modules(GUEST_MODULES, deps, builtin)
    (out / "modules").mkdir()
    for index, rel in enumerate(ordered):
        name = Path(rel).name.split(".ko")[0]
        # The index prefix keeps the load order when init.sh globs *.ko.
        (out / "modules" / f"{index:02d}-{name}.ko").write_bytes(read_module(moddir / rel))
    progress("indexing the modules loaded on demand")
    on_demand = order_modules(expand_patterns(ON_DEMAND_MODULES, deps, builtin), deps, builtin)
    _write_module_tree(moddir, on_demand, out)
    shutil.rmtree(tree)


def _write_module_tree(moddir: Path, paths: list[str], root: Path) -> None:
    """Write `paths` of `moddir`, unpacked, to root/lib/modules/<release>/, and index them.

    busybox modprobe reads the text modules.dep and modules.alias that depmod
    writes there; the .bin indexes beside them are what kmod's modprobe reads.
    """
    release = moddir.name
    dest = root / ON_DEMAND_DIR / release
    for rel in paths:
        target = dest / plain_module_path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_module(moddir / rel))
    shutil.copyfile(moddir / "modules.builtin", dest / "modules.builtin")
    run(["depmod", "-b", str(root), release], "indexing the modules loaded on demand")


def write_vmlinux(source: Path, dest: Path, progress: Progress) -> None:
    """Write the ELF kernel found in `source` (ELF vmlinux or bzImage) to `dest`."""
    try:
        elf = extract_vmlinux(source.read_bytes())
    except OSError as exc:
        raise ImageError(f"cannot read kernel {source}: {exc}") from exc
    if not has_pvh_note(elf):
        # QEMU falls back to other boot paths, but microvm needs PVH for ELF kernels.
        progress(f"warning: {source} has no PVH entry note (CONFIG_PVH); it may not boot")
    dest.write_bytes(elf)


def _single(paths: Iterable[Path], message: str) -> Path:
    found = sorted(paths)
    if not found:
        raise ImageError(message)
    return found[0]
