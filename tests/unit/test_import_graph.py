"""No import circle among the package's modules.

The graph is built from every import statement in the sources: the ones under
``if TYPE_CHECKING:`` and inside functions count too, since a circle that only
type checking or a late import hides still ties the modules together.  Only
the rooms in ``ROOMS_WITHOUT_CIRCLES`` are checked so far; the rest of the
tree joins them as its circles are broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import virtcontainers

PACKAGE = "virtcontainers"
SOURCE_ROOT = Path(virtcontainers.__file__).parent
ROOMS_WITHOUT_CIRCLES = ("agent", "guest")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE_ROOT.rglob("*.py"))}


def _absolute(base: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The module an ``from ... import`` names, its dots resolved against *base*."""
    if node.level == 0:
        return node.module or ""
    parts = base.split(".")
    package = parts if is_package else parts[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imported_modules(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module of the package that *name* imports, by any import statement."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, node, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    yield submodule
                elif source in known:
                    yield source


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {
        name: set(imported_modules(name, path, known)) - {name} for name, path in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def in_rooms(module: str, rooms: tuple[str, ...]) -> bool:
    return any(
        module == f"{PACKAGE}.{room}" or module.startswith(f"{PACKAGE}.{room}.") for room in rooms
    )


def test_the_graph_sees_relative_type_checking_and_late_imports() -> None:
    graph = import_graph()
    assert "virtcontainers.guest.agent.log" in graph["virtcontainers.guest.agent.loop"]
    assert "virtcontainers.agent.messages" in graph["virtcontainers.guest.agent.model"]
    assert "virtcontainers.agent.client" in graph["virtcontainers.agent"]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_in_the_checked_rooms() -> None:
    graph = import_graph()
    checked = {
        module: targets
        for module, targets in graph.items()
        if in_rooms(module, ROOMS_WITHOUT_CIRCLES)
    }
    assert find_cycles(checked) == []
