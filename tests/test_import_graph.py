"""The layering holds as data, read from the source: what each runtime module imports at
module level (`if TYPE_CHECKING:` blocks included, since the type checker follows them;
imports inside function bodies left out, as they run only when called).

- `runtime/` has no import cycle: every module can be imported first, on its own.
- `runtime` never imports `compiler` at module level (the compiler is an optional extra).
- No API package under `runtime/service/apis/` imports another API's modules: shared
  plumbing lives in `runtime/service/` (turn.py, transport.py, errors.py, bounds.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(RUNTIME.rglob("*.py"))}


def _top_level_imports(tree: ast.Module) -> list[str]:
    """Modules named by imports that run when the module is imported."""
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        imported = _top_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = {m for m in imported if m in MODULES and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_the_runtime_import_graph_has_no_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_runtime_never_imports_the_compiler_at_module_level() -> None:
    offenders = {
        name: sorted(m for m in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))))
        for name, path in MODULES.items()
    }
    assert {
        name: [m for m in imported if m == "compiler" or m.startswith("compiler.")]
        for name, imported in offenders.items()
        if any(m == "compiler" or m.startswith("compiler.") for m in imported)
    } == {}


def test_no_api_imports_another_apis_modules() -> None:
    prefix = "runtime.service.apis."
    crossings = []
    for name, imported in _graph().items():
        if not name.startswith(prefix):
            continue
        api = name[len(prefix) :].split(".")[0]
        for other in imported:
            if other.startswith(prefix) and other[len(prefix) :].split(".")[0] != api:
                crossings.append(f"{name} -> {other}")
    assert crossings == []
