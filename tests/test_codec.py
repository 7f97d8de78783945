"""The wire codec: round trips and refusals."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.crypto.wire import Ciphertexts
from vfl.exceptions import RemoteProtocolError
from vfl.lr.config import TrainConfig
from vfl.lr.messages import EpochDecision, HostForward, PartialScores, Residual, TrainSetup
from vfl.psi.messages import PsiRequest, PsiResult

CT = Ciphertexts(b"k" * 16, 32, b"\x01" * 64)

MESSAGES = [
    PsiRequest(b"\x02" * 64),
    PsiResult(np.arange(5, dtype=np.int64)),
    TrainSetup("m1", TrainConfig(epochs=3), 100, ["host1"], [3, 4], [5, 9], 2),
    HostForward(0, 1, CT, CT, CT),
    Residual(2, 3, CT, None),
    Residual(2, 3, CT, CT),
    EpochDecision(1, True, None),
    EpochDecision(1, False, 0.5),
    PartialScores("m1", np.array([0.5, -1.25])),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    env = Envelope("job", 4, "guest", "host1", msg)
    back = decode_envelope(encode_envelope(env))
    assert (back.job, back.seq, back.sender, back.receiver) == ("job", 4, "guest", "host1")
    assert type(back.body) is type(msg)
    for name in msg.__dataclass_fields__:
        a, b = getattr(msg, name), getattr(back.body, name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        else:
            assert a == b


def _raw(**changes):
    env = Envelope("job", 0, "guest", "host1", PsiRequest(b"\x00" * 32))
    raw = msgpack.unpackb(encode_envelope(env))
    raw.update(changes)
    return msgpack.packb(raw, use_bin_type=True)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"type": "os.system/1"}, "unknown type"),
        ({"v": 99}, "wire version"),
        ({"seq": "0"}, "wrong type"),
        ({"body": {"blinded": "text"}}, "expected bytes"),
        ({"body": {"blinded": b"", "extra": 1}}, "unexpected"),
        ({"body": {}}, "missing"),
    ],
)
def test_malformed_messages_are_refused(changes, match):
    with pytest.raises(RemoteProtocolError, match=match):
        decode_envelope(_raw(**changes), peer="host1")


def test_extension_types_and_garbage_refused():
    data = msgpack.packb(msgpack.ExtType(1, b"x"))
    with pytest.raises(RemoteProtocolError):
        decode_envelope(data)
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        decode_envelope(b"\xc1\xc1\xc1")


def test_array_shape_must_match_bytes():
    env = Envelope("job", 0, "guest", "host1", PsiResult(np.arange(3, dtype=np.int64)))
    raw = msgpack.unpackb(encode_envelope(env))
    raw["body"]["positions"]["shape"] = [4]
    with pytest.raises(RemoteProtocolError, match="does not match"):
        decode_envelope(msgpack.packb(raw, use_bin_type=True))


# ---------------------------------------------------------------- value rules (issue 8)
def _envelope_bytes(msg) -> bytes:
    return encode_envelope(Envelope("job", 0, "guest", "host1", msg))


@pytest.mark.parametrize("value, ok", [(0, True), (2**63 - 1, True), (-1, False), (2**63, False),
                                       (True, False)])
def test_int_fields_are_non_negative_and_below_2_63(value, ok):
    data = _envelope_bytes(HostForward(value, 0, CT, CT, CT))
    if ok:
        assert decode_envelope(data).body.epoch == value
    else:
        with pytest.raises(RemoteProtocolError, match="epoch"):
            decode_envelope(data, peer="host1")


def test_float_fields_accept_ints_and_refuse_non_finite():
    raw = msgpack.unpackb(_envelope_bytes(EpochDecision(1, False, 0.5)))
    raw["body"]["loss"] = 3
    back = decode_envelope(msgpack.packb(raw, use_bin_type=True)).body
    assert back.loss == 3.0 and type(back.loss) is float
    with pytest.raises(RemoteProtocolError, match="loss: float is not finite"):
        decode_envelope(_envelope_bytes(EpochDecision(1, False, float("nan"))))


def test_zero_d_and_empty_arrays_round_trip():
    for arr in (np.array(2.5), np.zeros((0, 3)), np.arange(6, dtype=np.int64).reshape(2, 3)):
        back = decode_envelope(_envelope_bytes(PartialScores("m", arr))).body.scores
        assert back.shape == arr.shape and back.dtype == arr.dtype and np.array_equal(back, arr)
        assert back.flags.writeable


@pytest.mark.parametrize("field, value, match", [
    ("dtype", [], "dtype"),  # unhashable: a TypeError escaped before
    ("dtype", "|O", "dtype"),
    ("shape", "3", "shape"),
    ("shape", [1, 1, 1, 1, 2], "shape"),
    ("shape", [-1], "shape"),
    ("data", "text", "data"),
])
def test_malformed_arrays_are_refused(field, value, match):
    raw = msgpack.unpackb(_envelope_bytes(PsiResult(np.arange(2, dtype=np.int64))))
    raw["body"]["positions"][field] = value
    with pytest.raises(RemoteProtocolError, match=match):
        decode_envelope(msgpack.packb(raw, use_bin_type=True), peer="guest")


def test_float_arrays_must_be_finite_int_arrays_keep_their_sign():
    with pytest.raises(RemoteProtocolError, match="not finite"):
        decode_envelope(_envelope_bytes(PartialScores("m", np.array([1.0, np.inf]))))
    back = decode_envelope(_envelope_bytes(PsiResult(np.array([-3], dtype=np.int64)))).body
    assert back.positions.tolist() == [-3]  # range checks of int arrays are the role's job


@pytest.mark.parametrize("changes", [{"job": "j" * 257}, {"sender": 5}, {"v": True},
                                     {"seq": -1}, {"type": "x" * 300}])
def test_envelope_header_is_bounded(changes):
    with pytest.raises(RemoteProtocolError, match="host1"):
        decode_envelope(_raw(**changes), peer="host1")


def test_message_size_limit_and_non_bytes_input():
    data = _envelope_bytes(PsiRequest(b"\x00" * 64))
    assert decode_envelope(data, max_bytes=len(data)).body.blinded == b"\x00" * 64
    with pytest.raises(RemoteProtocolError, match="larger than"):
        decode_envelope(data, peer="host1", max_bytes=len(data) - 1)
    with pytest.raises(RemoteProtocolError, match="byte string"):
        decode_envelope("text", peer="host1")  # type: ignore[arg-type]


def test_every_decode_error_names_the_peer():
    for data in (b"", b"\xc1", msgpack.packb(msgpack.ExtType(1, b"x")), b"\x91" * 5000,
                 _raw(body=None)):
        with pytest.raises(RemoteProtocolError, match="Message from host7"):
            decode_envelope(data, peer="host7")
