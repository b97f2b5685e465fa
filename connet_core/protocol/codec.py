"""The wire codec: one message <-> one msgpack payload (sans-I/O).

A message is a msgpack map ``{"t": tag, field: value, ...}`` whose tag comes from
:data:`~connet_core.protocol.messages.MESSAGE_TYPES`. Nested records (``PeerInfo``,
``RelayInfo``) are maps too, tagged from ``NESTED_TYPES`` under the same ``"t"`` key.

The field types of every message are read once from its dataclass annotations (and cached):
``str``, ``bytes``, ``int``, ``bool``, ``tuple[X, ...]``, a nested record, or ``X | None``.
Decoding is strict about types (a bool is not an int, a str is not bytes) and lenient about
extras (unknown fields are ignored, so a newer peer may add fields). Whatever the input,
:func:`decode` raises nothing but :class:`~connet_core.errors.ProtocolError` with
``CloseCode.PROTOCOL_ERROR``. :func:`encode` refuses what :func:`decode` would refuse, with
``CloseCode.INTERNAL_ERROR`` (the fault is local), so we never send what a peer must reject.

**Decoding cost when the type is known.** A reader that expects particular message types
(``decode(payload, expected)``: the first message of a session, before the peer is
authenticated or has proven its key) gets limits sized for those types (:func:`limits_for`):
a map may hold the type's fields plus :data:`EXTRA_FIELDS` unknown ones, an array the
declared ``max_items`` of its field (``dataclasses.field(metadata={"max_items": N})``) or
:data:`EXTRA_ITEMS`, and the whole payload at most the containers the type can need plus
:data:`EXTRA_CONTAINERS`, counted while msgpack builds them. A 64 KiB frame of tens of
thousands of empty arrays is then refused after a few dozen objects instead of costing tens
of milliseconds of decoding before authentication. Types with an array of unbounded length
(``PeersUpdate``, ``Announce``, ...) are decoded with the general limits.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable

import msgpack

from connet_core.errors import ProtocolError
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import MESSAGE_TYPES, NESTED_TYPES

# The largest payload of one frame; framing.py enforces it on the wire.
MAX_FRAME_SIZE = 64 * 1024
# Integers on the wire are signed 64-bit; anything wider is garbage, not a port or a code.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
# Containers (maps and arrays) nested deeper than this are rejected, known field or not.
# A message's own deepest path is message > tuple > record > tuple: 4.
MAX_NESTING = 16

TAG_KEY = "t"

Message = Any  # an instance of one of the MESSAGE_TYPES classes

# What a message of an expected type may carry beyond its own schema: room for a newer
# peer's additions, small enough that decoding stays a few microseconds.
EXTRA_FIELDS = 8
EXTRA_ITEMS = 8
EXTRA_CONTAINERS = 8

_TAG_OF_MESSAGE: dict[type, str] = {cls: tag for tag, cls in MESSAGE_TYPES.items()}
_TAG_OF_NESTED: dict[type, str] = {cls: tag for tag, cls in NESTED_TYPES.items()}


class _Invalid(Exception):
    """A value does not fit its declared type; turned into ProtocolError at the boundary."""


# --- the schema: per field, a checker that validates and converts one value --------------

# A converter takes a wire value (decode) or a Python value (encode) and returns the value
# to build/pack, or raises _Invalid. ``for_wire`` selects the direction.
_Convert = Callable[[Any, bool], Any]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    convert: _Convert
    required: bool
    make_default: Callable[[], Any] | None  # for a field absent on the wire; None if required


@dataclass(frozen=True, slots=True)
class _Schema:
    cls: type
    tag: str
    fields: tuple[_Field, ...]


def _scalar(expected: type) -> _Convert:
    def convert(value: Any, for_wire: bool) -> Any:
        if for_wire:
            # Our own enums (CloseCode, Role, RoutePolicy) subclass int/str: msgpack packs them
            # as the plain value. A bool is never an int.
            valid = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        else:
            valid = type(value) is expected  # what msgpack builds: exact types only
        if not valid:
            raise _Invalid(f"expected {expected.__name__}, got {type(value).__name__}")
        if expected is int and not INT_MIN <= value <= INT_MAX:
            raise _Invalid("integer out of the signed 64-bit range")
        return value

    return convert


def _tuple_of(item: _Convert) -> _Convert:
    def convert(value: Any, for_wire: bool) -> Any:
        # Encoding takes the dataclass's tuple; msgpack hands arrays back as lists.
        if type(value) is not (tuple if for_wire else list):
            raise _Invalid(f"expected an array, got {type(value).__name__}")
        items = [item(v, for_wire) for v in value]
        return items if for_wire else tuple(items)

    return convert


def _optional(inner: _Convert) -> _Convert:
    def convert(value: Any, for_wire: bool) -> Any:
        return None if value is None else inner(value, for_wire)

    return convert


def _record(cls: type) -> _Convert:
    def convert(value: Any, for_wire: bool) -> Any:
        schema = _schema_of(cls)  # resolved lazily: records may be declared in any order
        if for_wire:
            if type(value) is not cls:
                raise _Invalid(f"expected {cls.__name__}, got {type(value).__name__}")
            return _to_wire(schema, value)
        if type(value) is not dict:
            raise _Invalid(f"expected a {cls.__name__} map, got {type(value).__name__}")
        if value.get(TAG_KEY) != schema.tag:
            raise _Invalid(f"expected a {cls.__name__} record tagged {schema.tag!r}")
        return _from_wire(schema, value)

    return convert


def _converter_for(annotation: Any, owner: type) -> _Convert:
    if annotation in (str, bytes, int, bool):
        return _scalar(annotation)
    if annotation in _TAG_OF_NESTED:
        return _record(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_of(_converter_for(args[0], owner))
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return _optional(_converter_for(inner, owner))
    raise ProtocolError(
        f"{owner.__name__}: field type {annotation!r} has no wire form", CloseCode.INTERNAL_ERROR
    )


@functools.cache
def _schema_of(cls: type) -> _Schema:
    """The schema of a message or nested record class, built once from its annotations."""
    tag = _TAG_OF_MESSAGE.get(cls) or _TAG_OF_NESTED.get(cls)
    if tag is None or not dataclasses.is_dataclass(cls):
        raise ProtocolError(f"{cls.__name__} is not a registered message", CloseCode.INTERNAL_ERROR)
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.name == TAG_KEY:
            raise ProtocolError(f"{cls.__name__}: field name {TAG_KEY!r} is the tag", CloseCode.INTERNAL_ERROR)
        make_default: Callable[[], Any] | None
        if f.default is not MISSING:
            make_default = functools.partial(_same, f.default)
        elif f.default_factory is not MISSING:
            make_default = f.default_factory
        else:
            make_default = None
        fields.append(_Field(f.name, _converter_for(hints[f.name], cls), make_default is None, make_default))
    return _Schema(cls, tag, tuple(fields))


def _same(value: Any) -> Any:
    return value


def _to_wire(schema: _Schema, obj: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {TAG_KEY: schema.tag}
    for f in schema.fields:
        try:
            wire[f.name] = f.convert(getattr(obj, f.name), True)
        except _Invalid as err:
            raise _Invalid(f"{schema.cls.__name__}.{f.name}: {err}") from None
    return wire


def _from_wire(schema: _Schema, wire: dict[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for f in schema.fields:
        if f.name in wire:
            try:
                values[f.name] = f.convert(wire[f.name], False)
            except _Invalid as err:
                raise _Invalid(f"{schema.cls.__name__}.{f.name}: {err}") from None
        elif f.required:
            raise _Invalid(f"{schema.cls.__name__}: missing field {f.name!r}")
        else:
            values[f.name] = f.make_default()  # type: ignore[misc]  # not required: set
    # Fields not in the schema are ignored: that is how a newer peer adds fields.
    return schema.cls(**values)


# --- the raw msgpack layer -----------------------------------------------------------------


def _reject_ext(code: int, data: bytes) -> Any:
    raise _Invalid(f"msgpack extension type {code} is not allowed")


def _map_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if type(key) is not str:
            raise _Invalid("map keys must be strings")
        if key in result:
            raise _Invalid(f"duplicate map key {key!r}")
        result[key] = value
    return result


def _check_nesting(root: Any) -> None:
    """Reject containers nested deeper than MAX_NESTING, in unknown fields as well."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if type(value) is dict:
            children: Any = value.values()
        elif type(value) is list:
            children = value
        else:
            continue
        if depth > MAX_NESTING:
            raise _Invalid(f"containers nested deeper than {MAX_NESTING}")
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on one payload's msgpack: entries per map, items per array, and maps plus
    arrays in all (None: bounded by the frame size only)."""

    max_map_len: int = MAX_FRAME_SIZE
    max_array_len: int = MAX_FRAME_SIZE
    max_containers: int | None = None


GENERAL_LIMITS = DecodeLimits()


class _ContainerBudget:
    """Counts the maps and arrays msgpack builds; raises once there are too many, so an
    oversized tree is abandoned after ``left`` objects, not after all of them."""

    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def _spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Invalid("more maps and arrays than the expected message can hold")

    def list_hook(self, items: list) -> list:
        self._spend()
        return items

    def pairs_hook(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        self._spend()
        return _map_from_pairs(pairs)


def _unpack(payload: bytes, limits: DecodeLimits = GENERAL_LIMITS) -> Any:
    hooks: dict[str, Any] = {"object_pairs_hook": _map_from_pairs}
    if limits.max_containers is not None:
        budget = _ContainerBudget(limits.max_containers)
        hooks = {"object_pairs_hook": budget.pairs_hook, "list_hook": budget.list_hook}
    return msgpack.unpackb(
        payload,
        raw=False,  # str is UTF-8 text; invalid UTF-8 raises UnicodeDecodeError
        strict_map_key=True,
        use_list=True,
        ext_hook=_reject_ext,
        max_str_len=MAX_FRAME_SIZE,
        max_bin_len=MAX_FRAME_SIZE,
        max_array_len=limits.max_array_len,
        max_map_len=limits.max_map_len,
        max_ext_len=0,
        **hooks,
    )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What one record can need: its widest map, its longest array and its container count
    (None when an array field declares no ``max_items``)."""

    map_len: int
    array_len: int
    containers: int | None


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _shape_of(cls: type) -> _Shape:
    map_len, array_len, containers = len(dataclasses.fields(cls)) + 1, 0, 1  # + the tag
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if annotation in _TAG_OF_NESTED:
            inner = _shape_of(annotation)
            map_len, array_len = max(map_len, inner.map_len), max(array_len, inner.array_len)
            containers = _add(containers, inner.containers)
        elif typing.get_origin(annotation) is tuple:
            item = typing.get_args(annotation)[0]
            max_items = f.metadata.get("max_items")
            if max_items is None:
                containers = None
                continue
            array_len = max(array_len, max_items)
            per_item: int | None = 0
            if item in _TAG_OF_NESTED:
                inner = _shape_of(item)
                map_len, array_len = max(map_len, inner.map_len), max(array_len, inner.array_len)
                per_item = inner.containers
            containers = _add(containers, _add(1, None if per_item is None else per_item * max_items))
    return _Shape(map_len, array_len, containers)


@functools.cache
def limits_for(expected: type | tuple[type, ...]) -> DecodeLimits:
    """The decoding limits for a payload that must be one of ``expected``: the widest of
    what each type can need, plus room for unknown fields; :data:`GENERAL_LIMITS` if one of
    them has an array of unbounded length."""
    classes = expected if isinstance(expected, tuple) else (expected,)
    shapes = [_shape_of(cls) for cls in classes]
    if not shapes or any(shape.containers is None for shape in shapes):
        return GENERAL_LIMITS
    return DecodeLimits(
        max_map_len=max(shape.map_len for shape in shapes) + EXTRA_FIELDS,
        max_array_len=max(max(shape.array_len for shape in shapes), EXTRA_ITEMS),
        max_containers=max(shape.containers or 0 for shape in shapes) + EXTRA_CONTAINERS,
    )


# --- public API -------------------------------------------------------------------------


def tag_of(msg_type: type) -> str:
    """The wire tag of a message class. Raises ProtocolError for an unregistered class."""
    tag = _TAG_OF_MESSAGE.get(msg_type)
    if tag is None:
        raise ProtocolError(f"{msg_type.__name__} is not a registered message", CloseCode.INTERNAL_ERROR)
    return tag


def encode(msg: Message) -> bytes:
    """The msgpack payload of ``msg`` (no length prefix; see framing.frame).

    Raises ProtocolError (CloseCode.INTERNAL_ERROR) if ``msg`` is not a registered message or
    a field holds a value of the wrong type, so a bug here never reaches the peer.
    """
    cls = type(msg)
    if cls not in _TAG_OF_MESSAGE:
        raise ProtocolError(f"{cls.__name__} is not a registered message", CloseCode.INTERNAL_ERROR)
    try:
        wire = _to_wire(_schema_of(cls), msg)
        return msgpack.packb(wire, use_bin_type=True)
    except _Invalid as err:
        raise ProtocolError(f"cannot encode: {err}", CloseCode.INTERNAL_ERROR) from None
    except UnicodeEncodeError:  # a str with lone surrogates has no UTF-8 form
        raise ProtocolError(f"cannot encode {cls.__name__}: text is not valid Unicode", CloseCode.INTERNAL_ERROR) from None


def decode(payload: bytes, expected: type | tuple[type, ...] | None = None) -> Message:
    """The message in one payload. Raises ProtocolError (CloseCode.PROTOCOL_ERROR) and
    nothing else for any input that is not exactly one well-typed, known message.

    ``expected``: the message types the caller will accept. It only sizes the decoding
    limits (:func:`limits_for`); checking the type of the result stays the caller's job."""
    if len(payload) > MAX_FRAME_SIZE:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_FRAME_SIZE}")
    try:
        wire = _unpack(payload, GENERAL_LIMITS if expected is None else limits_for(expected))
        if type(wire) is not dict:
            raise _Invalid(f"a message is a map, got {type(wire).__name__}")
        _check_nesting(wire)
        tag = wire.get(TAG_KEY)
        if type(tag) is not str:
            raise _Invalid(f"missing or non-string type tag {TAG_KEY!r}")
        cls = MESSAGE_TYPES.get(tag)
        if cls is None:
            raise _Invalid(f"unknown message type {tag!r}")
        return _from_wire(_schema_of(cls), wire)
    except _Invalid as err:
        raise ProtocolError(f"malformed message: {err}") from None
    # msgpack reports malformed, truncated, trailing or over-limit input (and invalid UTF-8)
    # as ValueError subclasses, out-of-data as UnpackException; a pathological nesting the C
    # unpacker does not catch would surface as RecursionError.
    except (ValueError, msgpack.UnpackException, RecursionError) as err:
        raise ProtocolError(f"malformed msgpack: {type(err).__name__}: {str(err)[:120]}") from None
