"""The one safe codec for everything that crosses a party boundary.

Messages are frozen dataclasses registered under a versioned type name
(``"lr.HostForward/1"``). They are packed with msgpack (no extension types, no
code execution on decode) into an envelope::

    {"v": 1, "job": str, "seq": int, "sender": str, "receiver": str,
     "type": str, "body": {field: value, ...}}

Decoding validates the envelope, looks the type up in the registry, and checks
every field against the dataclass annotation: the right Python type, no
missing and no extra fields, arrays with an allowed dtype and a shape that
matches their byte length. Semantic checks (sizes against the protocol state,
ciphertext ranges) are the receiving role's job.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from vfl.exceptions import RemoteProtocolError

__all__ = ["WIRE_VERSION", "Envelope", "message", "encode_envelope", "decode_envelope", "REGISTRY"]

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 31
REGISTRY: dict[str, type] = {}
_HINTS: dict[type, dict[str, Any]] = {}
_ALLOWED_DTYPES = {"<f8": np.float64, "<i8": np.int64}

T = TypeVar("T")


def message(type_name: str) -> typing.Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a wire message called ``type_name``."""

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if type_name in REGISTRY:
            raise TypeError(f"message type {type_name!r} registered twice")
        REGISTRY[type_name] = cls
        cls.TYPE = type_name  # type: ignore[attr-defined]
        return cls

    return wrap


def type_name_of(cls_or_obj: Any) -> str:
    """The registered wire name of a message class or instance."""
    return str(cls_or_obj.TYPE)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its routing header."""

    job: str
    seq: int
    sender: str
    receiver: str
    body: Any


# ------------------------------------------------------------------ encoding
def _pack_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        dtype = value.dtype.newbyteorder("<").str
        if dtype not in _ALLOWED_DTYPES:
            raise TypeError(f"arrays of dtype {value.dtype} cannot be sent")
        arr = np.ascontiguousarray(value, dtype=_ALLOWED_DTYPES[dtype])
        return {"dtype": dtype, "shape": list(arr.shape), "data": arr.astype(dtype).tobytes()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _pack_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_pack_value(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def encode_envelope(env: Envelope) -> bytes:
    """Serialise an envelope (the body must be a registered message)."""
    body = env.body
    packed: bytes = msgpack.packb(
        {
            "v": WIRE_VERSION,
            "job": env.job,
            "seq": env.seq,
            "sender": env.sender,
            "receiver": env.receiver,
            "type": type_name_of(body),
            "body": _pack_value(body),
        },
        use_bin_type=True,
    )
    return packed


# ------------------------------------------------------------------ decoding
def _no_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed on the wire")


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _check(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union at {where}")
        return _check(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise RemoteProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list):
            raise RemoteProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is np.ndarray or origin is np.ndarray:
        return _decode_array(value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise RemoteProtocolError(f"{where}: expected a bool, got {type(value).__name__}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RemoteProtocolError(f"{where}: expected an int, got {type(value).__name__}")
        return value
    if hint is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, float):
            raise RemoteProtocolError(f"{where}: expected a float, got {type(value).__name__}")
        return value
    if hint in (str, bytes):
        if not isinstance(value, hint):
            raise RemoteProtocolError(
                f"{where}: expected {hint.__name__}, got {type(value).__name__}"
            )
        return value
    raise TypeError(f"unsupported field type {hint!r} at {where}")


def _decode_array(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise RemoteProtocolError(f"{where}: malformed array")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if dtype not in _ALLOWED_DTYPES or not isinstance(data, bytes):
        raise RemoteProtocolError(f"{where}: array dtype {dtype!r} is not allowed")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise RemoteProtocolError(f"{where}: malformed array shape")
    count = int(np.prod(shape)) if shape else 1
    if count * 8 != len(data):
        raise RemoteProtocolError(f"{where}: array shape {shape} does not match {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).astype(_ALLOWED_DTYPES[dtype]).reshape(shape)


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{where}: expected a map for {cls.__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    missing = [n for n in names if n not in value]
    extra = [k for k in value if k not in names]
    if missing or extra:
        raise RemoteProtocolError(
            f"{where}: {cls.__name__} fields missing {missing} / unexpected {extra}"
        )
    kwargs = {n: _check(value[n], hints[n], f"{where}.{n}") for n in names}
    return cls(**kwargs)


def decode_envelope(data: bytes, *, peer: str = "peer") -> Envelope:
    """Parse and type-check an envelope received from ``peer``.

    Raises
    ------
    RemoteProtocolError
        Naming ``peer`` and what was wrong.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"Message from {peer} is larger than {MAX_MESSAGE_BYTES} bytes.")
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext)
    except RemoteProtocolError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"Message from {peer} is not valid msgpack: {exc}") from None
    expected = {"v", "job", "seq", "sender", "receiver", "type", "body"}
    if not isinstance(raw, dict) or set(raw) != expected:
        raise RemoteProtocolError(f"Message from {peer} has a malformed envelope.")
    if raw["v"] != WIRE_VERSION:
        raise RemoteProtocolError(
            f"Message from {peer} uses wire version {raw['v']!r}; this vfl speaks {WIRE_VERSION}."
        )
    for key, typ in (("job", str), ("seq", int), ("sender", str), ("receiver", str), ("type", str)):
        if not isinstance(raw[key], typ):
            raise RemoteProtocolError(f"Message from {peer}: envelope field {key!r} has wrong type.")
    cls = REGISTRY.get(raw["type"])
    if cls is None:
        raise RemoteProtocolError(f"Message from {peer} has unknown type {raw['type']!r}.")
    try:
        body = _decode_dataclass(cls, raw["body"], raw["type"])
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"Message from {peer}: {exc}") from None
    return Envelope(raw["job"], raw["seq"], raw["sender"], raw["receiver"], body)
