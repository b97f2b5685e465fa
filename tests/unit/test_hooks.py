"""Meta-test: every hookspec is documented and exercised through the facade.

For each ``connet_*`` hookspec in connet_core.hookspecs this fails if
(a) docs/hooks.md has no ``## connet_<name>`` section, or
(b) no facade method of connet_core.plugins.Hooks calls it, or
(c) no test function under tests/ calls that facade method (``<...>hooks.<method>(``) and
    asserts something in the same function.
The facade-to-hook map is read from plugins.py itself (which ``self._hook.connet_*`` each
method calls), so it cannot drift from the code.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from pathlib import Path

import pytest

from connet_core import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
HOOKS_DOC = ROOT / "docs" / "hooks.md"
SPEC_MARKER = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy's HookspecMarker sets


def hookspec_names() -> list[str]:
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if name.startswith("connet_") and callable(obj) and hasattr(obj, SPEC_MARKER)
    )


def facade_hooks(source: str) -> dict[str, set[str]]:
    """Facade method name -> the hook names it calls (``self._hook.<hook>(...)``), read from
    the source of the ``Hooks`` class (``self._hook.<hook>`` named anywhere in the method)."""
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Hooks"]
    mapping: dict[str, set[str]] = {}
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef) or method.name.startswith("_"):
            continue
        # ``self._hook.connet_x(...)`` or ``self._call(self._hook.connet_x, ...)``: either way
        # the method names the hook as an attribute of the hook relay
        called = {
            node.attr
            for node in ast.walk(method)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("connet_")
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "_hook"
        }
        if called:
            mapping[method.name] = called
    return mapping


def documented_hooks(markdown: str) -> set[str]:
    return {line[3:].strip() for line in markdown.splitlines() if line.startswith("## connet_")}


def _is_test_function(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def _receiver_is_hooks(node: ast.expr) -> bool:
    """``hooks``, ``self.hooks``, ``default_hooks``: any name ending in ``hooks``."""
    if isinstance(node, ast.Name):
        return node.id.lower().endswith("hooks")
    if isinstance(node, ast.Attribute):
        return node.attr.lower().endswith("hooks")
    return False


def asserted_facade_calls(source: str) -> set[str]:
    """Facade methods called as ``<...hooks>.<method>(`` inside a test function that also
    contains an ``assert`` statement."""
    found: set[str] = set()
    for test in (n for n in ast.walk(ast.parse(source)) if _is_test_function(n)):
        nodes = list(ast.walk(test))
        if not any(isinstance(n, ast.Assert) for n in nodes):
            continue
        for node in nodes:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _receiver_is_hooks(node.func.value):
                found.add(node.func.attr)
    return found


@functools.cache
def facade_methods_tested() -> frozenset[str]:
    found: set[str] = set()
    for path in TESTS.rglob("*.py"):
        found |= asserted_facade_calls(path.read_text(encoding="utf-8"))
    return frozenset(found)


SPECS = hookspec_names()
FACADE = facade_hooks(inspect.getsource(plugins))


def test_hookspecs_are_discovered():
    # the discovery itself must see the hooks, or every check below passes vacuously
    assert {"connet_authenticate", "connet_transport", "connet_open_store"} <= set(SPECS)


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_documented(hook):
    assert hook in documented_hooks(HOOKS_DOC.read_text(encoding="utf-8")), f"docs/hooks.md has no '## {hook}'"


@pytest.mark.parametrize("hook", SPECS)
def test_hook_has_a_facade_method(hook):
    assert any(hook in hooks for hooks in FACADE.values()), f"no method of plugins.Hooks calls {hook}"


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_tested_through_the_facade(hook):
    methods = sorted(m for m, hooks in FACADE.items() if hook in hooks)
    tested = facade_methods_tested()
    assert any(m in tested for m in methods), (
        f"no test function calls hooks.{' or hooks.'.join(methods) or '?'}(...) and asserts (for {hook})"
    )


# --- the scanners themselves must be able to say no -----------------------------------


def test_scanner_requires_an_assert_in_the_same_test():
    source = textwrap.dedent(
        """
        def helper(hooks):
            assert hooks.transport("x")

        def test_without_assert(hooks):
            hooks.authenticate(settings, kind, "t")

        async def test_with_assert(self_hooks):
            assert self_hooks.select_routes("n", a, b, []) == []

        class TestGroup:
            def test_method(self):
                result = self.hooks.open_store("control", path)
                assert result

        def test_other_receiver(manager):
            assert manager.admit_address(settings, kind, address) is None
        """
    )
    assert asserted_facade_calls(source) == {"select_routes", "open_store"}


def test_facade_map_reads_calls_on_the_hook_relay():
    source = textwrap.dedent(
        """
        class Hooks:
            def authenticate(self, settings, kind, token):
                return self._hook.connet_authenticate(settings=settings, kind=kind, token=token)

            def authorize(self, settings):
                return self._call(self._hook.connet_authorize, check, "a reason", first=False, settings=settings)

            def unrelated(self):
                return connet_authorize()

            def _private(self):
                return self._hook.connet_transport(name="x")
        """
    )
    assert facade_hooks(source) == {"authenticate": {"connet_authenticate"}, "authorize": {"connet_authorize"}}


def test_documented_hooks_needs_a_level_two_heading():
    markdown = "# connet_top\n## connet_authorize\n### connet_transport\ntext ## connet_admit_address\n"
    assert documented_hooks(markdown) == {"connet_authorize"}
