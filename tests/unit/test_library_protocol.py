"""Both library adapters (aioquic, qh3) and their connection classes provide every member of
the Protocols in connet_quic/library.py, with signatures the endpoint can call.

``isinstance`` with a runtime_checkable Protocol only looks for names, so this inspects the
classes: every method the Protocol declares exists, takes the same positional parameters in
the same order and the same keyword-only ones, has a default wherever the Protocol does, and
requires nothing more; every attribute exists on the class or on a real instance."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import pytest

from connet_quic import library

ADAPTERS = {
    "aioquic": ("connet_quic._aioquic", "AioquicLibrary", "FlowControlledConnection"),
    "qh3": ("connet_quic._qh3", "Qh3Library", "Qh3Connection"),
}


def adapter(name: str) -> tuple[type, type]:
    module_name, library_class, connection_class = ADAPTERS[name]
    module = pytest.importorskip(module_name)
    return getattr(module, library_class), getattr(module, connection_class)


def protocol_members(proto: type) -> tuple[dict[str, inspect.Signature], list[str]]:
    """(methods with their signatures, data attribute names) that ``proto`` declares itself
    or inherits from other Protocols."""
    methods: dict[str, inspect.Signature] = {}
    attributes: list[str] = []
    for cls in reversed(proto.__mro__):
        if cls in (object, Protocol) or not getattr(cls, "_is_protocol", False) or cls.__module__ == "typing":
            continue
        attributes += [name for name in cls.__dict__.get("__annotations__", {}) if name not in attributes]
        for name, value in cls.__dict__.items():
            if inspect.isfunction(value) and not name.startswith("_"):
                methods[name] = inspect.signature(value)
    return methods, attributes


def incompatibilities(name: str, wanted: inspect.Signature, impl: Any) -> list[str]:
    """Why ``impl`` cannot stand in for a method of signature ``wanted`` (empty if it can)."""
    try:
        have = inspect.signature(impl)
    except (TypeError, ValueError):
        return [f"{name}: no inspectable signature"]
    want_params = [p for p in wanted.parameters.values() if p.name != "self"]
    have_params = [p for p in have.parameters.values() if p.name != "self"]
    by_name = {p.name: p for p in have_params}
    problems = []
    positional = [p for p in want_params if p.kind is p.POSITIONAL_OR_KEYWORD]
    have_positional = [p for p in have_params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for i, param in enumerate(positional):
        if i >= len(have_positional) or have_positional[i].name != param.name:
            problems.append(f"{name}: positional parameter {i + 1} should be {param.name!r}")
    for param in want_params:
        got = by_name.get(param.name)
        if got is None:
            if param.kind is param.KEYWORD_ONLY:
                problems.append(f"{name}: no keyword parameter {param.name!r}")
            continue
        if param.default is not param.empty and got.default is param.empty:
            problems.append(f"{name}: {param.name!r} needs a default, as in the Protocol")
    wanted_names = {p.name for p in want_params}
    for param in have_params:
        if param.name not in wanted_names and param.default is param.empty and param.kind not in (
            param.VAR_POSITIONAL, param.VAR_KEYWORD
        ):
            problems.append(f"{name}: requires {param.name!r}, which the endpoint never passes")
    return problems


def check_class(proto: type, cls: type) -> list[str]:
    methods, _ = protocol_members(proto)
    problems = []
    for name, signature in methods.items():
        impl = getattr(cls, name, None)
        if impl is None or not callable(impl):
            problems.append(f"{name}: missing")
            continue
        problems += incompatibilities(name, signature, impl)
    return problems


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_adapter_provides_every_library_method(name):
    library_class, _ = adapter(name)
    assert check_class(library.QuicLibrary, library_class) == []


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_connection_provides_every_connection_method(name):
    _, connection_class = adapter(name)
    assert check_class(library.QuicLibraryConnection, connection_class) == []


def new_client(name: str) -> tuple[Any, Any]:
    library_class, _ = adapter(name)
    lib = library_class()
    config = lib.configuration(is_client=True, alpns=["connet-test/1"], idle_timeout=3.0, max_datagram_size=1200,
                               initial_rtt=None, server_name="peer.test")
    quic = lib.new_connection(config, max_streams=16, reset_token=lambda cid: bytes(16))
    return lib, quic


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_attributes_and_results_have_the_promised_shape(name):
    lib, quic = new_client(name)
    _, library_attributes = protocol_members(library.QuicLibrary)
    assert [a for a in library_attributes if not hasattr(lib, a)] == []
    _, event_names = protocol_members(library.QuicEventTypes)
    assert [e for e in event_names if not isinstance(getattr(lib.events, e, None), type)] == []
    assert isinstance(lib.name, str) and isinstance(lib.smallest_max_datagram_size, int)

    _, connection_attributes = protocol_members(library.QuicLibraryConnection)
    assert [a for a in connection_attributes if not hasattr(quic, a)] == []
    assert quic.unread_by_stream == {} and quic.unread_total == 0
    assert isinstance(quic, library.QuicLibraryConnection) and isinstance(lib, library.QuicLibrary)

    # a real Initial, as the endpoint would route it
    quic.connect(("127.0.0.1", 9), now=0.0)
    datagrams = quic.datagrams_to_send(0.0)
    assert datagrams and all(isinstance(d, bytes) for d, _ in datagrams)
    header = lib.parse_header(datagrams[0][0])
    assert isinstance(header, library.PacketHeader)
    assert lib.is_initial(header) and not lib.is_short_header(header)
    assert header.destination_cid and header.source_cid == lib.host_cid(quic)
    assert not lib.needs_version_negotiation(header, lib.supported_versions(quic.configuration))
    assert lib.parse_header(b"") is None and lib.parse_header(b"\x00not quic") is None

    stream_id = lib.open_stream(quic)
    quic.send_stream_data(stream_id, b"queued before the handshake", False)
    assert lib.unsent(quic, stream_id) > 0
    assert lib.smoothed_rtt(quic) is None or isinstance(lib.smoothed_rtt(quic), float)
    assert lib.close_event(quic) is None and not lib.closed_by_peer(quic)

    quic.close(error_code=4, reason_phrase="forbidden")
    event = lib.close_event(quic)
    assert isinstance(event, library.CloseEvent)
    assert (event.error_code, event.reason_phrase) == (4, "forbidden") and not lib.is_transport_close(event)
    assert not lib.closed_by_peer(quic)
