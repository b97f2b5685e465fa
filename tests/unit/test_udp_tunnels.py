"""UDP tunnels' sans-I/O parts (docs/udp.md): the datagram codec and its end-to-end seal,
stream records, the flow table, the drop log; their configuration keys; and DATAGRAM
frames over real QUIC connections of both libraries, sized to the path."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from connet_core.certs import make_identity
from connet_core.client.udp_flows import DropLog, FlowTable
from connet_core.config import load_config
from connet_core.errors import ConfigError
from connet_core.model import HostPort
from connet_core.protocol import datagrams as codec
from connet_core.protocol.messages import Connect
from connet_core.protocol.codec import decode, encode
from connet_core.transport import Trust

# ---- codec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flow_id", [0, 1, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**62 - 1])
def test_flow_ids_round_trip_as_quic_varints(flow_id: int) -> None:
    payload = os.urandom(50)
    frame = codec.encode(flow_id, payload)
    assert len(frame) == codec.varint_size(flow_id) + len(payload)
    assert codec.decode(frame) == (flow_id, payload)


def test_a_frame_too_short_for_its_flow_id_is_none() -> None:
    assert codec.decode(b"") is None
    assert codec.decode(bytes([0x80, 1])) is None  # a 4-byte varint in 2 bytes


def test_the_seal_opens_only_the_other_direction_and_untouched() -> None:
    key = codec.new_key()
    source, destination = codec.FlowSeal(key, source_side=True), codec.FlowSeal(key, source_side=False)
    sealed = source.seal(b"query")
    assert sealed is not None and len(sealed) == 5 + codec.SEAL_OVERHEAD
    assert destination.open(sealed) == b"query"
    assert source.open(sealed) is None  # its own direction: another nonce
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    assert destination.open(bytes(tampered)) is None
    assert codec.FlowSeal(codec.new_key(), source_side=False).open(sealed) is None  # another key
    assert destination.open(sealed[:10]) is None
    # every datagram its own nonce: the same payload seals differently
    assert source.seal(b"query") != sealed


def test_the_seal_stops_at_its_counter_limit() -> None:
    seal = codec.FlowSeal(codec.new_key(), source_side=True)
    seal._counter = codec.COUNTER_LIMIT - 1
    assert seal.seal(b"last") is not None
    assert seal.seal(b"one too many") is None


def test_a_key_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.FlowSeal(b"short", source_side=True)


def test_records_come_out_whole_however_the_stream_cuts_them() -> None:
    datagrams = [os.urandom(n) for n in (0, 1, 1400, codec.STREAM_LIMIT, 7)]
    wire = b"".join(codec.record(d) for d in datagrams)
    reader = codec.RecordReader()
    out = []
    for start in range(0, len(wire), 333):
        out += reader.feed(wire[start:start + 333])
    assert out == datagrams


def test_a_record_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.RecordReader().feed((codec.STREAM_LIMIT + 1).to_bytes(2, "big"))


def test_connect_carries_protocol_and_key_and_defaults_to_tcp() -> None:
    udp = Connect("dns", protocol="udp", key=bytes(32))
    assert decode(encode(udp), Connect) == udp
    assert decode(encode(Connect("web")), Connect).protocol == "tcp"


# ---- the flow table -------------------------------------------------------------------------


def test_the_flow_table_caps_flows_and_expires_the_idle_ones() -> None:
    table: FlowTable[str, str] = FlowTable(max_flows=2, idle_timeout=10.0)
    assert table.add("a", "flow a", now=0.0) and table.add("b", "flow b", now=1.0)
    assert not table.add("c", "flow c", now=2.0)  # full
    assert table.get("a", now=5.0) == "flow a"  # a is active again
    assert table.next_expiry() == 11.0  # b, least recently active
    assert table.expire(now=11.0) == ["flow b"]
    table.touch("a", now=14.0)  # a reply keeps it too
    assert table.expire(now=20.0) == [] and table.expire(now=24.0) == ["flow a"]
    assert table.next_expiry() is None and len(table) == 0


def test_removing_a_flow_leaves_its_successor() -> None:
    table: FlowTable[str, object] = FlowTable(max_flows=4, idle_timeout=10.0)
    old, new = object(), object()
    table.add("a", old, now=0.0)
    table.remove("a", old)
    table.add("a", new, now=1.0)
    table.remove("a", old)  # the old flow's late cleanup
    assert table.get("a", now=2.0) is new


def test_drop_lines_are_rate_limited_per_cause() -> None:
    log = DropLog(interval=10.0)
    assert log.note("too_large", 0.0) == 0
    assert log.note("too_large", 1.0) is None and log.note("too_large", 2.0) is None
    assert log.note("flows_full", 2.0) == 0  # another cause has its own line
    assert log.note("too_large", 10.0) == 2  # the two not logged in between


# ---- configuration --------------------------------------------------------------------------


def client(tmp_path: Path, body: str, flags: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text('[client]\ntoken = "t"\n' + body)
    return load_config("client", [path], flags, {}, transport_names=("auto",)).client


def test_udp_keys_and_their_defaults(tmp_path: Path) -> None:
    settings = client(tmp_path, '[client.sources.dns]\naddr = ":5353"\nprotocol = "udp"\n'
                      '[client.sources.web]\naddr = ":8080"\n'
                      '[client.destinations.dns]\naddr = ":53"\nprotocol = "udp"\n')
    dns, web = settings.sources
    assert (dns.protocol, dns.udp_idle_timeout, dns.udp_max_flows) == ("udp", 60.0, 1024)
    assert web.protocol == "tcp" and settings.destinations[0].protocol == "udp"


def test_udp_keys_from_flags_are_read_from_text(tmp_path: Path) -> None:
    """--src-protocol udp --src-udp-idle-timeout 2.5 --src-udp-max-flows 16 (named tables are
    not set from CONNET_* variables: docs/configuration.md)."""
    settings = client(tmp_path, '[client.sources.dns]\naddr = ":5353"\n', flags={
        "client.sources.dns.protocol": "udp",
        "client.sources.dns.udp-idle-timeout": "2.5",
        "client.sources.dns.udp-max-flows": "16",
    })
    assert (settings.sources[0].protocol, settings.sources[0].udp_idle_timeout, settings.sources[0].udp_max_flows) == (
        "udp", 2.5, 16)


@pytest.mark.parametrize(("line", "fragment"), [
    ('protocol = "sctp"', "'sctp' is not one of tcp, udp"),
    ("udp-idle-timeout = 0", "give seconds from 1 to 86400"),
    ('udp-idle-timeout = "soon"', "'soon' is not a duration"),
    ('udp-idle-timeout = "2m"', None),
    ("udp-max-flows = 0", "give a number of flows from 1 to 4096"),
    ("udp-max-flows = 5000", "give a number of flows from 1 to 4096"),
    ("udp-max-flows = 1.5", "expected a whole number"),
    ("udp-max-flows = true", "expected a whole number"),
])
def test_bad_udp_values_are_one_line_naming_the_key(tmp_path: Path, line: str, fragment: str | None) -> None:
    if fragment is None:  # a good value, for contrast: durations as the other timeouts take them
        assert client(tmp_path, f'[client.sources.dns]\naddr = ":5353"\n{line}\n').sources[0].udp_idle_timeout == 120
        return
    with pytest.raises(ConfigError) as info:
        client(tmp_path, f'[client.sources.dns]\naddr = ":5353"\n{line}\n')
    message = str(info.value)
    assert "\n" not in message and "client.sources.dns." in message and fragment in message


# ---- DATAGRAM frames over real QUIC ---------------------------------------------------------


@pytest.fixture(params=["aioquic", "qh3"])
def quic(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    pytest.importorskip(request.param)
    import connet_quic

    return connet_quic.connet_transport(request.param)


async def test_datagrams_arrive_whole_and_too_large_ones_are_refused(quic) -> None:  # type: ignore[no-untyped-def]
    tls, der, _ = make_identity("udp-test")
    listener = await quic.bind(HostPort("127.0.0.1", 0), identity=tls, alpns=["t/1"])
    dialer = await quic.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[])
    try:
        dialed = await dialer.dial(listener.local_address, alpn="t/1", trust=Trust(pinned_der=der))
        accepted = await listener.accept()
        got: asyncio.Queue[bytes] = asyncio.Queue()
        accepted.datagrams.set_receiver(got.put_nowait)
        # before the path MTU probe: frames in 1200-byte packets
        assert 1160 <= dialed.datagrams.max_size() <= 1170
        deadline = asyncio.get_running_loop().time() + 5
        while dialed.datagrams.max_size() < 1400 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)  # the dialer's probe: aioquic through our adapter, qh3 by itself
        largest = dialed.datagrams.max_size()
        assert largest >= 1400
        payloads = [os.urandom(n) for n in (1, 100, 1400, largest)]
        for payload in payloads:
            assert dialed.datagrams.send(payload)
        received = [await asyncio.wait_for(got.get(), 5) for _ in payloads]
        assert sorted(received) == sorted(payloads)
        # one byte more is refused, not queued: the connection goes on
        assert not dialed.datagrams.send(os.urandom(largest + 1))
        assert dialed.datagrams.send(b"still open")
        assert await asyncio.wait_for(got.get(), 5) == b"still open"
        assert not dialed.closed and not accepted.closed
        dialed.close()
        assert dialed.datagrams.max_size() == 0 and not dialed.datagrams.send(b"x")
    finally:
        await dialer.close()
        await listener.close()
