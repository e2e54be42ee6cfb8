"""The import contract of ARCHITECTURE.md, checked from the source (run by scripts/check).

1. Layers: a module of ``entrepot`` imports only modules of its own layer or of layers listed
   before its own in ``LAYERS`` (foundations first).
2. Only ``entrepot.metadata`` imports SQLAlchemy or Alembic.
3. Only ``entrepot.web``, ``entrepot.app`` and ``entrepot.upstream`` import aiohttp.
4. ``entrepot.mgmt`` (the client SDK) imports only ``entrepot.models`` and ``entrepot.errors``.
5. No import cycles between modules.

Imports under ``if TYPE_CHECKING:`` are ignored; imports inside functions count (a lazy import
is still a dependency). Exit status 1 with one line per violation.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "entrepot"
# Foundations first; a module may import its own layer and the layers before it.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("oci",),
    ("config",),
    ("addressing",),
    ("models",),
    ("rules",),
    ("storage",),
    ("metadata",),
    ("secrets",),
    ("upstream",),
    ("credential_health",),
    ("proxy",),
    ("management",),
    ("web",),
    ("app",),
    ("mgmt",),
    ("cli", "__main__"),
]
SQL = ("sqlalchemy", "alembic")
SQL_ALLOWED = ("metadata",)
HTTP = ("aiohttp",)
HTTP_ALLOWED = ("web", "app", "upstream")
CLIENT = "mgmt"
CLIENT_MAY_IMPORT = ("models", "errors", "mgmt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(
    tree: ast.Module, name: str, is_package: bool, modules: Collection[str]
) -> Iterator[tuple[str, int]]:
    """Absolute names imported by a module (resolving relative imports), with line numbers.

    ``from package import module`` depends on the module, not on the package's ``__init__``.
    """
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            if len(submodules) < len(node.names):
                yield base, node.lineno
            for submodule in submodules:
                yield submodule, node.lineno


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    return -1


def top(name: str) -> str:
    return name.split(".")[1] if name.count(".") else ""


def main() -> int:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p): p for p in files}
    errors: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        where = top(name)
        mine = layer_of(name)
        rel = path.relative_to(ROOT.parent)
        if mine == -1:
            errors.append(f"{rel}: module {name} is in no layer of scripts/check_imports.py")
        seen: set[tuple[str, int]] = set()
        for target, line in imports(tree, name, path.name == "__init__.py", modules):
            if (target.split(".")[0], line) in seen and target.split(".")[0] != PACKAGE:
                continue
            seen.add((target.split(".")[0], line))
            root = target.split(".")[0]
            if root in SQL and where not in SQL_ALLOWED:
                errors.append(f"{rel}:{line}: imports {root} outside entrepot.metadata")
            if root in HTTP and where not in HTTP_ALLOWED:
                errors.append(f"{rel}:{line}: imports {root} outside web/, app.py, upstream/")
            if root != PACKAGE:
                continue
            if target in modules and target != name:
                graph[name].add(target)
            theirs = layer_of(target)
            if theirs is None or mine is None or mine == -1:
                continue
            if where == CLIENT and top(target) not in CLIENT_MAY_IMPORT:
                errors.append(f"{rel}:{line}: the client SDK imports {target}")
            elif theirs > mine:
                errors.append(f"{rel}:{line}: {name} imports {target}, a layer above it")
    errors += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    for error in errors:
        print(error)
    return 1 if errors else 0


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append([*sorted(component), sorted(component)[0]])

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


if __name__ == "__main__":
    sys.exit(main())
