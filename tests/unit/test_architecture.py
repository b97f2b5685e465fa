"""The shape of the code, checked: no import circles between the project's modules, and no
module much over 500 lines (one job per module). docs/architecture.md draws the layers."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {REPO: "connet_core", REPO / "plugins": None, REPO / "tui": None}
MAX_LINES = 520  # "about 500"


def project_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base, only in ROOTS.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts or rel.parts[0] in ("tests", "examples", ".venv", "build"):
                continue
            if only is not None and rel.parts[0] != only:
                continue
            if base == REPO and rel.parts[0] != "connet_core":
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path], *, deferred: bool = False) -> set[str]:
    """What ``name`` imports when it is imported: top-level statements, not the ones inside
    functions (imported on use) or under ``if TYPE_CHECKING`` (never imported). With
    ``deferred``, those too (read by type checkers and readers)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if deferred else (
        node for node in tree.body if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    modules = project_modules()
    assert "connet_core.client" in modules and "connet_quic" in modules, "the scan finds the packages"
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    # a package's __init__ that re-exports its own modules is not a circle of behaviour
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert cycles(graph) == []


# The seam between the configuration, the plugin manager and the hooks: none of them may
# reach the others in a circle, not even by a deferred or type-only import (issue 17: the
# hooks took the configuration's AuthSettings, so config, plugins and hookspecs imported
# each other). Now the hooks take each plugin's own settings (plugin_settings), below all three.
SEAM = ("connet_core.config", "connet_core.plugins", "connet_core.hookspecs", "connet_core.model",
        "connet_core.plugin_settings")


def seam_graph() -> dict[str, set[str]]:
    modules = project_modules()

    def group(module: str) -> str:  # the config package counts as one module
        return next((s for s in SEAM if module == s or module.startswith(s + ".")), module)

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if group(name) in SEAM:
            graph.setdefault(group(name), set()).update(
                group(m) for m in imports_of(name, path, modules, deferred=True) if group(m) in SEAM and group(m) != group(name))
    return graph


def test_no_import_circle_between_config_plugins_and_hooks_even_deferred() -> None:
    graph = seam_graph()
    assert "connet_core.hookspecs" in graph["connet_core.plugins"], "the scan sees the seam's imports"
    assert cycles(graph) == []


def test_the_deferred_import_scan_sees_function_and_type_checking_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
                     "def f():\n    from pkg.b import c\n")
    modules = {"pkg.a": probe, "pkg.b": probe, "pkg.b.c": probe, "probe": probe}
    assert imports_of("probe", probe, modules, deferred=True) == {"pkg.a", "pkg.b", "pkg.b.c"}
    assert imports_of("probe", probe, modules) == set()


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_much_over_500_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in project_modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
