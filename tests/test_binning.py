"""Federated IV equals IV computed in the clear on the joined table."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from vfl.binning import run_binning_guest, run_binning_host
from vfl.binning.messages import EncryptedLabels, HostBinStats
from vfl.codec import decode_envelope
from vfl.crypto.paillier import PaillierPublicKey
from vfl.crypto.zkp import proof_width
from vfl.policy import SecurityPolicy
from vfl.transport import InMemoryNetwork

# hosts accept the guest's small test keys only under an insecure policy of their own
TEST_POLICY = SecurityPolicy(allow_insecure_key_size=True).validate()


def clear_iv(values, y, n_bins):
    """Textbook IV, written independently: equal-frequency bins, missing apart, 0.5 smoothing."""
    ok = ~np.isnan(values)
    cuts = np.unique(np.quantile(values[ok], [k / n_bins for k in range(1, n_bins)]))
    pairs = zip(cuts[:-1], cuts[1:], strict=True)
    bins = [values <= cuts[0]] + [(values > a) & (values <= b) for a, b in pairs]
    bins += [values > cuts[-1], ~ok]
    bad_total, good_total = y.sum(), (1 - y).sum()
    iv = 0.0
    for m in bins:
        if m.sum() == 0:
            continue
        bad = y[m].sum() or 0.5
        good = (1 - y[m]).sum() or 0.5
        pb, pg = bad / bad_total, good / good_total
        iv += (pg - pb) * math.log(pg / pb)
    return iv


def _run(Xg, y, Xh, names_g, names_h, reveal=True, record=False):
    net = InMemoryNetwork(["guest", "host1", "arbiter"])
    transcript = net.endpoint("host1").record_transcript() if record else None
    out = {}
    t = threading.Thread(target=lambda: out.__setitem__("host", run_binning_host(
        net.endpoint("host1"), Xh, names_h, guest="guest", reveal_names=reveal,
        policy=TEST_POLICY)))
    t.start()
    table = run_binning_guest(net.endpoint("guest"), Xg, names_g, y, hosts=["host1"],
                              n_bins=10, key_bits=512, allow_insecure_key_size=True)
    t.join()
    return table, out["host"], transcript


def test_federated_iv_equals_clear_iv_on_default_credit(default_credit):
    Xg, y, Xh = default_credit
    y = y.astype(np.int64)
    names_g = [f"g{j}" for j in range(Xg.shape[1])]
    names_h = [f"x{j}" for j in range(Xh.shape[1])]
    table, host, _ = _run(Xg, y, Xh, names_g, names_h)
    by_name = {r["feature"]: r["iv"] for r in table}
    assert len(by_name) == Xg.shape[1] + Xh.shape[1]
    for j, n in enumerate(names_h):
        assert by_name[f"host1:{n}"] == pytest.approx(clear_iv(Xh[:, j], y, 10), abs=1e-9)
    for j, n in enumerate(names_g):
        assert by_name[n] == pytest.approx(clear_iv(Xg[:, j], y, 10), abs=1e-9)
    assert max(by_name.values()) > 0.1  # informative features exist (PAY_0-like)


def test_missing_values_and_aliases_and_no_leak():
    rng = np.random.default_rng(4)
    n = 800
    Xh = rng.normal(size=(n, 2))
    y = (Xh[:, 0] + rng.normal(size=n) > 1).astype(np.int64)
    Xh[rng.random(n) < 0.1, 1] = np.nan
    Xg = rng.normal(size=(n, 1))
    table, host, transcript = _run(Xg, y, Xh, ["a"], ["secret_income", "secret_debt"],
                                   reveal=False, record=True)
    names = {r["feature"] for r in table}
    assert names == {"a", "host1_f0", "host1_f1"}
    iv = {r["feature"]: r["iv"] for r in table}
    assert iv["host1_f0"] == pytest.approx(clear_iv(Xh[:, 0], y, 10), abs=1e-9)
    assert iv["host1_f1"] == pytest.approx(clear_iv(Xh[:, 1], y, 10), abs=1e-9)
    assert any(b["bin"] for b in next(r for r in table if r["feature"] == "host1_f1")["bins"])
    # what the host sent: counts and ciphertexts only; no names, no bin edges, no values
    sent = [decode_envelope(d).body for direction, _, d in transcript if direction == "sent"]
    assert len(sent) == 1 and isinstance(sent[0], HostBinStats)
    raw = b"".join(d for direction, _, d in transcript if direction == "sent")
    assert b"secret_income" not in raw
    for cut in host.cuts[0][:3]:
        assert np.float64(cut).tobytes() not in raw
    received = [decode_envelope(d).body for direction, _, d in transcript
                if direction == "received"]
    assert isinstance(received[0], EncryptedLabels)
    # one fixed-width 0/1 proof per aligned row came with the labels (and verified)
    key = PaillierPublicKey.from_bytes(received[0].n)
    assert len(received[0].proofs) == n * proof_width(key)


def test_monotonic_groups_properties():
    from vfl.binning.core import monotonic_groups

    rng = np.random.default_rng(9)
    counts = rng.integers(50, 150, 20).tolist()
    rates = np.clip(np.linspace(0.05, 0.4, 20) + rng.normal(0, 0.05, 20), 0, 1)
    events = [int(c * r) for c, r in zip(counts, rates, strict=True)]
    groups = monotonic_groups(counts, events, min_share=0.05)
    assert groups[0][0] == 0 and groups[-1][1] == 19
    assert all(b[0] == a[1] + 1 for a, b in zip(groups[:-1], groups[1:], strict=True))
    merged_rates = [sum(events[a:b + 1]) / sum(counts[a:b + 1]) for a, b in groups]
    assert merged_rates == sorted(merged_rates)  # rising trend kept, no violations
    total = sum(counts)
    assert all(sum(counts[a:b + 1]) >= 0.05 * total for a, b in groups)
    falling = monotonic_groups(counts[::-1], events[::-1])
    fr = [sum(events[::-1][a:b + 1]) / sum(counts[::-1][a:b + 1]) for a, b in falling]
    assert fr == sorted(fr, reverse=True)


def test_monotonic_federated_iv_equals_clear(default_credit):
    from vfl.binning.core import bin_stats_clear, merge_stats, monotonic_groups, woe_iv

    Xg, y, Xh = default_credit
    y = y.astype(np.int64)
    net = InMemoryNetwork(["guest", "host1"])
    out = {}
    t = threading.Thread(target=lambda: out.__setitem__("h", run_binning_host(
        net.endpoint("host1"), Xh, [f"x{j}" for j in range(Xh.shape[1])], guest="guest",
        reveal_names=True, policy=TEST_POLICY)))
    t.start()
    table = run_binning_guest(net.endpoint("guest"), Xg[:, :2], ["a", "b"], y, hosts=["host1"],
                              n_bins=20, key_bits=512, allow_insecure_key_size=True,
                              monotonic=True)
    t.join()
    by = {r["feature"]: r for r in table}
    for j in range(Xh.shape[1]):
        st = bin_stats_clear("x", Xh[:, j], y, 20)
        merged = merge_stats(st, monotonic_groups(st.counts[:-1], st.events[:-1]))
        _, iv = woe_iv(merged.counts, merged.events, int(y.sum()), len(y))
        assert by[f"host1:x{j}"]["iv"] == pytest.approx(iv, abs=1e-9)
        # the host merged its own cut points to match: its bins give the same counts
        from vfl.binning.core import assign_bins

        cuts = out["h"].cuts[j]
        host_counts = np.bincount(assign_bins(Xh[:, j], cuts), minlength=len(cuts) + 2)
        assert host_counts.tolist() == merged.counts


def test_labels_other_than_0_and_1_are_refused_before_anything_is_sent():
    from vfl.binning.guest import BinningGuest
    from vfl.exceptions import ConfigError

    guest = BinningGuest([0, 1, 2, 1], key_bits=512, allow_insecure_key_size=True)
    with pytest.raises(ConfigError, match="0 or 1"):
        guest.labels_message()
