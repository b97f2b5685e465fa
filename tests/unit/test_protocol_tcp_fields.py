"""The fields added for relays over TCP (docs/protocol.md): a default when an older peer
leaves them out, ignored by an older peer that does not know them."""

from __future__ import annotations

import msgpack

from connet_core.protocol.codec import decode, encode
from connet_core.protocol.messages import RelayInfo, RelayRegister, RelaysUpdate


def test_relay_info_carries_the_tcp_address_and_defaults_without_it() -> None:
    update = RelaysUpdate("web", "source", (RelayInfo("r:1", b"cert", b"grant", "r:443"),))
    assert decode(encode(update), RelaysUpdate) == update
    wire = msgpack.unpackb(encode(update))
    for relay in wire["relays"]:
        del relay["tcp_addr"]  # as an older control sends it
    older = decode(msgpack.packb(wire), RelaysUpdate)
    assert older.relays[0].tcp_addr == "" and older.relays[0].addr == "r:1"


def test_relay_register_carries_the_tcp_port_and_defaults_without_it() -> None:
    hello = RelayRegister("token", "relay.example", 19191, b"cert", tcp_port=443)
    assert decode(encode(hello), RelayRegister) == hello
    wire = msgpack.unpackb(encode(hello))
    del wire["tcp_port"]
    assert decode(msgpack.packb(wire), RelayRegister).tcp_port == 0
