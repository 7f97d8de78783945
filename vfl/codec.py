"""The one safe codec for everything that crosses a party boundary.

Messages are frozen dataclasses registered under a versioned type name
(``"lr.HostForward/1"``). They are packed with msgpack (no extension types, no
code execution on decode) into an envelope::

    {"v": 1, "job": str, "seq": int, "sender": str, "receiver": str,
     "type": str, "body": {field: value, ...}}

Decoding validates the envelope, looks the type up in the registry, and checks
every field against the dataclass annotation: the right Python type, no
missing and no extra fields. Beyond the types, the codec enforces the value
rules every message shares, so no role has to repeat them:

* every ``int`` field is a count, index, size, epoch, seed or bit width:
  ``0 <= v < 2**63`` (negative or wider values are refused);
* every ``float`` field and every float64 array is finite (no NaN, no ±inf);
  int64 arrays keep their full signed range (the role checks positions and
  counts against its state);
* arrays have an allowed dtype, at most :data:`MAX_ARRAY_DIMS` dimensions and
  a shape whose product (exact Python integers, checked before any numpy
  call) matches their byte length;
* containers are bounded by the message itself: msgpack is told that no
  string, byte string, array or map can be longer than the message, so a
  short message cannot make the decoder allocate a large one;
* header strings (job, sender, receiver, type) are at most
  :data:`MAX_HEADER_CHARS` characters.

Anything else that goes wrong while decoding is reported as a
:class:`~vfl.exceptions.RemoteProtocolError` naming the peer; no other
exception leaves :func:`decode_envelope` for peer input. Semantic checks
(sizes against the protocol state, ciphertext ranges) are the receiving
role's job.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from vfl.exceptions import RemoteProtocolError, VFLError

__all__ = ["WIRE_VERSION", "Envelope", "message", "encode_envelope", "decode_envelope", "REGISTRY",
           "MAX_MESSAGE_BYTES", "MAX_WIRE_INT", "MAX_ARRAY_DIMS", "MAX_HEADER_CHARS"]

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 31
#: Largest integer any int field (or the envelope's ``seq``) may carry.
MAX_WIRE_INT = (1 << 63) - 1
#: Most dimensions an array on the wire may have.
MAX_ARRAY_DIMS = 4
#: Longest job id, party name or type name in an envelope header.
MAX_HEADER_CHARS = 256
REGISTRY: dict[str, type] = {}
_HINTS: dict[type, dict[str, Any]] = {}
_ALLOWED_DTYPES = {"<f8": np.float64, "<i8": np.int64}

T = TypeVar("T")


class _SchemaError(TypeError):
    """A registered message uses an annotation the codec does not support (a local bug)."""


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
        arr = np.asarray(value, dtype=_ALLOWED_DTYPES[dtype])  # keeps 0-d arrays 0-d
        return {"dtype": dtype, "shape": list(arr.shape),
                "data": arr.astype(dtype).tobytes(order="C")}
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


def _is_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_WIRE_INT


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
            raise _SchemaError(f"unsupported union at {where}")
        return _check(value, inner[0], where)
    if origin is list or origin is tuple:
        if type(value) is not list:
            raise RemoteProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        items = [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is np.ndarray or origin is np.ndarray:
        return _decode_array(value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if hint is bool:
        if type(value) is not bool:
            raise RemoteProtocolError(f"{where}: expected a bool, got {type(value).__name__}")
        return value
    if hint is int:
        if type(value) is not int:
            raise RemoteProtocolError(f"{where}: expected an int, got {type(value).__name__}")
        if not _is_int(value):
            raise RemoteProtocolError(f"{where}: int out of range [0, 2^63)")
        return value
    if hint is float:
        if type(value) is int:
            value = float(value)  # |v| < 2^64 on the wire: always representable
        if type(value) is not float:
            raise RemoteProtocolError(f"{where}: expected a float, got {type(value).__name__}")
        if not math.isfinite(value):
            raise RemoteProtocolError(f"{where}: float is not finite")
        return value
    if hint in (str, bytes):
        if type(value) is not hint:
            raise RemoteProtocolError(
                f"{where}: expected {hint.__name__}, got {type(value).__name__}"
            )
        return value
    raise _SchemaError(f"unsupported field type {hint!r} at {where}")


def _decode_array(value: Any, where: str) -> np.ndarray:
    if type(value) is not dict or set(value) != {"dtype", "shape", "data"}:
        raise RemoteProtocolError(f"{where}: malformed array")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    if type(dtype) is not str or dtype not in _ALLOWED_DTYPES or type(data) is not bytes:
        raise RemoteProtocolError(f"{where}: array dtype or data is not allowed")
    if (type(shape) is not list or len(shape) > MAX_ARRAY_DIMS
            or not all(_is_int(s) for s in shape)):
        raise RemoteProtocolError(f"{where}: malformed array shape")
    # exact Python-int products (at most 4 factors < 2^63), checked before any numpy call;
    # the bound on the non-zero dimensions keeps numpy's own size arithmetic in range even
    # for an empty array such as shape [0, 2^62]
    if math.prod(max(s, 1) for s in shape) * 8 > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"{where}: array shape is too large")
    if math.prod(shape) * 8 != len(data):
        raise RemoteProtocolError(
            f"{where}: a {len(shape)}-d array shape does not match its {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype).astype(_ALLOWED_DTYPES[dtype]).reshape(tuple(shape))
    if arr.dtype == np.float64 and not np.isfinite(arr).all():
        raise RemoteProtocolError(f"{where}: array has values that are not finite")
    return arr


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    if type(value) is not dict:
        raise RemoteProtocolError(f"{where}: expected a map for {cls.__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    missing = [n for n in names if n not in value]
    extra = len([k for k in value if k not in names])
    if missing or extra:
        raise RemoteProtocolError(
            f"{where}: {cls.__name__} fields missing {missing} / {extra} unexpected"
        )
    kwargs = {n: _check(value[n], hints[n], f"{where}.{n}") for n in names}
    try:
        return cls(**kwargs)
    except (VFLError, ValueError, TypeError) as exc:  # a message that checks its own values
        raise RemoteProtocolError(f"{where}: {exc}") from None


_HEADER = {"v", "job", "seq", "sender", "receiver", "type", "body"}


def _unpack(data: bytes | bytearray) -> Any:
    n = len(data)
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                               ext_hook=_no_ext, max_str_len=n, max_bin_len=n, max_array_len=n,
                               max_map_len=n // 2, max_ext_len=0)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise RemoteProtocolError(f"not valid msgpack ({type(exc).__name__})") from None


def _decode(data: bytes | bytearray) -> Envelope:
    raw = _unpack(data)
    if type(raw) is not dict or set(raw) != _HEADER:
        raise RemoteProtocolError("malformed envelope")
    if type(raw["v"]) is not int or raw["v"] != WIRE_VERSION:
        shown = raw["v"] if type(raw["v"]) is int else type(raw["v"]).__name__
        raise RemoteProtocolError(f"wire version {shown}; this vfl speaks {WIRE_VERSION}")
    for key in ("job", "sender", "receiver", "type"):
        if type(raw[key]) is not str or len(raw[key]) > MAX_HEADER_CHARS:
            raise RemoteProtocolError(f"envelope field {key!r} has wrong type or length")
    if not _is_int(raw["seq"]):
        raise RemoteProtocolError("envelope field 'seq' has wrong type or range")
    cls = REGISTRY.get(raw["type"])
    if cls is None:
        raise RemoteProtocolError(f"unknown type {raw['type'][:64]!r}")
    body = _decode_dataclass(cls, raw["body"], raw["type"])
    return Envelope(raw["job"], raw["seq"], raw["sender"], raw["receiver"], body)


def decode_envelope(data: bytes, *, peer: str = "peer",
                    max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Parse and type-check an envelope received from ``peer``.

    Parameters
    ----------
    data : bytes
        The message as received.
    peer : str
        Who sent it (named in every error).
    max_bytes : int
        Longest message accepted (the transport passes its job-derived limit).

    Raises
    ------
    RemoteProtocolError
        Naming ``peer`` and what was wrong; the only exception peer input can cause.
    """
    if not isinstance(data, bytes | bytearray):
        raise RemoteProtocolError(f"Message from {peer} is not a byte string.")
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"Message from {peer} is larger than {max_bytes} bytes.")
    try:
        return _decode(data)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"Message from {peer}: {exc}") from None
    except _SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure on peer bytes is the peer's
        raise RemoteProtocolError(
            f"Message from {peer} could not be decoded ({type(exc).__name__})."
        ) from None
