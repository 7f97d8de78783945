"""The arbiter is no decryption oracle: attacks by a deviating host and a deviating guest.

Before issue 8 the arbiter decrypted any well-formed vector and masks were
uniform mod n, so a host could multiply ``[[4d_i]] * 2^(100 + 44 t)`` into its
masked gradient and read every residual (every label) in one batch, and a guest
could have any ciphertext decrypted through ``EpochLoss``. Now masks have
``ℓ + κ`` bits and the arbiter returns a value only if it lies below
``2^(ℓ+κ+1)`` (the loss only in the range of a Taylor loss, rounded): a
deviating party gets at most ``ℓ + κ + 1`` bits back per gradient slot.

Each test runs the attacker's real computation inside the real protocol
(in-memory transport, real Paillier keys, the real arbiter) and checks what it
gets.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.exceptions import RemoteProtocolError
from vfl.lr import driver as driver_mod
from vfl.lr import guest as guest_mod
from vfl.lr import host as host_mod
from vfl.lr.config import (
    CURVATURE_FRAC_BITS,
    LOSS_GRID_BITS,
    LOSS_ROW_BITS,
    TrainConfig,
    residual_frac_bits,
)
from vfl.lr.messages import EpochLoss, MaskedGradient

from ..lr.trio import run_trio

F = 32
SLOT_BITS = F + 6  # one residual 4d * 2^F with |4d| < 2^5, shifted to be non-negative
MODES = ["taylor", "accurate"]


def _slot_bits(cfg) -> int:
    """Bits of one packed residual ``4d`` at the job's residual scale (``|4d| < 2^5``)."""
    return residual_frac_bits(cfg) + 6


def _data(n=256, kg=4, kh=4, seed=0):
    rng = np.random.default_rng(seed)  # test data only, not a secret
    Xg, Xh = rng.normal(size=(n, kg)), rng.normal(size=(n, kh))
    logit = Xg @ rng.normal(size=kg) + Xh @ rng.normal(size=kh)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return Xg, y, Xh


#: These attacks target the decryption oracle of protocol reveal-gradients (versions 1-4:
#: the arbiter returns masked values to their sender). Under protocol shared, the default,
#: nothing decrypted returns: test_shared_protocol_returns_nothing_to_pack_into below.
REVEAL = dict(protocol="reveal-gradients", optimizer="adam", learning_rate=0.1, decay=1.0)


def _config(**kw):
    base = dict(key_bits=512, allow_insecure_key_size=True, epochs=1, batch_size=0, tol=0.0,
                validation_fraction=0.0, mode="taylor", **REVEAL)
    base.update(kw)
    return TrainConfig(**base)


def _pack(key, residual: EncryptedVector, rows: list[int], base_bits: int,
          slot: int = SLOT_BITS) -> EncryptedVector:
    """``[[sum_t 2^(base + t*SLOT) (4d_t 2^F + 2^(SLOT-1))]]``: residuals side by side."""
    SLOT_BITS = slot
    n2 = key.nsquare
    acc = gmpy2.mpz(1)
    bias = 0
    for t, i in enumerate(rows):
        shift = base_bits + t * SLOT_BITS
        acc = acc * gmpy2.powmod(residual.ciphertexts[i], 1 << shift, n2) % n2
        bias += 1 << (shift + SLOT_BITS - 1)
    return EncryptedVector(key, [acc], residual.frac_bits).add_plain([bias])


def _unpack(value: int, count: int, base_bits: int, slot: int = SLOT_BITS) -> list[int]:
    SLOT_BITS = slot
    out = []
    for t in range(count):
        chunk = (value >> (base_bits + t * SLOT_BITS)) & ((1 << SLOT_BITS) - 1)
        out.append(chunk - (1 << (SLOT_BITS - 1)))
    return out


def _read_back(party, msg, peer, batch_rows, base_bits, loot, slot=SLOT_BITS):
    """The deviating party's unpacking of what the arbiter returned (no weight update)."""
    from vfl.crypto.wire import decode_residues

    budget = party.budget
    vals = decode_residues(msg.residues, budget.width, 1 << budget.masked_bits, peer=peer,
                           expected=len(party._masks))
    for v, rows in zip(vals, party._plan, strict=True):
        loot.residuals.extend(_unpack(v, len(rows), base_bits, slot))
        loot.rows.extend(batch_rows[r] for r in rows)
    party._masks = None
    return np.zeros(len(vals))


class _Loot:
    residuals: list[int] = []
    rows: list[int] = []


def _evil_host(per_slot: int | None, loot: _Loot):
    """A host that replaces every masked gradient slot by packed residuals (mask 0)."""

    class EvilHost(host_mod.HostParty):
        def on_residual(self, msg):
            masked, cross = super().on_residual(msg)
            key, rnd = self._require_key()
            cfg = self.config
            enc = decode_ciphertexts(key, msg.residual, peer="guest", what="Residual",
                                     expected_len=len(self._batch_idx),
                                     frac_bits=residual_frac_bits(cfg))
            slot = _slot_bits(cfg)
            b = len(self._batch_idx)
            k = len(self._masks)
            if per_slot is None:
                # the pre-issue-8 attack: above any gradient (2^100), as many residuals as
                # the plaintext space holds (all of them with a 2048-bit key and b <= 50)
                base = 100
                count = min(b, (key.bits - base - 2) // slot)
                plan = [list(range(count))] + [[] for _ in range(k - 1)]
            else:
                base, count = 0, per_slot
                plan = [list(range(j * count, min(b, (j + 1) * count))) for j in range(k)]
            slots = [_pack(key, enc, rows, base, slot) if rows else
                     EncryptedVector(key, [gmpy2.mpz(1)], enc.frac_bits).add_plain([0])
                     for rows in plan]
            cts = [s.ciphertexts[0] for s in slots]
            packed = EncryptedVector(key, cts, masked.values.frac_bits).rerandomize(rnd)
            self._masks = [-self.budget.offset] * k  # so unmasking returns the raw value
            self._plan, self._base, self._slot = plan, base, slot
            return MaskedGradient(masked.epoch, masked.batch, encode_ciphertexts(packed)), cross

        def on_decrypted(self, msg, *, peer):
            return _read_back(self, msg, peer, self._batch_idx, self._base, loot, self._slot)

    return EvilHost


@pytest.mark.parametrize("mode", MODES)
def test_deviating_host_packing_every_residual_is_refused(monkeypatch, mode):
    """The original attack (residuals packed into one slot above 2^100) stops the job."""
    Xg, y, Xh = _data()
    loot = _Loot()
    monkeypatch.setattr(driver_mod, "HostParty", _evil_host(None, loot))
    with pytest.raises(RemoteProtocolError, match="masked range"):
        run_trio(Xg, y, [Xh], _config(mode=mode))
    assert loot.residuals == []  # nothing came back


@pytest.mark.parametrize("mode", MODES)
def test_deviating_host_gets_at_most_the_documented_capacity(monkeypatch, mode):
    """Packing that fits the masked range yields floor((ℓ+κ+1)/bits) residuals per slot, no more."""
    Xg, y, Xh = _data()
    cfg = _config(mode=mode)
    from vfl.lr.config import mask_budget

    budget = mask_budget(cfg, len(y))
    capacity = budget.masked_bits // _slot_bits(cfg)
    # the documented figures (hetero_lr.md): 4 residuals per slot (Taylor), 3 (accurate)
    assert capacity == {"taylor": 4, "accurate": 3}[mode]
    # one more residual per slot than the capacity: refused
    monkeypatch.setattr(driver_mod, "HostParty", _evil_host(capacity + 1, _Loot()))
    with pytest.raises(RemoteProtocolError, match="masked range"):
        run_trio(Xg, y, [Xh], cfg)
    # exactly the capacity: accepted, and the attacker really reads those residuals
    loot = _Loot()
    loot.residuals, loot.rows = [], []
    monkeypatch.setattr(driver_mod, "HostParty", _evil_host(capacity, loot))
    run = run_trio(Xg, y, [Xh], cfg)
    k = Xh.shape[1]
    assert len(loot.rows) == capacity * k < len(y)
    # the attack is real: those residuals come back exactly (hosts at 0): Taylor
    # 4d 2^F = Q_F(s_g - 2y); accurate 4d 2^(F+E) = Q_(F+E)(4(σ(s_g) - y))
    from vfl.crypto.encoding import quantize

    g = run.guest
    s_g = g.X.values @ g.initial_coef[:-1] + g.initial_coef[-1]
    if mode == "taylor":
        truth = quantize(s_g - 2 * (2 * y - 1), F)
    else:
        truth = quantize(4 * (1 / (1 + np.exp(-s_g)) - y), F + CURVATURE_FRAC_BITS)
    assert loot.residuals == truth[loot.rows].tolist()
    # the documented figure: ℓ + κ + 1 bits per slot
    assert budget.masked_bits == budget.value_bits + 81
    assert run.arbiter.budget == budget


class _LootLoss:
    values: list[float] = []


def _loss_bits(cfg) -> int:
    """The scale of the epoch loss: ``2^(2F)`` (Taylor, times 8) or ``2^(F+E)`` (accurate)."""
    F_ = cfg.score_frac_bits
    return 2 * F_ if cfg.mode == "taylor" else F_ + CURVATURE_FRAC_BITS


def _evil_guest(value_fn, loot):
    """A guest that substitutes an encryption of a chosen value for its epoch loss."""

    class EvilGuest(guest_mod.GuestParty):
        def epoch_loss(self, epoch):
            honest = super().epoch_loss(epoch)
            key, rnd = self._require_key()
            enc = EncryptedVector.encrypt(key, [value_fn(self)], _loss_bits(self.config), rnd)
            return EpochLoss(epoch, encode_ciphertexts(enc), honest.n_samples,
                             honest.stop_requested)

    return EvilGuest


@pytest.mark.parametrize("mode", MODES)
def test_deviating_guest_loss_oracle(monkeypatch, mode):
    """A ciphertext outside the loss range is refused; inside, 42 bits (Taylor; 43 accurate,
    whose loss is signed) come back at most."""
    Xg, y, Xh = _data()
    cfg = _config(mode=mode)
    denominator = (len(y) << _loss_bits(cfg)) * (8 if mode == "taylor" else 1)
    secret = (1 << 200) + 12345  # e.g. packed host scores: far outside the loss range
    monkeypatch.setattr(driver_mod, "GuestParty", _evil_guest(lambda p: secret, None))
    with pytest.raises(RemoteProtocolError, match="decrypts outside the range of a"):
        run_trio(Xg, y, [Xh], cfg)
    # the most a guest can smuggle through: a value below the bound, seen rounded
    chosen = (denominator << LOSS_ROW_BITS) - 987654321
    monkeypatch.setattr(driver_mod, "GuestParty", _evil_guest(lambda p: chosen, None))
    run = run_trio(Xg, y, [Xh], cfg)
    got = run.guest.loss_history[0]
    assert got * 2**LOSS_GRID_BITS == round(got * 2**LOSS_GRID_BITS)  # on the 2^-32 grid
    assert got <= 2**LOSS_ROW_BITS  # at most LOSS_ROW_BITS + LOSS_GRID_BITS + 1 = 42 bits
    # the low bits of the chosen value are lost: ~log2(denominator) - 32 bits never come back
    assert round(got * denominator) != chosen


def _evil_guest_packing(per_slot: int, loot: _Loot):
    """A guest that replaces its masked gradient slots by packed host scores ``[[H_i]]``."""

    class EvilGuest(guest_mod.GuestParty):
        def on_forward(self, host, msg, epoch, batch):
            super().on_forward(host, msg, epoch, batch)
            self._stolen = msg.scores

        def masked_gradient(self):
            honest = super().masked_gradient()
            key, rnd = self._require_key()
            scores = decode_ciphertexts(key, self._stolen, peer="host1", what="HostForward",
                                        expected_len=len(self._rows),
                                        frac_bits=self.config.score_frac_bits)
            k = len(self._masks)
            plan = [list(range(j * per_slot, min(len(self._rows), (j + 1) * per_slot)))
                    for j in range(k)]
            cts = [_pack(key, scores, rows, 0).ciphertexts[0] for rows in plan]
            packed = EncryptedVector(key, cts, honest.values.frac_bits).rerandomize(rnd)
            self._plan = plan
            return MaskedGradient(honest.epoch, honest.batch, encode_ciphertexts(packed))

        def on_decrypted(self, msg, *, peer):
            return _read_back(self, msg, peer, self._rows, 0, loot)

    return EvilGuest


@pytest.mark.parametrize("mode, batch_size, per_slot", [("taylor", 128, 4), ("accurate", 0, 5)])
def test_deviating_guest_gets_at_most_the_documented_capacity_of_host_scores(
        monkeypatch, mode, batch_size, per_slot):
    """The guest packing the hosts' encrypted scores: the same per-slot bound applies (the
    accurate mode's 16 more bits let 5 scores through per slot where the Taylor mode lets 4)."""
    Xg, y, Xh = _data()
    cfg = _config(epochs=2, batch_size=batch_size, mode=mode)  # epoch 1: host weights non-zero
    from vfl.lr.config import epoch_batches, mask_budget

    budget = mask_budget(cfg, len(y))
    capacity = budget.masked_bits // SLOT_BITS
    assert capacity == per_slot
    monkeypatch.setattr(driver_mod, "GuestParty", _evil_guest_packing(capacity + 1, _Loot()))
    with pytest.raises(RemoteProtocolError, match="masked range"):
        run_trio(Xg, y, [Xh], cfg)
    loot = _Loot()
    loot.residuals, loot.rows = [], []
    monkeypatch.setattr(driver_mod, "GuestParty", _evil_guest_packing(capacity, loot))
    run_trio(Xg, y, [Xh], cfg)
    slots = Xg.shape[1] + 1
    batches = sum(len(epoch_batches(len(y), [], cfg, e)) for e in range(2))
    assert len(loot.rows) == capacity * slots * batches  # per_slot scores per slot, no more
    assert any(v != 0 for v in loot.residuals)  # real host scores came back (epoch 1)
