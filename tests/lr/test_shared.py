"""Protocol ``shared`` (issue 24): secret-shared weights, nothing decrypted goes back.

* The encrypted run equals the plaintext run of the same shared algorithm
  (``vfl.lr.reference._fit_shared``) to 1e-6 in both modes, with one and two
  hosts, validation, class weights and L2 (measured ~1e-9).
* What each party receives from the arbiter, read off the real transcript: only
  fresh ciphertexts per batch, the decision (with the loss for the guest) per epoch,
  its own share once at the end; the accurate mode's expansion point is the guest's
  own model (checked against scikit-learn), never a weight told by the arbiter.
* The budget of equations the guest may hold is enforced by guest, hosts and
  arbiter; the arbiter squares only masked values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vfl.codec import decode_envelope
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.exceptions import ConfigError, RemoteProtocolError
from vfl.lr import TrainConfig
from vfl.lr._shared import EXPANSION_RIDGE_PER_ROW, ShareState, expansion_point
from vfl.lr.arbiter import ArbiterParty
from vfl.lr.config import square_slot_bits
from vfl.lr.messages import MaskedGradient, TrainSetup

from .trio import run_trio, small_config, standardize


def _data(n=700, seed=0):
    rng = np.random.default_rng(seed)
    Xg = standardize(rng.normal(size=(n, 3)))
    Xh = standardize(rng.normal(size=(n, 5)))
    logit = Xg @ [0.8, -0.5, 0.3] + Xh @ [1.0, -0.7, 0.2, 0.0, 0.4] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return Xg, y, Xh


CASES = {
    "one host": dict(hosts=1),
    "two hosts, validation": dict(hosts=2, validation_fraction=0.2, patience=2),
    "class weights, L2, sgd": dict(hosts=1, class_weight="balanced", penalty="l2", alpha=0.01,
                                   optimizer="sgd"),
}


@pytest.mark.parametrize("mode", ["accurate", "taylor"])
@pytest.mark.parametrize("case", list(CASES))
def test_encrypted_shared_training_equals_the_plaintext_shared_algorithm(case, mode):
    spec = dict(CASES[case])
    n_hosts = spec.pop("hosts")
    Xg, y, Xh = _data()
    Xhs = [Xh] if n_hosts == 1 else [Xh[:, :2], Xh[:, 2:]]
    cfg = small_config(protocol="shared", mode=mode, epochs=5, **spec)
    assert cfg.protocol == "shared" and cfg.optimizer in ("momentum", "sgd")
    run = run_trio(Xg, y, Xhs, cfg)
    ref_cfg = cfg
    if run.guest.best_epoch is not None:  # with validation: the kept epoch
        ref_cfg = cfg.replace(epochs=run.guest.best_epoch + 1)
    ref = run.reference(Xg, y, Xhs, ref_cfg)
    np.testing.assert_allclose(run.guest.coef, ref.guest_coef, atol=1e-6, rtol=0)
    for host, coef in zip(run.hosts, ref.host_coefs, strict=True):
        np.testing.assert_allclose(host.coef, coef, atol=1e-6, rtol=0)
    np.testing.assert_allclose(run.guest.loss_history[:len(ref.loss_history)],
                               ref.loss_history, atol=1e-6)
    # the weights moved, and they are not the guest's start
    assert np.abs(ref.host_coefs[0]).max() > 0.05
    assert np.abs(run.guest.coef - run.guest.initial_coef).max() > 0.01


def test_nothing_decrypted_reaches_a_party():
    """Every message from the arbiter to guest or host, over a whole run: the key, then per
    batch only ciphertexts (ShareUpdate), per epoch the decision (with the loss for the
    guest only), and one FinalShare at the end."""
    Xg, y, Xh = _data(seed=3)
    cfg = small_config(protocol="shared", epochs=4)
    assert cfg.mode == "accurate"
    run = run_trio(Xg, y, [Xh], cfg, record=True)
    for party in ("guest", "host1"):
        kinds: dict[str, int] = {}
        for direction, peer, data in run.transcripts[party]:
            if direction != "received" or peer != "arbiter":
                continue
            body = decode_envelope(data).body
            name = type(body).__name__
            kinds[name] = kinds.get(name, 0) + 1
            if name == "ShareUpdate":
                assert isinstance(body.share.data, bytes) and body.share.frac_bits == 32
                assert (body.squares is not None) == (party == "guest" and body.squares
                                                      is not None)
            elif name == "EpochDecision":
                assert [f.name for f in dataclasses.fields(body)] == ["epoch", "stop", "loss"]
                assert (body.loss is not None) == (party == "guest")
            else:
                assert name in ("PublicKeyAnnounce", "FinalShare"), name
        n_batches = sum(len(run.guest.batches(e)) for e in range(run.epochs))
        assert kinds == {"PublicKeyAnnounce": 1, "ShareUpdate": n_batches,
                         "EpochDecision": run.epochs, "FinalShare": 1}
        assert "DecryptedGradient" not in kinds


@pytest.mark.parametrize("weighted", [False, True])
def test_the_expansion_point_is_the_guests_own_penalised_logistic_regression(weighted):
    """The accurate mode's expansion point against scikit-learn's LogisticRegression with
    the same L2 penalty (C = 1 / (ridge * n)) and sample weights, fitted to convergence."""
    from sklearn.linear_model import LogisticRegression

    Xg, y, _ = _data(n=900, seed=5)
    sw = np.where(y > 0.5, 3.0, 1.0) if weighted else None
    F = 32
    point = expansion_point(Xg, y, sw, fit_intercept=True, frac_bits=F)
    n = len(y)
    ref = LogisticRegression(C=1.0 / (EXPANSION_RIDGE_PER_ROW * n), tol=1e-12, max_iter=10_000)
    # scikit-learn's weights enter the loss as given; ours are normalised to mean 1
    ref.fit(Xg, y, sample_weight=None if sw is None else sw / sw.mean())
    ours = np.array(point, dtype=float) / 2.0**F
    np.testing.assert_allclose(ours[:-1], ref.coef_[0], atol=1e-6)
    np.testing.assert_allclose(ours[-1], ref.intercept_[0], atol=1e-6)
    # a separable guest keeps finite, moderate weights
    sep = (Xg[:, 0] > 0).astype(float)
    w = np.array(expansion_point(Xg, sep, None, fit_intercept=True, frac_bits=F)) / 2.0**F
    assert np.all(np.isfinite(w)) and np.abs(Xg @ w[:-1] + w[-1]).max() < 30


def test_a_job_beyond_the_guests_budget_is_refused_by_guest_hosts_and_arbiter():
    Xg, y, Xh = _data(n=400)
    cfg = small_config(protocol="shared", epochs=101)  # 101 losses > a quarter of 400 rows
    with pytest.raises(ConfigError, match="epochs"):
        run_trio(Xg, y, [Xh], cfg)
    from vfl.lr.host import HostParty

    setup = TrainSetup("m", cfg, 400, ["host1"], [4, 5], [], 0)
    with pytest.raises(RemoteProtocolError, match="refuses the job of guest.*epochs"):
        HostParty("host1", Xh, setup, 0)
    with pytest.raises(RemoteProtocolError, match="epochs"):
        ArbiterParty(setup, "guest", allow_insecure_key_size=True)


def test_the_optimisers_that_need_a_gradient_are_refused_under_shared():
    with pytest.raises(ConfigError, match="adam.*'reveal-gradients'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="l1"):
        TrainConfig(penalty="l1", alpha=0.1)
    assert TrainConfig(protocol="reveal-gradients", optimizer="adam").optimizer == "adam"


def test_the_arbiter_squares_bounded_values_only():
    """The arbiter returns ``[[clip(x, ±3)^2]]`` of each value the guest packed, in the order
    received; a value beyond ±2^16 (a diverged run, or a deviating guest packing something
    else) is refused, as is a vector that is not packed slots."""
    cfg = small_config(protocol="shared", epochs=2)
    setup = TrainSetup("m", cfg, 300, ["h"], [4, 5], [], 0)
    arb = ArbiterParty(setup, "guest", allow_insecure_key_size=True)
    key = arb.public_key
    from vfl.crypto.paillier import Randomizer
    from vfl.lr.config import residual_frac_bits

    rnd = Randomizer(key)
    bits = square_slot_bits(cfg)
    fs = cfg.score_frac_bits + cfg.feature_frac_bits
    gradient = EncryptedVector.encrypt(key, [arb.budget.offset] * 4, 0, rnd)
    grad = encode_ciphertexts(gradient.at_scale(residual_frac_bits(cfg) + cfg.feature_frac_bits))

    def ask(values, pack=True):
        enc = EncryptedVector.encrypt(key, values, fs, rnd)
        packed = enc.add_plain([1 << (bits - 1)] * len(values)).pack(bits) if pack else enc
        msg = MaskedGradient(0, 0, grad, encode_ciphertexts(packed), len(values))
        return arb.on_masked_gradient("guest", msg, 0, 0)

    one = 1 << fs
    good = [12345, -(5 * one) // 2, 4 * one, -(7 * one), (1 << (fs + 16)) - 1]
    answer = ask(good)
    sq = decode_ciphertexts(key, answer.squares, peer="a", what="x", expected_len=len(good),
                            frac_bits=fs)
    want = [(min(abs(v), 3 * one) ** 2) // one for v in good]
    assert sq.decrypt(arb.private_key) == want
    assert want[2] == want[3] == 9 * one  # clipped
    with pytest.raises(RemoteProtocolError, match=r"beyond ±2\^16"):
        ask([1 << (fs + 16)])
    with pytest.raises(RemoteProtocolError, match="Squares request from guest"):
        ask([1, 2], pack=False)  # two unpacked ciphertexts where one packed one is due


def test_a_share_survives_its_checkpoint_record():
    s = ShareState([3, -(1 << 200), 0], [5, -7, 1 << 90], [True, True, False],
                   [[1, 2, 3], [-4, 5, -(1 << 70)]])
    rec = s.to_record(None, [9, -9, 1 << 100])
    back = ShareState.from_record(rec, 3, [True, True, False], "p")
    assert dataclasses.astuple(back) == dataclasses.astuple(s)
    from vfl.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="another shape"):
        ShareState.from_record(rec, 4, [True] * 4, "p")


def test_the_arbiter_gets_the_values_to_square_in_a_fresh_secret_order(monkeypatch):
    """The guest sends the rows due for squares in an order drawn with ``secrets`` for every
    batch: the position of a value tells the arbiter nothing about its row."""
    from scipy.stats import spearmanr

    from vfl.lr.guest import GuestParty

    sent: list[list[int]] = []
    natural: list[list[int]] = []
    original = GuestParty._shared_residuals

    def spy(self, epoch, batch, rows):
        out = original(self, epoch, batch, rows)
        if self._sq is not None:
            sent.append(list(self._sq[0]))
            natural.append(sorted(self._sq[0], key=rows.index))
        return out

    monkeypatch.setattr(GuestParty, "_shared_residuals", spy)
    Xg, y, Xh = _data(n=900, seed=5)
    run_trio(Xg, y, [Xh], small_config(protocol="shared", epochs=3, batch_size=300,
                                       curvature_every=1))
    assert len(sent) >= 4 and all(len(s) > 50 for s in sent)
    rhos = []
    for s, nat in zip(sent, natural, strict=True):
        assert sorted(s) == sorted(nat) and s != nat  # the same rows, not in batch order
        rhos.append(spearmanr([nat.index(r) for r in s], range(len(s)))[0])
    assert abs(float(np.mean(rhos))) < 0.1 and max(abs(r) for r in rhos) < 0.35
    assert len({tuple(s) for s in sent}) == len(sent)  # a new order every batch


def test_a_deviating_host_gets_nothing_back_per_batch(monkeypatch):
    """A host that packs the residuals it receives into its masked gradient (the attack that
    read 256/256 labels per epoch under version 1, and 4 per slot per batch under
    reveal-gradients) gets back only the arbiter's encrypted share every batch; in the clear
    it receives one number per weight in the whole run, its FinalShare."""
    from vfl.lr.host import HostParty

    original = HostParty._mask_and_send

    def packing(self, gradient, epoch, batch, rows):
        # put residual 0 of the batch, shifted, into the first gradient slot
        enc = decode_ciphertexts(self.public_key, self._last_residual, peer="g", what="r",
                                 expected_len=rows, frac_bits=self._last_residual.frac_bits)
        extra = enc.take([0]).mul_scalar(1 << 30).at_scale(gradient.frac_bits)
        pad = EncryptedVector.encrypt(self.public_key, [0] * (len(gradient) - 1),
                                      gradient.frac_bits, self.randomizer)
        return original(self, gradient.add(extra.concat(pad)), epoch, batch, rows)

    on_residual = HostParty.on_residual

    def keep(self, msg):
        self._last_residual = msg.residual
        return on_residual(self, msg)

    monkeypatch.setattr(HostParty, "_mask_and_send", packing)
    monkeypatch.setattr(HostParty, "on_residual", keep)
    Xg, y, Xh = _data(seed=8)
    run = run_trio(Xg, y, [Xh], small_config(protocol="shared", epochs=2), record=True)
    clear = 0
    for direction, peer, data in run.transcripts["host1"]:
        if direction == "received" and peer == "arbiter":
            body = decode_envelope(data).body
            assert type(body).__name__ in ("PublicKeyAnnounce", "ShareUpdate", "EpochDecision",
                                           "FinalShare")
            if type(body).__name__ == "FinalShare":
                clear += len(body.share) // ((int(run.arbiter.public_key.n).bit_length() + 7)
                                             // 8)
    assert clear == Xh.shape[1]
