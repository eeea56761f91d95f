"""The house: the import graph of src/virtcontainers, read from the sources.

Every import statement counts, those under ``if TYPE_CHECKING:`` and inside
functions included: a circle that only type checking sees is still two rooms
that cannot be read apart.  The layers are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "virtcontainers"

# Lowest first: a module may import from its own layer and those below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "vocabulary",
        (
            "errors",
            "ids",
            "plainconfig",
            "states",
            "limits",
            "volumes",
            "stdio",
            "events",
            "config",
            "records",
            "cgroupconfig",
            "status",
            "spec",
            "agent.protocol",
            "agent.contract",
            "agent.messages",
            "agent.results",
        ),
    ),
    ("host", ("host", "network", "image", "store")),
    ("backends", ("hypervisor", "agent", "guest")),
    ("storage", ("storage",)),
    ("clean-up", ("host.cleanup", "host.orphans")),
    ("factory", ("factory",)),
    ("pod", ("pod",)),
    ("daemon", ("daemon",)),
    ("api", ("api",)),
    ("translation", ("oci",)),
    ("front-ends", ("cli", "shim")),
)
MAX_UPWARD = 2
MAX_ROOT_MODULES = 16
GENERATED = PACKAGE / "shim" / "_gen"
"""protoc's output from containerd's .proto files (`make deps`): not ours to shape."""


def ours(path: Path) -> bool:
    return path != GENERATED and GENERATED not in path.parents and "__pycache__" not in path.parts


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if ours(path)}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of this package that `name` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path.name == "__init__.py")
            # `from pkg import mod` names a module; `from mod import thing` does not.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports_of(name, path, known)) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    """The layer of a module: its longest prefix in LAYERS."""
    relative = module.removeprefix("virtcontainers").lstrip(".")
    best, depth = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (relative == prefix or relative.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = rank, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it (docs/architecture.md)")
    return best


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source, targets in edges.items()
        if source != "virtcontainers"
        for target in targets
        if layer_of(target) > layer_of(source)
    )


def test_no_import_circle_anywhere() -> None:
    assert circles(graph()) == []


def test_few_imports_run_up_the_layers() -> None:
    found = upward(graph())
    assert len(found) <= MAX_UPWARD, "\n".join(f"{a} -> {b}" for a, b in found)


def test_the_root_holds_the_vocabulary_only() -> None:
    root = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


@pytest.mark.parametrize(
    "folder",
    sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*") if p.is_dir() and ours(p)),
    ids=str,
)
def test_every_room_says_what_it_holds(folder: Path) -> None:
    init = PACKAGE / folder / "__init__.py"
    assert init.is_file(), f"{folder} has no __init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{folder}/__init__.py has no docstring"


def test_the_graph_sees_a_circle_and_an_upward_import() -> None:
    edges = {"virtcontainers.pod.a": {"virtcontainers.pod.b"}, "virtcontainers.pod.b": set()}
    assert circles(edges) == []
    edges["virtcontainers.pod.b"].add("virtcontainers.pod.a")
    assert circles(edges) == [["virtcontainers.pod.a", "virtcontainers.pod.b"]]
    assert upward({"virtcontainers.config": {"virtcontainers.api"}}) == [
        ("virtcontainers.config", "virtcontainers.api")
    ]


def test_relative_and_type_checking_imports_are_read(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..core import Agent\n"
        "from . import blocks\n"
    )
    known = {"virtcontainers.guest.agent.core", "virtcontainers.guest.agent.ops.blocks"}
    found = set(imports_of("virtcontainers.guest.agent.ops.m", source, known))
    assert found == known
