"""Validation through the arbiter (hetero_lr.md, "Validation without per-row scores").

Attacks against the real :class:`~vfl.lr.arbiter.ArbiterParty`: a deviating guest
that packs a host's score among values it knows learns it only to the rounding
of the figures, and the arbiter refuses batches that are not validation batches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfl.crypto.paillier import Randomizer
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import encode_ciphertexts
from vfl.exceptions import RemoteProtocolError
from vfl.lr.arbiter import ArbiterParty
from vfl.lr.config import VALIDATION_SLOT_BITS, TrainConfig, score_scale_bits
from vfl.lr.messages import METRIC_DIGITS, CalibrationRequest, TrainSetup, ValidationBatch

N_VAL = 200
#: the joint scores' scale: 2^(F + G) under protocol shared, the default
F = score_scale_bits(TrainConfig())


@pytest.fixture(scope="module")
def arbiter() -> ArbiterParty:
    cfg = TrainConfig(key_bits=512, allow_insecure_key_size=True, epochs=5)
    setup = TrainSetup("m", cfg, 1000, ["host"], [3, 3], [], N_VAL)
    return ArbiterParty(setup, "guest", allow_insecure_key_size=True)


def _batch(arb: ArbiterParty, scores: list[float], labels: list[int], epoch: int = 0,
           pad: bytes | None = None) -> ValidationBatch:
    pub = arb.public_key
    offset = 1 << (VALIDATION_SLOT_BITS - 1)  # packed as the guest packs them
    enc = EncryptedVector.encrypt(pub, [round(s * 2**F) + offset for s in scores], F,
                                  Randomizer(pub)).pack(VALIDATION_SLOT_BITS)
    bits = np.packbits(np.asarray(labels, dtype=np.uint8)).tobytes()
    return ValidationBatch(epoch, encode_ciphertexts(enc), bits if pad is None else pad)


def test_a_deviating_guest_learns_a_host_score_only_to_the_rounding(arbiter):
    """199 known scores and one host score h: the log-loss pins h to an interval, not a value."""
    h_true = 0.8371  # the host's partial score the guest wants
    known = [0.0] * (N_VAL - 1)
    labels = [i % 2 for i in range(N_VAL - 1)] + [1]
    m = arbiter.on_validation_batch(_batch(arbiter, known + [h_true], labels), epoch=0)
    # the guest inverts the rounded log-loss: -log sigmoid(h) = N * L - (N - 1) log 2
    half = 0.5 * 10.0**-METRIC_DIGITS
    lo_t = N_VAL * (m.log_loss - half) - (N_VAL - 1) * math.log(2)
    hi_t = N_VAL * (m.log_loss + half) - (N_VAL - 1) * math.log(2)
    # -log sigmoid(h) is decreasing in h: the interval of h consistent with the figure
    h_hi = -math.log(math.expm1(max(lo_t, 1e-12)))
    h_lo = -math.log(math.expm1(hi_t))
    assert h_lo <= h_true <= h_hi
    # the rounding leaves a whole interval: here about +-0.02 around h, not the value
    assert h_hi - h_lo > 0.02
    # four figures come back, each on the 4-decimal grid
    for v in (m.auc, m.ks, m.log_loss, m.brier):
        assert round(v, METRIC_DIGITS) == v


@pytest.mark.parametrize("case", ["length", "padding", "one class", "range", "slot overflow"])
def test_the_arbiter_refuses_what_is_not_a_validation_batch(arbiter, case):
    labels = [i % 2 for i in range(N_VAL)]
    scores = [0.1] * N_VAL
    if case == "length":
        msg = _batch(arbiter, scores[:-1], labels[:-1])
    elif case == "padding":
        bits = bytearray(np.packbits(np.asarray(labels, dtype=np.uint8)).tobytes())
        msg = _batch(arbiter, scores, labels, pad=bytes(bits) + b"\x01")
    elif case == "one class":
        msg = _batch(arbiter, scores, [1] * N_VAL)
    elif case == "range":
        msg = _batch(arbiter, [0.1] * (N_VAL - 1) + [5000.0], labels)
    else:  # a value beyond its slot spills into the next one: caught by the range check
        msg = _batch(arbiter, [0.1] * (N_VAL - 1) + [float(2**40)], labels)
    with pytest.raises(RemoteProtocolError, match="guest"):
        arbiter.on_validation_batch(msg, epoch=0)


@pytest.mark.parametrize("mode, figure", [("taylor", "AUC"), ("accurate", "log-loss")])
def test_calibration_only_for_the_epoch_with_the_best_auc(mode, figure):
    """Only the kept epoch (best AUC in the Taylor mode, best log-loss in the accurate mode,
    as the guest picks it) is calibrated: no other epoch's scores are fitted."""
    cfg = TrainConfig(key_bits=512, allow_insecure_key_size=True, epochs=5, mode=mode)
    arb = ArbiterParty(TrainSetup("m", cfg, 1000, ["host"], [3, 3], [], N_VAL), "guest",
                       allow_insecure_key_size=True)
    rng = np.random.default_rng(1)
    y = (rng.random(N_VAL) < 0.3).astype(int)
    good = (2.0 * y - 1 + rng.normal(0, 1.5, N_VAL)).tolist()
    worse = (0.5 * (2.0 * y - 1) + rng.normal(0, 1.5, N_VAL)).tolist()
    arb.on_validation_batch(_batch(arb, worse, y.tolist(), epoch=0), epoch=0)
    arb.on_validation_batch(_batch(arb, good, y.tolist(), epoch=1), epoch=1)
    with pytest.raises(RemoteProtocolError, match=f"best validation {figure} was at epoch 1"):
        arb.on_calibration_request(CalibrationRequest(0))
    report = arb.on_calibration_request(CalibrationRequest(1))
    assert report.slope > 0 and report.band_rows.sum() == N_VAL
