"""The QUIC endpoint's modules keep their seams (issue 16): each has one job and stays small,
none reaches into another class's private attributes, and the library is typed by the
Protocols of connet_quic/library.py rather than by one adapter or ``Any``.

Static checks on the source (ast), so a change that reaches across a seam fails here at once
instead of surfacing as a coupling the next refactor trips over."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import connet_quic
from connet_quic import connection, endpoint, router, stream, wiring

PACKAGE = Path(connet_quic.__file__).resolve().parent
# the endpoint and its parts (the adapters, admission, refusals and the UDP socket have their own tests)
MODULES = ["endpoint", "router", "connection", "stream", "wiring", "addresses", "closing", "inbox"]
MAX_LINES = 510  # "about 500": a module that needs more has a second job to give away
# private attributes used on something other than self/cls, each with its reason
ALLOWED = {
    ("router", "endpoint._bind"),  # QuicEndpoint.open on the instance it just made
}


def source(module: str) -> str:
    return (PACKAGE / f"{module}.py").read_text()


@pytest.mark.parametrize("module", MODULES)
def test_each_module_is_small(module: str) -> None:
    lines = source(module).count("\n")
    assert lines <= MAX_LINES, f"connet_quic/{module}.py has {lines} lines"


@pytest.mark.parametrize("module", MODULES)
def test_no_private_attribute_of_another_object(module: str) -> None:
    found = []
    for node in ast.walk(ast.parse(source(module))):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        text = ast.unparse(node)
        if (module, text) not in ALLOWED:
            found.append(f"line {node.lineno}: {text}")
    assert found == [], f"connet_quic/{module}.py reaches into private attributes: {found}"


def test_the_library_is_typed_by_its_protocol() -> None:
    wanted = "QuicLibrary[QuicLibraryConnection]"
    annotations = {
        "QuicEndpoint(library)": inspect.signature(router.QuicEndpoint.__init__).parameters["library"].annotation,
        "QuicEndpoint.open(library)": inspect.signature(router.QuicEndpoint.open).parameters["library"].annotation,
        "ConnectionWiring.library": {f.name: f.type for f in dataclasses.fields(wiring.ConnectionWiring)}["library"],
        "QuicTransport(library)": inspect.signature(connet_quic.QuicTransport.__init__).parameters["library"].annotation,
    }
    assert {k: v for k, v in annotations.items() if wanted not in str(v)} == {}
    for module in MODULES:
        assert "AioquicLibrary" not in source(module), f"connet_quic/{module}.py names one adapter"


def test_the_classes_are_where_the_rest_of_connet_imports_them_from() -> None:
    assert endpoint.QuicEndpoint is connet_quic.QuicEndpoint is router.QuicEndpoint
    assert endpoint.QuicEndpointConnection is connet_quic.QuicEndpointConnection is connection.QuicEndpointConnection
    assert endpoint.QuicEndpointStream is connet_quic.QuicEndpointStream is stream.QuicEndpointStream
