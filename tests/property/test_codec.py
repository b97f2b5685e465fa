"""Property tests of the wire codec and framing.

The message strategies are built from the dataclass annotations, so a message added to
MESSAGE_TYPES is covered without touching this file (and an annotation no strategy knows
fails loudly in test_every_message_type_has_a_strategy).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connet_core.errors import ProtocolError
from connet_core.protocol import messages
from connet_core.protocol.codec import INT_MAX, INT_MIN, MAX_FRAME_SIZE, MAX_NESTING, decode, encode
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import HEADER_SIZE, FrameDecoder, frame
from connet_core.protocol.messages import MESSAGE_TYPES, NESTED_TYPES

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NESTED_TAG = {cls: tag for tag, cls in NESTED_TYPES.items()}
MESSAGE_TAG = {cls: tag for tag, cls in MESSAGE_TYPES.items()}


# --- strategies from annotations ----------------------------------------------------------


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of one field type, as the codec's type grammar defines it."""
    if annotation is str:
        return st.text(max_size=40)
    if annotation is bytes:
        return st.binary(max_size=64)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.one_of(st.integers(-1000, 70000), st.integers(INT_MIN, INT_MAX))
    if annotation in NESTED_TAG:
        return record_strategy(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | strategy_for(inner)
    raise AssertionError(f"no strategy for annotation {annotation!r}: extend the codec and this test")


def record_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


def sample_for(annotation: Any) -> Any:
    """One fixed valid value of a field type (for tests that edit a known-good message)."""
    fixed = {str: "s", bytes: b"b", int: 1, bool: False}
    if annotation in fixed:
        return fixed[annotation]
    if annotation in NESTED_TAG:
        return sample_record(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return (sample_for(args[0]),)
    if origin in (typing.Union, types.UnionType):
        return sample_for(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no sample for annotation {annotation!r}")


def sample_record(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample_for(hints[f.name]) for f in dataclasses.fields(cls)})


any_message = st.sampled_from(sorted(MESSAGE_TYPES)).flatmap(lambda tag: record_strategy(MESSAGE_TYPES[tag]))


def to_plain(value: Any) -> Any:
    """A message or record as the plain map the wire carries (independent of codec.py)."""
    if dataclasses.is_dataclass(value):
        tag = MESSAGE_TAG.get(type(value)) or NESTED_TAG[type(value)]
        plain = {"t": tag}
        plain.update({f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return plain
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


# msgpack values of any shape, for unknown fields and for garbage maps.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# --- coverage -----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(MESSAGE_TYPES))
def test_every_message_type_has_a_strategy(tag: str) -> None:
    cls = MESSAGE_TYPES[tag]
    assert dataclasses.is_dataclass(cls)
    record_strategy(cls).validate()  # every annotation has a strategy
    sample = sample_record(cls)
    assert decode(encode(sample)) == sample


def test_all_tags_are_distinct_and_classes_unique() -> None:
    assert set(MESSAGE_TYPES).isdisjoint(NESTED_TYPES)
    assert len(set(MESSAGE_TYPES.values())) == len(MESSAGE_TYPES)
    assert all("t" not in {f.name for f in dataclasses.fields(c)} for c in [*MESSAGE_TYPES.values(), *NESTED_TYPES.values()])


def test_registry_lists_every_message_dataclass_of_the_module() -> None:
    declared = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == messages.__name__
    }
    assert declared == set(MESSAGE_TYPES.values()) | set(NESTED_TYPES.values())


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(MESSAGE_TYPES))
@PROFILE
@given(data=st.data())
def test_each_message_round_trips(tag: str, data: st.DataObject) -> None:
    msg = data.draw(record_strategy(MESSAGE_TYPES[tag]))
    payload = encode(msg)
    assert decode(payload) == msg
    # The wire form is the documented plain map, field for field.
    assert msgpack.unpackb(payload, raw=False) == to_plain(msg)


@PROFILE
@given(msgs=st.lists(any_message, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 10**6), max_size=12), raw=st.binary(max_size=40))
def test_frames_round_trip_in_any_chunking(msgs: list[Any], cuts: list[int], raw: bytes) -> None:
    stream = b"".join(frame(m) for m in msgs) + raw
    decoder = FrameDecoder()
    received: list[Any] = []
    for chunk in chunked(stream, cuts):
        decoder.feed(chunk)
        while (msg := decoder.next_message()) is not None:
            received.append(msg)
            if len(received) == len(msgs):
                break
        if len(received) == len(msgs):
            break
    # Once the last frame is decoded, what follows is handed back byte for byte.
    consumed = sum(len(frame(m)) for m in msgs)
    fed_so_far = consumed + decoder.buffered
    decoder_rest = decoder.take_remaining()
    assert received == msgs
    assert decoder_rest + stream[fed_so_far:] == raw
    assert decoder.buffered == 0


@PROFILE
@given(msg=any_message, data=st.data())
def test_truncated_frame_needs_more_and_never_yields_a_wrong_message(msg: Any, data: st.DataObject) -> None:
    whole = frame(msg)
    cut = data.draw(st.integers(0, len(whole) - 1))
    decoder = FrameDecoder()
    decoder.feed(whole[:cut])
    assert decoder.next_message() is None
    decoder.feed(whole[cut:])
    assert decoder.next_message() == msg
    assert decoder.next_message() is None


# --- extras and wrong types ---------------------------------------------------------------


@PROFILE
@given(
    msg=any_message,
    extras=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "t"), msgpack_values, max_size=4),
)
def test_unknown_fields_are_ignored(msg: Any, extras: dict[str, Any]) -> None:
    plain = to_plain(msg)
    extras = {k: v for k, v in extras.items() if k not in plain}
    assert decode(pack({**plain, **extras})) == msg


def test_unknown_fields_in_nested_records_are_ignored() -> None:
    peer = messages.PeerInfo(certificate=b"c", addresses=("h:1",))
    msg = messages.PeersUpdate(name="n", role="source", peers=(peer,))
    plain = to_plain(msg)
    plain["peers"][0]["new_field"] = {"x": [1, 2]}
    assert decode(pack(plain)) == msg


def test_missing_optional_fields_take_their_defaults() -> None:
    assert decode(pack({"t": "connect", "name": "web"})) == messages.Connect(name="web")


WRONG_SCALARS: dict[str, Any] = {
    "int": 7,
    "bool": True,
    "str": "x",
    "bytes": b"x",
    "float": 1.5,
    "none": None,
    "map": {"a": 1},
}
KIND_OF_ANNOTATION = {int: "int", bool: "bool", str: "str", bytes: "bytes"}


def wrong_values_for(annotation: Any) -> list[Any]:
    """Wire values that must not decode as ``annotation``."""
    kind = KIND_OF_ANNOTATION.get(annotation)
    if kind is not None:
        return [v for k, v in WRONG_SCALARS.items() if k != kind] + [[WRONG_SCALARS[kind]]]
    if annotation in NESTED_TAG:
        valid = to_plain(sample_record(annotation))
        wrong_tag = {**valid, "t": "nope"}
        untagged = {k: v for k, v in valid.items() if k != "t"}
        return [*WRONG_SCALARS.values(), [valid], wrong_tag, untagged]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return [v for k, v in WRONG_SCALARS.items() if k != "none"] + [[w] for w in wrong_values_for(args[0])]
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return [w for w in wrong_values_for(inner) if w is not None]
    raise AssertionError(f"no wrong values for {annotation!r}")


def wrong_field_cases() -> list[tuple[str, str, Any]]:
    cases = []
    for tag, cls in sorted(MESSAGE_TYPES.items()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for wrong in wrong_values_for(hints[f.name]):
                cases.append((tag, f.name, wrong))
    return cases


@pytest.mark.parametrize(("tag", "field", "wrong"), wrong_field_cases())
def test_wrong_field_types_are_rejected(tag: str, field: str, wrong: Any) -> None:
    plain = to_plain(sample_record(MESSAGE_TYPES[tag]))
    plain[field] = wrong
    with pytest.raises(ProtocolError) as info:
        decode(pack(plain))
    assert info.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("tag", sorted(MESSAGE_TYPES))
def test_missing_required_fields_are_rejected(tag: str) -> None:
    cls = MESSAGE_TYPES[tag]
    plain = to_plain(sample_record(cls))
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            with pytest.raises(ProtocolError):
                decode(pack({k: v for k, v in plain.items() if k != f.name}))


@pytest.mark.parametrize("value", [INT_MAX + 1, 2**64 - 1])
def test_integers_beyond_int64_are_rejected(value: int) -> None:
    with pytest.raises(ProtocolError):
        decode(pack({"t": "connrefused", "code": value}))


def test_integer_limits_themselves_decode() -> None:
    for value in (INT_MIN, INT_MAX):
        assert decode(pack({"t": "connrefused", "code": value})).code == value


@pytest.mark.parametrize(
    "payload",
    [
        pack([1, 2]),
        pack("welcome"),
        pack({"type": "welcome"}),
        pack({"t": "no-such-message"}),
        pack({"t": 1}),
        pack({"t": b"welcome"}),
        pack({"t": "peer", "certificate": b"c"}),  # a nested record is not a message
        pack({"t": "welcome", 1: 2}),
        pack({"t": "welcome", b"k": 2}),
        pack({"t": "welcome", "x": msgpack.ExtType(5, b"abc")}),
        pack({"t": "welcome", "x": msgpack.Timestamp(1)}),
        pack({"t": "welcome"}) + b"\x00",  # trailing bytes
        b"\x82\xa1t\xa7welcome\xa1t\xa7welcome",  # duplicate key
        b"\x81\xa1t\xa7welcom\xff",  # invalid UTF-8
        b"",
        b"\xc1",  # the one byte msgpack never uses
    ],
)
def test_malformed_payloads_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(payload)
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_excessive_nesting_is_rejected_even_in_unknown_fields() -> None:
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = [deep]
    with pytest.raises(ProtocolError):
        decode(pack({"t": "welcome", "x": deep}))
    shallow: Any = 1
    for _ in range(MAX_NESTING - 2):
        shallow = [shallow]
    assert decode(pack({"t": "welcome", "x": shallow})) == messages.Welcome()


def test_pathological_nesting_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode(b"\x91" * 60000 + b"\x90")


# --- garbage in, ProtocolError out --------------------------------------------------------


@PROFILE
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_protocol_error(payload: bytes) -> None:
    try:
        msg = decode(payload)
    except ProtocolError as err:
        assert err.code == CloseCode.PROTOCOL_ERROR
    else:
        assert type(msg) in MESSAGE_TAG


@PROFILE
@given(tag=st.sampled_from([*sorted(MESSAGE_TYPES), "bogus"]), fields=st.dictionaries(st.text(max_size=12), msgpack_values, max_size=5), use_field_names=st.data())
def test_structured_garbage_decodes_or_raises_protocol_error(
    tag: str, fields: dict[str, Any], use_field_names: st.DataObject
) -> None:
    cls = MESSAGE_TYPES.get(tag)
    if cls is not None:
        # Aim the garbage at real field names, so the type checks are what is exercised.
        for f in dataclasses.fields(cls):
            if use_field_names.draw(st.booleans()):
                fields[f.name] = use_field_names.draw(msgpack_values)
    try:
        msg = decode(pack({**fields, "t": tag}))
    except ProtocolError as err:
        assert err.code == CloseCode.PROTOCOL_ERROR
    else:
        assert type(msg) is cls


@PROFILE
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_arbitrary_bytes_to_frame_decoder_raise_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in chunked(data, cuts):
            decoder.feed(chunk)
            while decoder.next_message() is not None:
                pass
    except ProtocolError:
        # Broken for good: it keeps refusing rather than resynchronising on garbage.
        with pytest.raises(ProtocolError):
            decoder.next_message()


@PROFILE
@given(length=st.integers(MAX_FRAME_SIZE + 1, 2**32 - 1), split=st.integers(1, HEADER_SIZE))
def test_oversized_length_prefix_is_refused_before_any_payload(length: int, split: int) -> None:
    header = length.to_bytes(HEADER_SIZE, "big")
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header[:split])
        decoder.feed(header[split:])
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert decoder.buffered <= HEADER_SIZE


def test_largest_frame_is_accepted_and_one_more_byte_is_not() -> None:
    filler = MAX_FRAME_SIZE - len(pack({"t": "welcome", "x": b""})) - 1  # bin8 -> bin16: the header grows by 1
    payload = pack({"t": "welcome", "x": b"a" * filler})
    assert len(payload) == MAX_FRAME_SIZE
    decoder = FrameDecoder()
    decoder.feed(framed(payload))
    assert decoder.next_message() == messages.Welcome()
    with pytest.raises(ProtocolError):
        decoder.feed((MAX_FRAME_SIZE + 1).to_bytes(HEADER_SIZE, "big"))


def test_decoder_never_buffers_more_than_one_frame_and_header() -> None:
    decoder = FrameDecoder()
    decoder.feed(framed(b"\x00" * 10)[:HEADER_SIZE])
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00" * (MAX_FRAME_SIZE + 1))
    assert decoder.buffered == HEADER_SIZE


def test_encode_refuses_wrong_python_types_as_internal_error() -> None:
    with pytest.raises(ProtocolError) as info:
        encode(messages.Announce(name="n", role="source", route="any", certificate="not bytes"))  # type: ignore[arg-type]
    assert info.value.code == CloseCode.INTERNAL_ERROR
    with pytest.raises(ProtocolError):
        encode(messages.Hello(certificate=b"c", grants=[b"g"]))  # type: ignore[arg-type]  # a list, not a tuple
    with pytest.raises(ProtocolError):
        encode(messages.PeerInfo(certificate=b"c"))  # a nested record is not a message
    with pytest.raises(ProtocolError):
        encode(messages.Connect(name="\ud800"))  # no UTF-8 form


def test_frame_refuses_an_oversized_message() -> None:
    with pytest.raises(ProtocolError) as info:
        frame(messages.Hello(certificate=b"x" * MAX_FRAME_SIZE))
    assert info.value.code == CloseCode.INTERNAL_ERROR


def test_int_and_str_enums_encode_as_their_plain_values() -> None:
    from connet_core.model import Role, RoutePolicy

    refused = messages.ConnectRefused(code=CloseCode.NOT_FOUND)
    assert msgpack.unpackb(encode(refused), raw=False)["code"] == 14
    assert decode(encode(refused)) == refused
    announce = messages.Announce(name="n", role=Role.SOURCE, route=RoutePolicy.RELAY, certificate=b"c")
    wire = msgpack.unpackb(encode(announce), raw=False)
    assert (type(wire["role"]), wire["role"], wire["route"]) == (str, "source", "relay")
    assert decode(encode(announce)) == announce


# --- decoding limits sized for the expected type (the first message before authentication) --

from connet_core.protocol.codec import EXTRA_FIELDS, GENERAL_LIMITS, limits_for  # noqa: E402

BOUNDED = sorted(tag for tag, cls in MESSAGE_TYPES.items() if limits_for(cls) != GENERAL_LIMITS)
small_extras = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k != "t"),
    st.none() | st.integers(-5, 5) | st.text(max_size=8) | st.lists(st.integers(0, 9), max_size=4),
    max_size=EXTRA_FIELDS // 2,
)


def test_the_messages_read_before_authentication_are_bounded() -> None:
    for cls in (messages.Authenticate, messages.RelayRegister, messages.Hello, messages.Proof, messages.Challenge,
                messages.Connect, (messages.Connect, messages.Hello)):
        assert limits_for(cls).max_containers is not None, cls


@pytest.mark.parametrize("tag", BOUNDED)
@PROFILE
@given(data=st.data(), extras=small_extras)
def test_expected_type_limits_accept_every_valid_message(tag: str, data: st.DataObject, extras: dict[str, Any]) -> None:
    """Limits sized for a type never refuse a message of that type, with a few unknown fields."""
    msg = data.draw(record_strategy(MESSAGE_TYPES[tag]))
    plain = to_plain(msg)
    extras = {k: v for k, v in extras.items() if k not in plain}
    assert decode(pack({**plain, **extras}), type(msg)) == msg
    largest = dataclasses.replace(msg, grants=(b"g" * 40,) * 1024) if isinstance(msg, messages.Hello) else msg
    decoder = FrameDecoder()
    decoder.feed(frame(largest))
    assert decoder.next_message(type(msg)) == largest


@pytest.mark.parametrize("tag", BOUNDED)
@pytest.mark.parametrize("padding", ["array", "map", "tree"])
def test_expected_type_limits_refuse_a_padded_frame(tag: str, padding: str) -> None:
    """The same bytes decode under the general limits (unknown fields are ignored) but are
    refused, as PROTOCOL_ERROR, when the type is expected: padding cannot buy decoding time."""
    msg = sample_record(MESSAGE_TYPES[tag])
    plain = to_plain(msg)
    pad: dict[str, Any] = {
        "array": {"pad": [[]] * 20_000},
        "map": {f"k{i}": [] for i in range(EXTRA_FIELDS * 4)},
        "tree": {"pad": [[[[]] * 4] * 4] * 4},
    }[padding]
    payload = pack({**plain, **pad})
    assert decode(payload) == msg
    with pytest.raises(ProtocolError) as refused:
        decode(payload, type(msg))
    assert refused.value.code == CloseCode.PROTOCOL_ERROR
    decoder = FrameDecoder()
    decoder.feed(framed(payload))
    with pytest.raises(ProtocolError):
        decoder.next_message(type(msg))
