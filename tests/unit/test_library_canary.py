"""Canary for the QUIC libraries' private names that connet_quic relies on.

connet_quic's adapters (plugins/connet_quic/_aioquic.py, _qh3.py, _adapter.py) override
private methods of aioquic's and qh3's connections, read their private attributes and
construct qh3's native core positionally. None of that is API: a minor release may rename
any of it, and most renames would not raise but silently switch a feature off (an override
nobody calls any more, a configuration attribute nobody reads). pyproject.toml pins both
libraries to the tested minor versions; bumping a pin means passing this test first.

Each entry names what we use and where; a missing name fails with one line per name:
"aioquic X.Y no longer has QuicConnection._write_stream_limits, which connet_quic._aioquic
overrides (FlowControlledConnection._write_stream_limits): see plugins/connet_quic/_aioquic.py".
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Use:
    """One name of a library that our code depends on.

    ``path`` is ``module:Attr.attr`` for something reachable from a module, or
    ``<root>.attr.attr`` for an attribute of a live object (roots: see ``live_objects``).
    ``params``: for a method we override or call by keyword, the parameter names (after
    self) we rely on. ``called_by`` : for an override, the library module whose source must
    still refer to ``self.<name>`` (else our override is dead code)."""

    path: str
    use: str  # "overrides", "calls", "reads", "sets", "imports", "subclasses"
    ours: str  # the module and object of ours that depends on it
    params: tuple[str, ...] | None = None
    called_by: str | None = None


A_CONN = "aioquic.quic.connection:QuicConnection"
AIOQUIC_OURS = "connet_quic._aioquic"
FCC = f"{AIOQUIC_OURS} (FlowControlledConnection"
AIOQUIC: list[Use] = [
    # imports
    Use("aioquic.buffer:Buffer", "imports", f"{AIOQUIC_OURS} (AioquicLibrary._buffer)"),
    Use("aioquic.quic.configuration:SMALLEST_MAX_DATAGRAM_SIZE", "imports", AIOQUIC_OURS),
    Use("aioquic.quic.packet_builder:QuicDeliveryState.ACKED", "reads", f"{FCC}._on_ping_delivery)"),
    Use("aioquic.quic.packet_builder:QuicPacketBuilder.start_frame", "calls", f"{FCC}._write_ping_frame)"),
    Use("aioquic.quic.packet_builder:QuicPacketBuilder.remaining_flight_space", "reads", f"{FCC}._write_mtu_probe)"),
    Use("aioquic.quic.packet_builder:QuicPacketBuilder.remaining_buffer_space", "reads", f"{FCC}._write_mtu_probe)"),
    Use("aioquic.quic.packet_builder:QuicPacketBuilderStop", "imports", f"{FCC}._write_ping_frame)"),
    Use("aioquic.quic.connection:CONNECTION_LIMIT_FRAME_CAPACITY", "imports", f"{FCC}._write_connection_limits)"),
    Use("aioquic.quic.connection:MAX_STREAM_DATA_FRAME_CAPACITY", "imports", f"{FCC}._write_stream_limits)"),
    Use("aioquic.quic.connection:QuicConnectionState.CONNECTED", "reads", f"{FCC}.datagrams_to_send)"),
    Use("aioquic.quic.connection:QuicConnectionState.DRAINING", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.closed_by_peer)"),
    Use("aioquic.quic.packet:QuicFrameType.PADDING", "reads", f"{FCC}._write_ping_frame)"),
    Use("aioquic.quic.packet:QuicFrameType.MAX_STREAM_DATA", "reads", f"{FCC}._write_stream_limits)"),
    Use("aioquic.quic.packet:QuicPacketType.INITIAL", "reads", "connet_quic._adapter (is_initial)"),
    Use("aioquic.quic.packet:QuicPacketType.ONE_RTT", "reads", "connet_quic._adapter (is_short_header)"),
    Use("aioquic.quic.packet:QuicPacketType.VERSION_NEGOTIATION", "reads", "connet_quic._adapter (needs_version_negotiation)"),
    Use("aioquic.quic.packet:encode_quic_version_negotiation", "calls", "connet_quic._adapter (version_negotiation)",
        params=("source_cid", "destination_cid", "supported_versions")),
    Use("aioquic.quic.packet:pull_quic_header", "calls", "connet_quic._adapter (parse_header)", params=("buf", "host_cid_length")),
    Use("aioquic.tls:load_pem_private_key", "calls", f"{AIOQUIC_OURS} (AioquicLibrary.configuration)"),
    Use("aioquic.tls:load_pem_x509_certificates", "calls", f"{AIOQUIC_OURS} (AioquicLibrary.configuration)"),
    # the private methods FlowControlledConnection overrides, with the names aioquic passes
    Use(f"{A_CONN}._write_stream_limits", "overrides", f"{FCC}._write_stream_limits)",
        params=("builder", "space", "stream"), called_by="aioquic.quic.connection"),
    Use(f"{A_CONN}._write_connection_limits", "overrides", f"{FCC}._write_connection_limits)",
        params=("builder", "space"), called_by="aioquic.quic.connection"),
    Use(f"{A_CONN}._write_ping_frame", "overrides", f"{FCC}._write_ping_frame)",
        params=("builder", "uids", "comment"), called_by="aioquic.quic.connection"),
    Use(f"{A_CONN}._on_ping_delivery", "overrides", f"{FCC}._on_ping_delivery)",
        params=("delivery", "uids"), called_by="aioquic.quic.connection"),
    Use(f"{A_CONN}._replenish_connection_ids", "overrides", f"{FCC}._replenish_connection_ids)",
        params=(), called_by="aioquic.quic.connection"),
    Use(f"{A_CONN}.datagrams_to_send", "overrides", f"{FCC}.datagrams_to_send)", params=("now",)),
    Use(f"{A_CONN}._on_max_stream_data_delivery", "calls", f"{FCC}._write_stream_limits)"),
    Use(f"{A_CONN}._on_connection_limit_delivery", "calls", f"{FCC}._write_connection_limits)"),
    Use(f"{A_CONN}.get_next_available_stream_id", "calls", f"{AIOQUIC_OURS} (AioquicLibrary.open_stream)"),
    # private state of a live connection
    Use("conn._max_datagram_size", "sets", f"{FCC}.datagrams_to_send)"),
    Use("conn._state", "reads", f"{FCC}.datagrams_to_send)"),
    Use("conn._handshake_confirmed", "reads", f"{FCC}.datagrams_to_send)"),
    Use("conn._ping_pending", "sets", f"{FCC}.datagrams_to_send)"),
    Use("conn._network_paths", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.peer_reset_tokens)"),
    Use("path.addr", "reads", f"{FCC}._on_ping_delivery)"),
    Use("path.peer_cid", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.peer_reset_tokens)"),
    Use("conn._host_cids", "reads", f"{FCC}._derive_reset_tokens)"),
    Use("host_cid.cid", "reads", f"{FCC}._derive_reset_tokens)"),
    Use("host_cid.stateless_reset_token", "sets", f"{FCC}._derive_reset_tokens)"),
    Use("conn._peer_cid", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.peer_reset_tokens, datagram_payload_limit)"),
    Use("peer_cid.cid", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.datagram_payload_limit)"),
    Use("conn._max_datagram_size", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.datagram_payload_limit)"),
    Use("conn._remote_max_datagram_frame_size", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.datagram_payload_limit)"),
    Use(f"{A_CONN}.send_datagram_frame", "calls", f"{AIOQUIC_OURS} (AioquicLibrary.send_datagram)"),
    Use("aioquic.quic.packet_builder:PACKET_NUMBER_SEND_SIZE", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.datagram_payload_limit)"),
    Use("peer_cid.stateless_reset_token", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.peer_reset_tokens)"),
    Use("conn._streams", "reads", f"{FCC}.stream_credit_due)"),
    Use("stream.receiver", "reads", f"{FCC}._write_stream_limits)"),
    Use("stream.receiver._buffer_start", "reads", f"{FCC}._write_stream_limits)"),
    Use("stream.receiver.is_finished", "reads", f"{FCC}._write_stream_limits)"),
    Use("stream.max_stream_data_local", "sets", f"{FCC}._write_stream_limits)"),
    Use("stream.max_stream_data_local_sent", "sets", f"{FCC}._write_stream_limits)"),
    Use("stream.sender._buffer_stop", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.unsent)"),
    Use("stream.sender.highest_offset", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.unsent)"),
    Use("conn._local_max_data", "sets", f"{FCC}._write_connection_limits)"),
    Use("limit.used", "reads", f"{FCC}._write_connection_limits)"),
    Use("limit.value", "sets", f"{FCC}._write_connection_limits)"),
    Use("limit.sent", "sets", f"{FCC}._write_connection_limits)"),
    Use("limit.frame_type", "reads", f"{FCC}._write_connection_limits)"),
    Use("conn._local_max_streams_bidi", "sets", f"{AIOQUIC_OURS} (AioquicLibrary.new_connection)"),
    Use("conn._local_max_streams_uni", "sets", f"{AIOQUIC_OURS} (AioquicLibrary.new_connection)"),
    Use("conn._loss", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.smoothed_rtt)"),
    Use("conn._loss._rtt_smoothed", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.smoothed_rtt)"),
    Use("conn._loss._rtt_initialized", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.smoothed_rtt)"),
    Use("conn.tls._peer_certificate", "reads", f"{AIOQUIC_OURS} (AioquicLibrary.peer_certificate_der)"),
    Use("conn._close_event", "reads", "connet_quic._adapter (close_event)"),
    Use("conn.host_cid", "reads", "connet_quic._adapter (host_cid)"),
    # configuration attributes we set: an unknown one would be set without effect
    *[Use(f"config.{name}", "sets", f"{AIOQUIC_OURS} (AioquicLibrary.configuration)") for name in (
        "alpn_protocols", "connection_id_length", "idle_timeout", "max_data", "max_stream_data", "max_datagram_size",
        "max_datagram_frame_size", "server_name", "cadata", "initial_rtt", "certificate", "certificate_chain",
        "private_key", "supported_versions")],
]

Q_CONN = "qh3.quic.connection:QuicConnection"
QH3_OURS = "connet_quic._qh3"
QC = f"{QH3_OURS} (Qh3Connection"
# qh3's _create_core passes these to the native core positionally; ours copies that call
# with two values changed, so a new, removed or reordered parameter must be noticed
CORE_PARAMETERS = (
    "is_client", "version", "local_addr", "remote_addr", "source_cid", "destination_cid", "peer_address_validated",
    "active_connection_id_limit", "max_datagram_size", "probe_datagram_size", "idle_timeout", "ack_delay_exponent",
    "max_datagram_frame_size", "peer_max_datagram_frame_size", "connection_receive_window", "connection_send_limit",
    "stream_receive_window", "stream_send_limit_bidi_local", "stream_send_limit_bidi_remote", "stream_send_limit_uni",
    "max_stream_reassembly", "local_max_streams_bidi", "local_max_streams_uni", "peer_max_streams_bidi",
    "peer_max_streams_uni", "initial_rtt", "max_ack_delay", "initial_time",
)
TLS_BRIDGE_KEYWORDS = (
    "version", "local_initial_source_connection_id", "remote_initial_source_connection_id",
    "original_destination_connection_id", "retry_source_connection_id", "stateless_reset_token",
    "session_ticket_fetcher", "session_ticket_handler", "quic_logger", "version_change_handler",
)
QH3: list[Use] = [
    Use("qh3._hazmat:Buffer", "imports", f"{QH3_OURS} (Qh3Library._buffer, _Qh3TlsBridge)"),
    Use("qh3._hazmat:QuicConnectionCore", "calls", f"{QC}._create_core)", params=CORE_PARAMETERS),
    Use("qh3.quic.packet:QuicPacketType.INITIAL", "reads", "connet_quic._adapter (is_initial)"),
    Use("qh3.quic.packet:QuicPacketType.ONE_RTT", "reads", "connet_quic._adapter (is_short_header)"),
    Use("qh3.quic.packet:QuicPacketType.VERSION_NEGOTIATION", "reads", "connet_quic._adapter (needs_version_negotiation)"),
    Use("qh3.quic.packet:encode_quic_version_negotiation", "calls", "connet_quic._adapter (version_negotiation)",
        params=("source_cid", "destination_cid", "supported_versions")),
    Use("qh3.quic.packet:pull_quic_header", "calls", "connet_quic._adapter (parse_header)", params=("buf", "host_cid_length")),
    Use("qh3.quic.packet:pull_quic_transport_parameters", "calls", f"{QH3_OURS} (_Qh3TlsBridge)"),
    Use("qh3.quic.packet:push_quic_transport_parameters", "calls", f"{QH3_OURS} (_Qh3TlsBridge)"),
    Use("qh3.quic.tls_bridge:QuicTlsBridge", "subclasses", f"{QH3_OURS} (_Qh3TlsBridge)", params=("configuration", *TLS_BRIDGE_KEYWORDS)),
    Use("qh3.quic.tls_bridge:QuicTlsBridge.serialize_transport_parameters", "overrides",
        f"{QH3_OURS} (_Qh3TlsBridge.serialize_transport_parameters)", params=(), called_by="qh3.quic.tls_bridge"),
    Use("qh3.tls:load_pem_private_key", "calls", f"{QH3_OURS} (Qh3Library.configuration)"),
    Use("qh3.tls:load_pem_x509_certificates", "calls", f"{QH3_OURS} (Qh3Library.configuration)"),
    # QuicConnection: what Qh3Connection overrides and calls
    Use(f"{Q_CONN}._create_core", "overrides", f"{QC}._create_core)", params=("remote_addr", "initial_dcid", "now"),
        called_by="qh3.quic.connection"),
    Use(f"{Q_CONN}._create_tls", "overrides", f"{QC}._create_tls)", params=("remote_source_cid",),
        called_by="qh3.quic.connection"),
    Use(f"{Q_CONN}.datagrams_to_send", "overrides", f"{QC}.datagrams_to_send)", params=("now",)),
    Use(f"{Q_CONN}.receive_datagram", "overrides", f"{QC}.receive_datagram)", params=("data", "addr", "now")),
    Use(f"{Q_CONN}.receive_gro_buffer", "overrides", f"{QC}.receive_gro_buffer)",
        params=("buffer", "segment_size", "addr", "now")),
    Use(f"{Q_CONN}._call_core", "calls", f"{QC}.datagrams_to_send)"),
    Use(f"{Q_CONN}._open_stream", "calls", f"{QH3_OURS} (Qh3Library.open_stream)"),
    Use(f"{Q_CONN}._set_version", "calls", f"{QC}._create_tls)"),
    Use(f"{Q_CONN}.get_send_buffer_size", "calls", f"{QH3_OURS} (Qh3Library.unsent)"),
    Use(f"{Q_CONN}.get_peercert", "calls", f"{QH3_OURS} (Qh3Library.peer_certificate_der)"),
    Use(f"{Q_CONN}.send_datagram_frame", "calls", f"{QH3_OURS} (Qh3Library.send_keepalive)"),
    *[Use(f"conn.{name}", "reads", f"{QC}._create_core, _create_tls)") for name in (
        "_configuration", "_is_client", "_version", "host_cid", "_retry_source_connection_id",
        "_original_destination_connection_id", "_session_ticket_fetcher", "_session_ticket_handler", "_quic_logger")],
    Use("conn._applied_transport_parameters", "sets", f"{QC}._create_core, Qh3Library.peer_reset_tokens)"),
    Use("conn._pre_handshake_state_replayed", "sets", f"{QC}._create_core)"),
    Use("conn._tls", "sets", f"{QC}._create_tls)"),
    Use("conn._core", "sets", f"{QC}._create_core, Qh3Library.smoothed_rtt)"),
    Use("conn._close_event", "reads", f"{QC}.next_admission, connet_quic._adapter close_event)"),
    Use("conn._remote_max_datagram_frame_size", "reads", f"{QH3_OURS} (Qh3Library.send_keepalive)"),
    Use("core.poll_transmit", "calls", f"{QC}.datagrams_to_send)"),
    Use("core.smoothed_rtt", "reads", f"{QH3_OURS} (Qh3Library.smoothed_rtt)"),
    Use("core.active_path", "reads", f"{QH3_OURS} (Qh3Library.datagram_payload_limit: [5] is the path MTU)"),
    Use("conn._handshake_complete", "reads", f"{QH3_OURS} (Qh3Library.datagram_payload_limit)"),
    Use("core.next_event", "calls", f"{QH3_OURS} (_CoreProxy.next_event)"),
    Use("tls.configuration", "reads", f"{QH3_OURS} (_Qh3TlsBridge.serialize_transport_parameters)"),
    *[Use(f"parameters.{name}", "sets", f"{QH3_OURS} (_Qh3TlsBridge, Qh3Library.peer_reset_tokens)") for name in (
        "initial_max_streams_bidi", "initial_max_streams_uni", "stateless_reset_token")],
    *[Use(f"config.{name}", "sets", f"{QH3_OURS} (Qh3Library.configuration, Qh3Connection._create_core)") for name in (
        "alpn_protocols", "connection_id_length", "idle_timeout", "max_data", "max_stream_data", "max_datagram_size",
        "max_datagram_frame_size", "server_name", "cadata", "initial_rtt", "certificate", "certificate_chain",
        "private_key", "supported_versions", "probe_datagram_size", "verify_mode", "assert_fingerprint",
        "active_connection_id_limit")],
]

# Literal strings of the library's source our code matches on.
SOURCE_STRINGS = {
    "qh3": [("qh3.quic.connection", '"peer_closed"', f"{QH3_OURS} (_CoreProxy.next_event) watches for the core event kind")],
    "aioquic": [],
}

# The event classes and the fields the endpoint reads of them (dispatching on the class).
EVENT_FIELDS = {
    "StreamDataReceived": ("data", "end_stream", "stream_id"),
    "StreamReset": ("error_code", "stream_id"),
    "StopSendingReceived": ("error_code", "stream_id"),
    "ConnectionIdIssued": ("connection_id",),
    "ConnectionIdRetired": ("connection_id",),
    "HandshakeCompleted": ("alpn_protocol",),
    "ConnectionTerminated": ("error_code", "frame_type", "reason_phrase"),
    "DatagramFrameReceived": ("data",),
}
for _library, _uses in (("aioquic", AIOQUIC), ("qh3", QH3)):
    _uses += [
        Use(f"{_library}.quic.events:{name}", "reads", "connet_quic.connection (_process_events), connet_quic._adapter",
            params=fields)
        for name, fields in EVENT_FIELDS.items()
    ]

USES = {"aioquic": AIOQUIC, "qh3": QH3}
OUR_FILES = {"aioquic": "plugins/connet_quic/_aioquic.py", "qh3": "plugins/connet_quic/_qh3.py"}


def live_objects(library: str) -> tuple[dict[str, Any], list[str]]:
    """Real objects of the library itself (not our subclasses, which would set some of the
    attributes we look for) to look private attributes up on: a client connection that has
    started its handshake, one of its streams, and what hangs off them. A root that cannot
    be built is left out, and the reason is returned instead of its entries."""
    roots: dict[str, Any] = {}
    problems: list[str] = []
    try:
        configuration = importlib.import_module(f"{library}.quic.configuration")
        connection = importlib.import_module(f"{library}.quic.connection")
        roots["config"] = configuration.QuicConfiguration(is_client=True, alpn_protocols=["connet-test/1"],
                                                          server_name="peer.test")
        quic = roots["conn"] = connection.QuicConnection(configuration=roots["config"])
    except Exception as exc:  # noqa: BLE001 — reported: a changed library is what the canary is for
        problems.append(f"{library}: making a QuicConnection failed: {type(exc).__name__}: {exc}")
        return roots, problems
    stream_id = 0  # the client's first bidirectional stream
    try:
        quic.connect(("127.0.0.1", 9), now=0.0)
        quic.send_stream_data(stream_id, b"canary", False)
        quic.datagrams_to_send(0.0)
    except Exception as exc:  # noqa: BLE001 — reported; the roots below are still tried
        problems.append(f"{library}: starting a handshake failed: {type(exc).__name__}: {exc}")
    getters = {
        "aioquic": {
            "stream": lambda: quic._streams[stream_id],
            "path": lambda: quic._network_paths[0],
            "host_cid": lambda: quic._host_cids[0],
            "peer_cid": lambda: quic._peer_cid,
            "limit": lambda: quic._local_max_data,
        },
        "qh3": {
            "core": lambda: quic._core,
            "tls": lambda: quic._tls,
            "parameters": lambda: importlib.import_module("qh3.quic.packet").pull_quic_transport_parameters(
                importlib.import_module("qh3._hazmat").Buffer(data=quic._tls.serialize_transport_parameters())
            ),
        },
    }[library]
    for name, get in getters.items():
        try:
            value = get()
            if value is None:
                raise LookupError("it is None")
            roots[name] = value
        except Exception as exc:  # noqa: BLE001 — reported once for every entry under it
            problems.append(f"{library}: cannot reach {name!r} on a live connection ({type(exc).__name__}: {exc})")
    return roots, problems


def resolve(path: str, roots: dict[str, Any]) -> tuple[Any, str | None]:
    """(the object, None), or (None, the first missing name: ``Class.attr``, ``root.attr``
    or ``module x``)."""
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            return None, f"module {module_name}"
        walked: list[str] = []
    else:
        root, _, attrs = path.partition(".")
        if root not in roots:
            return None, f"{root} (could not be built)"
        obj, walked = roots[root], [root]
    for attr in attrs.split("."):
        walked.append(attr)
        if not hasattr(obj, attr):
            return None, ".".join(walked)
        obj = getattr(obj, attr)
    return obj, None


def parameter_problem(obj: Any, params: tuple[str, ...]) -> str | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "no inspectable signature"
    names = [p.name for p in signature.parameters.values() if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.isclass(obj):  # a subclass passes these by name (keyword) or position
        missing = [p for p in params if p not in names]
        return f"parameters {missing} are gone" if missing else None
    if names[: len(params)] != list(params):
        return f"parameters are ({', '.join(names)}), we rely on ({', '.join(params)})"
    return None


def canary_problems(library: str) -> list[str]:
    version = importlib.metadata.version(library)
    roots, problems = live_objects(library)
    see = f"see {OUR_FILES[library]}"
    for use in USES[library]:
        obj, missing = resolve(use.path, roots)
        shown = use.path.partition(":")[2] or use.path
        if missing is not None:
            if missing.endswith("(could not be built)"):
                continue  # live_objects reported that root once, with the reason
            via = "" if missing == shown else f" (for {shown})"
            problems.append(f"{library} {version} no longer has {missing}, which {use.ours} {use.use}{via}: {see}")
            continue
        if use.params is not None:
            problem = parameter_problem(obj, use.params)
            if problem:
                problems.append(f"{library} {version}: {shown}, which {use.ours} {use.use}: {problem}: {see}")
        if use.called_by is not None:
            name = use.path.rsplit(".", 1)[1]
            source = inspect.getsource(importlib.import_module(use.called_by))
            if f"self.{name}" not in source:
                problems.append(
                    f"{library} {version} no longer calls {shown} ({use.called_by} never refers to self.{name}), "
                    f"so the override in {use.ours} is dead: {see}"
                )
    for module_name, literal, why in SOURCE_STRINGS[library]:
        if literal not in inspect.getsource(importlib.import_module(module_name)):
            problems.append(f"{library} {version}: {module_name} no longer mentions {literal}, which {why}: {see}")
    return problems


@pytest.mark.parametrize("library", ["aioquic", "qh3"])
def test_every_private_name_we_rely_on_is_still_there(library):
    pytest.importorskip(library)
    problems = canary_problems(library)
    if problems:
        pytest.fail(f"{len(problems)} private name(s) of {library} changed:\n" + "\n".join(problems), pytrace=False)


def test_the_canary_names_a_missing_name_clearly():
    """The canary itself: a name that does not exist is reported in one clear line."""
    fake = Use(f"{A_CONN}._write_stream_limitz", "overrides", f"{FCC}._write_stream_limits)")
    obj, missing = resolve(fake.path, {})
    assert obj is None and missing == "QuicConnection._write_stream_limitz"
    obj, missing = resolve("conn._no_such_state", {"conn": object()})
    assert obj is None and missing == "conn._no_such_state"
    assert parameter_problem(lambda builder, space: None, ("builder", "space", "stream")) is not None
