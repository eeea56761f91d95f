"""Cache keys, the cache lock, missing-tool errors and small parsers (no QEMU)."""

from __future__ import annotations

import os
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from virtcontainers.errors import ImageError
from virtcontainers.image import (
    AgentSources,
    ImageNotBuiltError,
    ImageSources,
    default_cache_dir,
    find_image_from,
)
from virtcontainers.image.builder import build_image_from, image_inputs
from virtcontainers.image.cache import cache_lock, inputs_digest, remove_stale_staging
from virtcontainers.image.rootfs import (
    AGENT_DIR,
    GUEST_PYTHON,
    copy_agent,
    copy_stdlib,
    guest_path,
    pack_agent,
    parse_ldd,
)
from virtcontainers.image.tools import require_tool


def _sources(tmp_path: Path) -> ImageSources:
    agent = tmp_path / "agent"
    protocol = tmp_path / "protocol.py"
    kernel = tmp_path / "vmlinux"
    agent.mkdir()
    (agent / "__init__.py").write_text("from .core import main\n")
    (agent / "core.py").write_text("def main() -> int:\n    return 0\n")
    protocol.write_text("MAGIC = b'VC'\n")
    kernel.write_bytes(b"\x7fELF fake kernel")
    # A user kernel keeps apt-cache (slow, networked metadata) out of the test.
    return ImageSources(AgentSources(agent, protocol), kernel=kernel)


def _digest(sources: ImageSources, cache: Path) -> str:
    return inputs_digest(image_inputs(sources, cache)[0])


def test_digest_is_stable(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    assert _digest(sources, tmp_path) == _digest(sources, tmp_path)


@pytest.mark.parametrize(
    "changed", ["agent/__init__.py", "agent/core.py", "protocol.py", "vmlinux"]
)
def test_digest_changes_with_each_input(tmp_path: Path, changed: str) -> None:
    sources = _sources(tmp_path)
    before = _digest(sources, tmp_path)
    with (tmp_path / changed).open("a") as handle:
        handle.write("# changed\n")
    assert _digest(sources, tmp_path) != before


def test_digest_changes_with_a_new_agent_module(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    before = _digest(sources, tmp_path)
    (tmp_path / "agent" / "extra.py").write_text("")
    assert _digest(sources, tmp_path) != before


def test_digest_ignores_bytecode_caches(tmp_path: Path) -> None:
    # Host tests import the agent from the source tree and leave __pycache__ there.
    sources = _sources(tmp_path)
    before = _digest(sources, tmp_path)
    cache = tmp_path / "agent" / "__pycache__"
    cache.mkdir()
    (cache / "core.cpython-311.pyc").write_bytes(b"bytecode")
    assert _digest(sources, tmp_path) == before


@pytest.mark.skipif(not os.access(GUEST_PYTHON, os.X_OK), reason="python3.11-minimal missing")
def test_the_agent_package_and_its_stdlib_closure_are_staged(tmp_path: Path) -> None:
    agent = ImageSources.default().agent
    agent_dir = tmp_path / AGENT_DIR
    agent_dir.mkdir(parents=True)
    copy_agent(tmp_path, agent)
    copy_stdlib(tmp_path, GUEST_PYTHON, agent_dir)
    staged = sorted(p.relative_to(agent_dir / "agent") for p in (agent_dir / "agent").rglob("*.py"))
    assert staged == [p.relative_to(agent.package) for p in agent.package_files()]
    assert (agent_dir / "vc_protocol.py").read_bytes() == agent.protocol.read_bytes()
    assert "import agent" in (agent_dir / "start.py").read_text()
    # Reached only through the package's relative imports (an empty package
    # brings none of them): the protocol module through wire, json, and the
    # lazy imports of terminal handling and of the subreaper set-up.
    stdlib = tmp_path / "usr/lib/python3.11"
    assert (stdlib / "json/decoder.py").is_file()
    assert any((stdlib / "lib-dynload").glob("termios.*.so"))
    assert (stdlib / "ctypes/__init__.py").is_file()


@pytest.mark.skipif(not os.access(GUEST_PYTHON, os.X_OK), reason="python3.11-minimal missing")
def test_the_agent_boots_from_one_zip_of_bytecode(tmp_path: Path) -> None:
    agent = ImageSources.default().agent
    agent_dir = tmp_path / AGENT_DIR
    agent_dir.mkdir(parents=True)
    copy_agent(tmp_path, agent)
    subprocess.run([str(GUEST_PYTHON), "-S", "-m", "compileall", "-q", str(agent_dir)], check=True)
    pack_agent(agent_dir)
    assert sorted(p.name for p in agent_dir.iterdir()) == ["agent.zip", "start.py"]
    with zipfile.ZipFile(agent_dir / "agent.zip") as archive:
        names = set(archive.namelist())
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    modules = {
        f"agent/{p.relative_to(agent.package).with_suffix('.pyc')}" for p in agent.package_files()
    }
    assert names == modules | {"vc_protocol.pyc"}
    zipped = str(agent_dir / "agent.zip")
    probe = f"import sys; sys.path.insert(0, {zipped!r}); import agent; print(agent.main.__name__)"
    done = subprocess.run(
        [str(GUEST_PYTHON), "-S", "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "main"


def test_digest_changes_with_a_user_initrd(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"cpio")
    with_initrd = ImageSources(sources.agent, sources.kernel, initrd)
    assert _digest(with_initrd, tmp_path) != _digest(sources, tmp_path)


def test_find_image_before_build_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageNotBuiltError, match="not built"):
        find_image_from(_sources(tmp_path), tmp_path / "cache")


def test_default_cache_dir_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("VC_CACHE_DIR")
    assert default_cache_dir() == Path("/var/cache/virtcontainers")


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageError, match=r"mksquashfs not found: apt-get install squashfs-tools"):
        require_tool("mksquashfs")


def test_build_without_tools_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ImageError, match=r"not found: apt-get install"):
        build_image_from(sources, tmp_path / "cache")
    # A failed build leaves no partial image behind.
    assert not any((tmp_path / "cache" / "images").glob("[!.]*"))
    assert not any((tmp_path / "cache" / "images").glob(".*"))


def test_cache_lock_serialises(tmp_path: Path) -> None:
    inside: list[int] = []
    overlaps: list[bool] = []

    def worker() -> None:
        with cache_lock(tmp_path):
            inside.append(1)
            overlaps.append(len(inside) > 1)
            threading.Event().wait(0.05)
            inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [False] * 4


def test_parse_ldd() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f74df7e8000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f74df8fd000)\n"
    )
    assert parse_ldd(text, Path("/usr/bin/x")) == [
        Path("/lib/x86_64-linux-gnu/libz.so.1"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]
    with pytest.raises(ImageError, match="libfoo"):
        parse_ldd("\tlibfoo.so.1 => not found\n", Path("/usr/bin/x"))


def test_guest_path_is_merged_usr() -> None:
    assert guest_path(Path("/lib64/ld-linux-x86-64.so.2")) == Path(
        "/usr/lib64/ld-linux-x86-64.so.2"
    )
    assert guest_path(Path("/usr/lib/libc.so.6")) == Path("/usr/lib/libc.so.6")


def test_stale_staging_dirs_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".abc-123").mkdir()
    (tmp_path / "0123456789abcdef").mkdir()
    remove_stale_staging(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["0123456789abcdef"]
