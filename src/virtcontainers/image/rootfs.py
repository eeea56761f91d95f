"""The guest's read-only root: Python, the agent, crun, busybox and the kernel
modules loaded on demand, in a squashfs.

Only what the agent uses goes in: the stdlib modules `modulefinder` finds from
the agent's start stub, through the whole agent package (run under the guest's
own interpreter, /usr/bin/python3.11, not whatever python is on PATH),
precompiled, and the shared-library closure of the binaries found with ldd.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from virtcontainers.errors import ImageError
from virtcontainers.image.busybox import install_busybox, write_etc
from virtcontainers.image.tools import find_tool, run

GUEST_PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
CRUN = Path("/usr/bin/crun")
AGENT_DIR = "opt/vc/agent"
_CACHE_TAG = "cpython-311"  # the guest's Python 3.11
AGENT_ZIP = "/opt/vc/agent/agent.zip"
"""Where the guest imports the agent from: its bytecode in one uncompressed zip."""
Progress = Callable[[str], None]

# Needed by the interpreter itself before the agent's first import; the
# landmark os.py lets it find its prefix (/usr).
_STARTUP_MODULES = (
    "encodings",
    "encodings.utf_8",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.aliases",
    "os",
)

_MOUNT_POINTS = (
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var",
    "sys/fs/cgroup",
    "mnt",
    "root",
)

# modulefinder follows every import statement, also those in functions the
# agent never calls, so its closure drags in test suites and developer tools.
# These are left out unless the agent or its protocol module imports them itself.
_NEVER_AT_RUNTIME = (
    "test",
    "unittest",
    "doctest",
    "pdb",
    "bdb",
    "pydoc",
    "pydoc_data",
    "lib2to3",
    "distutils",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "ensurepip",
    "webbrowser",
    "_testcapi",
    "_testinternalcapi",
    "xmlrpc",
)

# Runs under /usr/bin/python3.11: prints the files of every module the agent
# imports, following the start stub into the package and its relative imports.
_FINDER = """
import ast, json, modulefinder, os, sys
script, extra_dir, excludes, *startup = sys.argv[1:]
sources = [
    os.path.join(folder, name)
    for folder, _, names in os.walk(extra_dir)
    for name in names
    if name.endswith(".py")
]
direct = set()
for source in sources:
    for node in ast.walk(ast.parse(open(source, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            direct.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            direct.add(node.module.split(".")[0])
skip = [name for name in excludes.split(",") if name not in direct]
finder = modulefinder.ModuleFinder(path=[extra_dir, *sys.path], excludes=skip)
finder.run_script(script)
for name in startup:
    finder.import_hook(name)
print(json.dumps(sorted(m.__file__ for m in finder.modules.values() if m.__file__)))
"""


@dataclass(frozen=True)
class AgentSources:
    package: Path  # the agent package directory; becomes /opt/vc/agent/agent/
    protocol: Path  # becomes /opt/vc/agent/vc_protocol.py

    def package_files(self) -> list[Path]:
        """The package's Python sources, in a stable order (never its bytecode caches)."""
        return sorted(self.package.rglob("*.py"))


def require_guest_python() -> Path:
    if not os.access(GUEST_PYTHON, os.X_OK):
        raise ImageError(f"{GUEST_PYTHON} not found: apt-get install python3.11-minimal")
    return GUEST_PYTHON


def require_crun() -> Path:
    if not os.access(CRUN, os.X_OK):
        raise ImageError(f"{CRUN} not found: apt-get install crun")
    return CRUN


def stage_root(root: Path, busybox: Path, agent: AgentSources, progress: Progress) -> None:
    """Lay out the guest root filesystem in the empty directory `root`."""
    python = require_guest_python()
    crun = require_crun()
    _make_skeleton(root)
    progress("copying the agent")
    copy_agent(root, agent)
    progress("collecting the stdlib modules the agent imports")
    dynload = copy_stdlib(root, python, root / AGENT_DIR)
    for binary in (python, crun):
        _copy_file(binary, root / binary.relative_to("/"))
    install_busybox(busybox, root / "usr/bin")
    progress("collecting shared libraries")
    for lib in shared_libraries([python, crun, *dynload]):
        _copy_file(lib, root / guest_path(lib).relative_to("/"))
    _write_ld_cache(root)
    progress("precompiling Python bytecode")
    _compile(root, python)
    pack_agent(root / AGENT_DIR)


def install_kernel_modules(root: Path, tree: Path) -> None:
    """Put the modules loaded on demand (a lib/modules directory) in the guest root,
    and busybox's modprobe where the kernel runs it: its usermode helper is
    /sbin/modprobe (/proc/sys/kernel/modprobe), and the applets are in /usr/bin."""
    shutil.copytree(tree, root / "usr/lib/modules", symlinks=True)
    (root / "usr/sbin/modprobe").symlink_to("../bin/busybox")


def _make_skeleton(root: Path) -> None:
    for sub in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "opt/vc/agent"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # Merged /usr, like Debian: ldd and scripts name /lib64/ld-linux... and /bin/sh.
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    for sub in _MOUNT_POINTS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    write_etc(root / "etc", "vc")
    # /etc is read-only: the agent writes the VM's own id (a clone's too) under /run.
    (root / "etc/machine-id").symlink_to("../run/machine-id")


# Python never caches the bytecode of the script it runs, and compiling the
# agent's source at every boot costs ~0.5 s under TCG: the script is this stub,
# and the agent itself is an imported package, precompiled with the rest.
AGENT_STUB = f"""import sys
sys.path.insert(0, "{AGENT_ZIP}")
import agent
sys.exit(agent.main())
"""


def copy_agent(root: Path, agent: AgentSources) -> None:
    """Copy the agent package, the protocol module and the start stub to /opt/vc/agent.

    Raises:
        ImageError: a source is missing (an incomplete installation).
    """
    for source in (agent.package / "__init__.py", agent.protocol):
        if not source.is_file():
            raise ImageError(f"agent source {source} not found: the package is incomplete")
    for source in agent.package_files():
        dest = root / AGENT_DIR / "agent" / source.relative_to(agent.package)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    shutil.copyfile(agent.protocol, root / AGENT_DIR / "vc_protocol.py")
    (root / AGENT_DIR / "start.py").write_text(AGENT_STUB)


def pack_agent(agent_dir: Path) -> None:
    """Replace the compiled agent package and protocol module by one stored zip.

    Cold, under TCG, reading fifteen small files cost ≈0.1 s more than one
    module did; one uncompressed zip of the same bytecode cost ≈0.03 s
    (docs/measurements.md).  Stored, not deflated: no zlib at import.
    """
    package = agent_dir / "agent"
    with zipfile.ZipFile(agent_dir / "agent.zip", "w", zipfile.ZIP_STORED) as archive:
        for source in sorted(package.rglob("*.py")):
            module = source.relative_to(package).with_suffix(".pyc")
            archive.write(_bytecode_of(source), f"agent/{module}")
        archive.write(_bytecode_of(agent_dir / "vc_protocol.py"), "vc_protocol.pyc")
    shutil.rmtree(package)
    shutil.rmtree(agent_dir / "__pycache__")
    (agent_dir / "vc_protocol.py").unlink()


def _bytecode_of(source: Path) -> Path:
    compiled = source.parent / "__pycache__" / f"{source.stem}.{_CACHE_TAG}.pyc"
    if not compiled.is_file():
        raise ImageError(f"{source} was not precompiled ({compiled} missing)")
    return compiled


def copy_stdlib(root: Path, python: Path, agent_dir: Path) -> list[Path]:
    """Copy the stdlib files the agent in `agent_dir` needs; return its extension modules.

    Raises:
        ImageError: modulefinder failed under the guest's interpreter.
    """
    out = run(
        [
            str(python),
            "-S",
            "-I",
            "-c",
            _FINDER,
            str(agent_dir / "start.py"),
            str(agent_dir),
            ",".join(_NEVER_AT_RUNTIME),
            *_STARTUP_MODULES,
        ],
        "finding the agent's imports",
    )
    files = [Path(name) for name in json.loads(out)]
    stdlib = [path for path in files if path.is_relative_to(STDLIB)]
    for path in stdlib:
        _copy_file(path, root / path.relative_to("/"))
    return [path for path in stdlib if path.suffix == ".so"]


def guest_path(host_path: Path) -> Path:
    """Where a host library lands in the merged-/usr guest (/lib/x -> /usr/lib/x)."""
    parts = host_path.parts
    if len(parts) > 1 and parts[1] in ("lib", "lib64", "bin", "sbin"):
        return Path("/usr", *parts[1:])
    return host_path


_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(text: str, binary: Path) -> list[Path]:
    """The library paths in ldd output, the dynamic loader included.

    Raises:
        ImageError: ldd reports a library as "not found".
    """
    libraries: list[Path] = []
    for line in text.splitlines():
        if "not found" in line:
            raise ImageError(f"{binary} needs a missing library: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match:
            libraries.append(Path(match.group(1)))
    return libraries


def shared_libraries(binaries: Iterable[Path]) -> list[Path]:
    """The union of the ldd closures of `binaries`, in first-seen order."""
    seen: dict[Path, None] = {}
    for binary in binaries:
        for lib in parse_ldd(
            run(["ldd", str(binary)], f"listing the libraries of {binary}"), binary
        ):
            seen.setdefault(lib, None)
    return list(seen)


def _copy_file(source: Path, dest: Path) -> None:
    """Copy the file `source` resolves to (symlinks followed) to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), dest)


def _write_ld_cache(root: Path) -> None:
    # An ld.so.cache saves the loader a directory search per library under TCG.
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n/usr/lib\n")
    if find_tool("ldconfig") is not None:
        run(["ldconfig", "-r", str(root)], "writing the guest's ld.so.cache")


def _compile(root: Path, python: Path) -> None:
    # unchecked-hash: the root is read-only, so skip the source stat on every import.
    run(
        [
            str(python),
            "-S",
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            "/",
            str(root / "usr/lib/python3.11"),
            str(root / AGENT_DIR),
        ],
        "precompiling the guest's Python modules",
    )


def smoke_test(root: Path) -> None:
    """Start the staged interpreter in a chroot (root only) to catch a missing piece early."""
    if os.geteuid() != 0:
        return
    run(
        ["chroot", str(root), "/usr/bin/python3.11", "-S", "-c", "import os"],
        "the guest Python does not start in the staged root",
    )


def make_squashfs(root: Path, dest: Path) -> None:
    """Pack `root` into a read-only squashfs image at `dest`."""
    # lz4: the cheapest decompression under TCG (Debian's kernel has SQUASHFS_LZ4).
    run(
        [
            "mksquashfs",
            str(root),
            str(dest),
            "-noappend",
            "-all-root",
            "-comp",
            "lz4",
            "-no-progress",
            "-quiet",
        ],
        "packing the guest root with mksquashfs",
    )
