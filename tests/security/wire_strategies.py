"""Hypothesis strategies over the wire schema, shared by the codec and handler fuzz tests.

Everything is derived from the annotations of the registered message
dataclasses (``vfl.codec.REGISTRY``), so a message type or field added later
is fuzzed without touching these tests.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

import vfl
from vfl.codec import MAX_ARRAY_DIMS, MAX_WIRE_INT, REGISTRY
from vfl.exceptions import VFLError

#: Registered types that are never sent on their own (only nested in another message).
NESTED_ONLY = {"lr.TrainConfig/4"}


def import_all_messages() -> dict[str, type]:
    """Import every vfl module (so every ``@message`` registers); return the registry."""
    for name in ("vfl.lr.messages", "vfl.lr.config", "vfl.psi.messages", "vfl.binning.messages",
                 "vfl.messages", "vfl.transport.base"):
        importlib.import_module(name)
    for mod in pkgutil.walk_packages(vfl.__path__, "vfl."):
        if "._proto" not in mod.name:
            importlib.import_module(mod.name)
    return dict(REGISTRY)


def hints(cls: type) -> dict[str, Any]:
    """The init fields of a message dataclass and their annotations."""
    all_hints = typing.get_type_hints(cls)
    return {f.name: all_hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _optional_inner(hint: Any) -> Any | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return None


def is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


# --------------------------------------------------------------- valid values
WIRE_INTS = st.one_of(st.integers(0, 300), st.integers(0, MAX_WIRE_INT))
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def arrays(draw: st.DrawFn, dtype: Any = None) -> np.ndarray:
    """A small array of a dtype the codec allows, with finite values."""
    dt = draw(st.sampled_from([np.float64, np.int64])) if dtype is None else dtype
    ndim = draw(st.integers(0, 2))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    size = math.prod(shape)
    elem = FINITE if dt is np.float64 else st.integers(-(2**63), 2**63 - 1)
    values = draw(st.lists(elem, min_size=size, max_size=size))
    return np.asarray(values, dtype=dt).reshape(shape)


def value_for(hint: Any) -> st.SearchStrategy[Any]:
    """Codec-valid values of an annotated field type."""
    inner = _optional_inner(hint)
    if inner is not None:
        return st.one_of(st.none(), value_for(inner))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        items = st.lists(value_for(typing.get_args(hint)[0]), max_size=4)
        return items if origin is list else items.map(tuple)
    if hint is np.ndarray or origin is np.ndarray:
        return arrays()
    if is_dataclass_type(hint):
        return message_of(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return WIRE_INTS
    if hint is float:
        return FINITE
    if hint is str:
        return st.text(max_size=12)
    if hint is bytes:
        return st.binary(max_size=48)
    if hint is Any:
        return st.none()
    raise TypeError(f"no strategy for the wire type {hint!r}: teach tests/security/wire_strategies.py")


def message_of(cls: type) -> st.SearchStrategy[Any]:
    """Codec-valid instances of a registered message (or nested) dataclass.

    A message that checks its own values when made (``TrainConfig``) gets
    every drawn field its values allow, the default for the others.
    """
    fields_ = {name: value_for(h) for name, h in hints(cls).items()}
    return st.fixed_dictionaries(fields_).map(lambda drawn: _construct(cls, drawn))


def _examples() -> dict[type, Any]:
    """A valid instance of each self-checking message with array fields (arrays have no zero)."""
    from vfl.lr.messages import CalibrationReport

    i64, f64 = np.int64, np.float64
    return {CalibrationReport: CalibrationReport(
        0, 1.0, 0.0, np.zeros(4, f64), np.zeros(4, f64), np.array([2], i64),
        np.array([1], i64), np.array([0.5], f64), np.array([0.5], f64))}


def _construct(cls: type, drawn: dict[str, Any]) -> Any:
    """``cls(**drawn)``, or with fields reset (to the default, else a zero) until it checks."""
    fix = dict(drawn)
    example = _examples().get(cls)
    for f in dataclasses.fields(cls):
        try:
            return cls(**fix)
        except VFLError:
            value = fix[f.name]
            fix[f.name] = (f.default if f.default is not dataclasses.MISSING
                           else type(value)() if isinstance(value, int | float | str | bytes)
                           else getattr(example, f.name) if example is not None
                           else value)
    return cls(**fix)


# ------------------------------------------------------- the codec's contract
def assert_well_typed(value: Any, hint: Any, where: str = "body") -> None:
    """What :func:`vfl.codec.decode_envelope` promises about every value it returns."""
    inner = _optional_inner(hint)
    if inner is not None:
        if value is not None:
            assert_well_typed(value, inner, where)
        return
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        assert type(value) is origin, where
        for i, v in enumerate(value):
            assert_well_typed(v, typing.get_args(hint)[0], f"{where}[{i}]")
    elif hint is np.ndarray or origin is np.ndarray:
        assert isinstance(value, np.ndarray) and value.dtype in (np.float64, np.int64), where
        assert value.ndim <= MAX_ARRAY_DIMS, where
        if value.dtype == np.float64:
            assert np.isfinite(value).all(), where
    elif is_dataclass_type(hint):
        assert type(value) is hint, where
        for name, h in hints(hint).items():
            assert_well_typed(getattr(value, name), h, f"{where}.{name}")
    elif hint is int:
        assert type(value) is int and 0 <= value <= MAX_WIRE_INT, where
    elif hint is float:
        assert type(value) is float and math.isfinite(value), where
    elif hint in (bool, str, bytes):
        assert type(value) is hint, where


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats arrays by dtype, shape and content."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same_value(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, list | tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same_value(x, y) for x, y in zip(a, b, strict=True)))
    return type(a) is type(b) and bool(a == b)


# ---------------------------------------------- codec-valid semantic mutations
@dataclass(frozen=True)
class Mutation:
    """Change one value, reached by ``path`` (field names, list indices), of a message.

    ``op`` is applied to the live value when the message is intercepted, so
    relative changes (flip a bit, drop an element) act on that run's values.
    """

    path: tuple[str | int, ...]
    op: str
    arg: Any = None

    def describe(self) -> str:
        where = ".".join(str(p) for p in self.path) or "<body>"
        arg = self.arg
        if isinstance(arg, bytes | np.ndarray) or (isinstance(arg, list) and len(arg) > 4):
            arg = f"<{type(arg).__name__} of {len(arg)}>"
        elif callable(arg):
            arg = getattr(arg, "__name__", "fn")
        return f"{where}: {self.op}({arg!r})"

    def apply(self, body: Any) -> Any:
        return _apply(body, self.path, self.op, self.arg)


def _unchecked_replace(value: Any, name: str, new: Any) -> Any:
    """``dataclasses.replace`` without the checks a message runs on itself when made.

    A deviating peer encodes whatever it likes; the receiver's codec (which
    rebuilds the message, checks included) is what must refuse it.
    """
    try:
        return dataclasses.replace(value, **{name: new})
    except VFLError:
        out = copy.copy(value)
        object.__setattr__(out, name, new)
        return out


def _apply(value: Any, path: tuple[str | int, ...], op: str, arg: Any) -> Any:
    if not path:
        return _leaf(value, op, arg)
    head, rest = path[0], path[1:]
    if isinstance(head, str):
        return _unchecked_replace(value, head, _apply(getattr(value, head), rest, op, arg))
    items = list(value)
    if not items:
        return value
    i = min(head, len(items) - 1)
    items[i] = _apply(items[i], rest, op, arg)
    return items if isinstance(value, list) else tuple(items)


def _leaf(value: Any, op: str, arg: Any) -> Any:  # noqa: C901 - one branch per operator
    if op == "set":
        return arg
    if op == "call":  # a targeted regression's own change of the live value
        return arg(value)
    if op == "int_add":
        return max(0, min(MAX_WIRE_INT, value + arg))
    if op == "float_scale":
        out = value * arg
        return out if math.isfinite(out) else 1e300
    if op == "not":
        return not value
    if op == "bytes_truncate":
        return value[: max(0, len(value) - arg)]
    if op == "bytes_extend":
        return value + np.random.default_rng(arg[0]).bytes(arg[1])
    if op == "bytes_flip":
        if not value:
            return b"\x01"
        pos = arg[0] % len(value)
        return value[:pos] + bytes([value[pos] ^ (1 << arg[1])]) + value[pos + 1:]
    if op == "bytes_fill":
        return bytes([arg]) * len(value)
    if op == "bytes_random":
        return np.random.default_rng(arg).bytes(len(value))
    if op == "bytes_double":
        return value + value
    if op == "bytes_swap_halves":
        h = len(value) // 2
        return value[h:] + value[:h]
    if op == "list_clear":
        return type(value)()
    if op == "list_drop":
        items = list(value)
        if items:
            del items[arg % len(items)]
        return items if isinstance(value, list) else tuple(items)
    if op == "list_dup":
        items = list(value)
        if items:
            items.append(items[arg % len(items)])
        return items if isinstance(value, list) else tuple(items)
    if op == "list_reverse":
        return type(value)(reversed(list(value)))
    if op == "array_drop":
        return value.reshape(-1)[:-1] if value.size else value.reshape(-1)
    if op == "array_append":
        flat = value.reshape(-1)
        return np.concatenate([flat, flat[:1] if flat.size else np.zeros(1, flat.dtype)])
    if op == "array_as_column":
        return value.reshape(-1, 1)
    if op == "array_other_dtype":
        if value.dtype == np.float64:
            return value.astype(np.int64)
        return value.astype(np.float64)
    if op == "array_set_elem":
        flat = value.reshape(-1).copy()
        if flat.size:
            v = arg[1]
            if flat.dtype == np.int64:
                v = max(-(2**63), min(2**63 - 1, int(v)))
            flat[arg[0] % flat.size] = v
        return flat.reshape(value.shape)
    raise AssertionError(f"unknown mutation {op}")


INTERESTING_INTS = st.sampled_from(
    [0, 1, 2, 3, 7, 64, 255, 256, 1023, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, MAX_WIRE_INT])
INTERESTING_FLOATS = st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, -5e-324, 1e300, -1e300, 1.7976931348623157e308,
     -1.7976931348623157e308, 2.0**63, -(2.0**63), 2.0**64])


@st.composite
def _leaf_mutation(draw: st.DrawFn, hint: Any, value: Any) -> tuple[str, Any]:
    if hint is int:
        return draw(st.one_of(
            st.tuples(st.just("set"), st.one_of(INTERESTING_INTS, WIRE_INTS)),
            st.tuples(st.just("int_add"), st.sampled_from([-2, -1, 1, 2, 1000]))))
    if hint is float:
        return draw(st.one_of(
            st.tuples(st.just("set"), st.one_of(INTERESTING_FLOATS, FINITE)),
            st.tuples(st.just("float_scale"), st.sampled_from([-1.0, 0.0, 2.0, 1e10, 1e-10]))))
    if hint is bool:
        return ("not", None)
    if hint is str:
        return ("set", draw(st.one_of(
            st.sampled_from(["", "guest", "host1", "host2", "arbiter", "none", "balanced", "adam",
                             "l2", "nan", "inf", "-1", "1e400", "x" * 5000]),
            st.text(max_size=20))))
    if hint is bytes:
        return draw(st.one_of(
            st.tuples(st.just("bytes_truncate"), st.sampled_from([1, 8, 31, 32, 64, 10**9])),
            st.tuples(st.just("bytes_extend"), st.tuples(st.integers(0, 2**32),
                                                         st.sampled_from([1, 8, 32, 64, 65]))),
            st.tuples(st.just("bytes_flip"), st.tuples(st.integers(0, 2**20), st.integers(0, 7))),
            st.tuples(st.just("bytes_fill"), st.sampled_from([0x00, 0x01, 0xFF])),
            st.tuples(st.just("bytes_random"), st.integers(0, 2**32)),
            st.tuples(st.just("bytes_double"), st.none()),
            st.tuples(st.just("bytes_swap_halves"), st.none()),
            st.tuples(st.just("set"), st.binary(max_size=40))))
    if hint is np.ndarray or typing.get_origin(hint) is np.ndarray:
        return draw(st.one_of(
            st.sampled_from([("array_drop", None), ("array_append", None),
                             ("array_as_column", None), ("array_other_dtype", None)]),
            st.tuples(st.just("array_set_elem"),
                      st.tuples(st.integers(0, 2**20), st.one_of(
                          st.sampled_from([-1.0, 0.0, 1e300, -1e300, 2.0**62, 2.0**70]),
                          st.integers(-(2**63), 2**63 - 1).map(float)))),
            st.tuples(st.just("set"), arrays())))
    raise TypeError(f"no mutation for the wire type {hint!r}")


@st.composite
def mutation_of(draw: st.DrawFn, value: Any, hint: Any | None = None,
                path: tuple[str | int, ...] = ()) -> Mutation:
    """A codec-valid mutation of ``value`` (a message), chosen by the field annotations."""
    if hint is None:
        hint = type(value)
    inner = _optional_inner(hint)
    if inner is not None:
        if value is None:
            return Mutation(path, "set", draw(value_for(inner)))
        if draw(st.booleans()):
            return Mutation(path, "set", None)
        return draw(mutation_of(value, inner, path))
    if is_dataclass_type(hint):
        fields = hints(hint)
        name = draw(st.sampled_from(sorted(fields)))
        return draw(mutation_of(getattr(value, name), fields[name], (*path, name)))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        elem = typing.get_args(hint)[0]
        choice = draw(st.sampled_from(["clear", "drop", "dup", "reverse", "elem", "elem", "set"]))
        if choice == "elem" and len(value):
            i = draw(st.integers(0, len(value) - 1))
            return draw(mutation_of(value[i], elem, (*path, i)))
        if choice == "set" or not len(value):
            return Mutation(path, "set", draw(value_for(hint)))
        if choice in ("drop", "dup"):
            return Mutation(path, f"list_{choice}", draw(st.integers(0, 2**16)))
        return Mutation(path, f"list_{choice}")
    op, arg = draw(_leaf_mutation(hint, value))
    return Mutation(path, op, arg)


# ------------------------------------------------ structure-level (raw) values
NASTY_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-1, -5, -(2**63), 2**63, 2**64 - 1, 2**62, 0, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.text(max_size=8), st.binary(max_size=24))


def _fake_array() -> st.SearchStrategy[dict[str, Any]]:
    dims = st.one_of(st.integers(0, 8), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**63,
                                                         2**64 - 1, -1]))
    return st.fixed_dictionaries({
        "dtype": st.sampled_from(["<f8", "<i8", ">f8", "|O", "<U1", "float64"]),
        "shape": st.one_of(st.lists(dims, max_size=6), NASTY_SCALARS),
        "data": st.one_of(st.binary(max_size=64), st.sampled_from([
            b"\x00" * 8 * 4, np.array([np.nan, np.inf], dtype="<f8").tobytes(), b""]),
            NASTY_SCALARS),
    })


NASTY = st.recursive(
    st.one_of(NASTY_SCALARS, _fake_array()),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)


def raw_paths(raw: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys, list indices) into an unpacked msgpack tree."""
    out = [prefix]
    if isinstance(raw, dict):
        for k, v in raw.items():
            out.extend(raw_paths(v, (*prefix, k)))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            out.extend(raw_paths(v, (*prefix, i)))
    return out


def raw_set(raw: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``raw`` with the node at ``path`` replaced (``path == ()``: the root)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(raw, dict):
        out = dict(raw)
    else:
        out = list(raw)
    out[head] = raw_set(raw[head], rest, value)
    return out
