"""msgpack encoding of the typed messages, with explicit unpacking limits.

A message goes on the wire as `[TAG, field1, field2, ...]` (nested messages likewise).
Decoding checks the tag, the field count and every field's type, so a stage only ever
sees a well-formed message object or a ProtocolError. Never pickle.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

import msgpack

from voxpipe.ipc import messages
from voxpipe.ipc.errors import ProtocolError

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a message body; audio frames are limited separately
# The frame length is checked before unpacking (unpackb has no buffer limit of its own).
_UNPACK_LIMITS = dict(
    max_str_len=MAX_FRAME_BYTES,
    max_bin_len=MAX_FRAME_BYTES,  # a request's reference clip (bounded by the frame)
    max_array_len=256 * 1024,
    max_map_len=4096,
    max_ext_len=0,
)

_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in messages.ALL_MESSAGES}
Checker = Callable[[Any], Any]
_CHECKERS: dict[type, list[tuple[str, Checker]]] = {}


def encode(message: Any) -> bytes:
    return msgpack.packb(_to_wire(message), use_bin_type=True)


def _to_wire(value: Any) -> Any:
    names = _FIELD_NAMES.get(type(value))
    if names is not None:  # a message (the field names are cached: dataclasses.fields() is slow)
        return [value.TAG, *(_to_wire(getattr(value, name)) for name in names)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [value.TAG, *(_to_wire(getattr(value, f.name)) for f in dataclasses.fields(value))]
    if isinstance(value, (list, tuple)):
        # Lists in messages hold one type; only lists of messages need converting (walking
        # a chunk's phoneme ids one by one cost ten times the packing itself).
        return [_to_wire(v) for v in value] if value and dataclasses.is_dataclass(value[0]) else value
    return value


def decode(frame: bytes | memoryview, expect: tuple[type, ...] | None = None) -> Any:
    """Decode one message body; raise ProtocolError for anything malformed."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        wire = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"not a msgpack message: {type(exc).__name__}") from None
    message = _from_wire(wire)
    if expect is not None and not isinstance(message, expect):
        raise ProtocolError(f"unexpected message {type(message).__name__}")
    return message


def peek(frame: bytes | memoryview, cls: type, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The named fields of a `cls` message, unchecked, or None if the frame is malformed
    or another message. Costs an unpack, not decode()'s checks: for answers that must
    not wait (refusing work when full). Anything acted upon goes through decode()."""
    if len(frame) > MAX_FRAME_BYTES:
        return None
    try:
        wire = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_UNPACK_LIMITS)
    except Exception:  # as in decode(): any failure means "not this message"
        return None
    if not isinstance(wire, list) or not wire or wire[0] != cls.TAG or type(wire[0]) is not int:
        return None
    order = _FIELD_INDEX[cls]
    if any(order[name] >= len(wire) for name in names):
        return None
    return {name: wire[order[name]] for name in names}


def _from_wire(wire: Any) -> Any:
    if not isinstance(wire, list) or not wire or type(wire[0]) is not int:
        raise ProtocolError("a message is an array that starts with an integer tag")
    cls = _BY_TAG.get(wire[0])
    if cls is None:
        raise ProtocolError(f"unknown message tag {wire[0]}")
    checkers = _checkers_for(cls)
    values = wire[1:]
    required = _REQUIRED[cls]
    if not required <= len(values) <= len(checkers):
        raise ProtocolError(f"{cls.__name__}: expected {required}..{len(checkers)} fields, got {len(values)}")
    kwargs = {}
    for (name, check), value in zip(checkers, values):
        try:
            kwargs[name] = check(value)
        except ProtocolError as exc:
            raise ProtocolError(f"{cls.__name__}.{name}: {exc}") from None
    return cls(**kwargs)


def _checkers_for(cls: type) -> list[tuple[str, Checker]]:
    cached = _CHECKERS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = [(f.name, _checker(hints[f.name])) for f in dataclasses.fields(cls)]
        _CHECKERS[cls] = cached
    return cached


def _fail(expected: str, value: Any) -> typing.NoReturn:
    raise ProtocolError(f"expected {expected}, got {type(value).__name__}")


def _checker(hint: Any) -> Checker:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_checker(a) for a in typing.get_args(hint) if a is not type(None)]
        allows_none = type(None) in typing.get_args(hint)

        def check_union(value: Any) -> Any:
            if value is None and allows_none:
                return None
            for option in options:
                try:
                    return option(value)
                except ProtocolError:
                    continue
            _fail(str(hint), value)
        return check_union
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        item = _checker(item_hint)
        return lambda value: [item(v) for v in value] if isinstance(value, list) else _fail("array", value)
    if hint is list:
        return lambda value: value if isinstance(value, list) else _fail("array", value)
    if hint is dict:
        return lambda value: value if isinstance(value, dict) else _fail("map", value)
    if hint is bool:
        return lambda value: value if isinstance(value, bool) else _fail("bool", value)
    if hint is int:
        return lambda value: value if type(value) is int else _fail("int", value)
    if hint is float:
        return lambda value: float(value) if type(value) in (int, float) else _fail("float", value)
    if hint is str:
        return lambda value: value if isinstance(value, str) else _fail("str", value)
    if hint is bytes:
        return lambda value: value if isinstance(value, bytes) else _fail("bin", value)
    if dataclasses.is_dataclass(hint):
        def check_nested(value: Any) -> Any:
            message = _from_wire(value)
            return message if isinstance(message, hint) else _fail(hint.__name__, message)
        return check_nested
    raise TypeError(f"no wire checker for {hint!r}")


# Build every checker at import time so a bad annotation fails loudly, not mid-request.
for _cls in messages.ALL_MESSAGES:
    _checkers_for(_cls)
# Per message class, computed once: field names in wire order, each name's position on
# the wire (after the tag, for peek()), and how many fields have no default.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in messages.ALL_MESSAGES}
_FIELD_INDEX: dict[type, dict[str, int]] = {
    cls: {name: i + 1 for i, name in enumerate(names)} for cls, names in _FIELD_NAMES.items()}
_REQUIRED: dict[type, int] = {
    cls: sum(1 for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING) for cls in messages.ALL_MESSAGES}
