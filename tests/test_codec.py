"""The wire codec: round trips and refusals."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.exceptions import RemoteProtocolError
from vfl.lr.config import TrainConfig
from vfl.lr.messages import (
    Ciphertexts,
    EpochDecision,
    HostForward,
    PartialScores,
    Residual,
    TrainSetup,
)
from vfl.psi.messages import PsiRequest, PsiResult

CT = Ciphertexts(b"k" * 16, 32, b"\x01" * 64)

MESSAGES = [
    PsiRequest(b"\x02" * 64),
    PsiResult(np.arange(5, dtype=np.int64)),
    TrainSetup("m1", TrainConfig(epochs=3), 100, ["host1"], [3, 4], [5, 9]),
    HostForward(0, 1, CT, CT),
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
