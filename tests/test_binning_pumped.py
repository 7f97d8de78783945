"""Federated binning's pure steps, pumped by hand in one thread: no channel, no threads.

The guest's and the hosts' state objects exchange the real message objects,
each one encoded and decoded by the wire codec on the way, in the order the
drivers use. The IV table must equal the one computed in the clear on the
pooled data, and every host's WOE encoder the one from clear-text binning.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from vfl.binning.core import (
    BinStats,
    bin_stats_clear,
    iv_table_clear,
    merge_cuts,
    merge_stats,
    monotonic_groups,
    quantile_bins,
    woe_iv,
)
from vfl.binning.guest import BinningGuest
from vfl.binning.host import BinningHost
from vfl.binning.messages import EncryptedLabels, HostBinStats, MergePlan, WoeValues, proof_context
from vfl.binning.woe import WoeEncoder
from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.policy import SecurityPolicy

# hosts accept the guest's small test keys only under an insecure policy of their own
TEST_POLICY = SecurityPolicy(allow_insecure_key_size=True).validate()
JOB = "pumped-job"
ROWS = 600


class Wire:
    """Every message through ``encode_envelope`` / ``decode_envelope``, as a transport would."""

    def __init__(self) -> None:
        self.seq = itertools.count()
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, body: Any, sender: str, receiver: str) -> Any:
        data = encode_envelope(Envelope(JOB, next(self.seq), sender, receiver, body))
        env = decode_envelope(data, peer=sender)
        assert (env.job, env.sender, env.receiver) == (JOB, sender, receiver)
        assert type(env.body) is type(body)
        self.sent.append((sender, receiver, type(body).__name__))
        return env.body


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(21)
    Xg = rng.normal(size=(ROWS, 2))
    Xh1 = rng.normal(size=(ROWS, 3))
    Xh1[rng.random(ROWS) < 0.1, 2] = np.nan  # missing values form their own bin
    Xh2 = np.column_stack([rng.integers(0, 4, ROWS).astype(float), rng.normal(size=ROWS)])
    score = Xg[:, 0] + 1.5 * Xh1[:, 0] - np.nan_to_num(Xh2[:, 1]) + rng.normal(size=ROWS)
    y = (score > 1.0).astype(np.int64)
    return {"y": y, "guest": (Xg, ["g0", "g1"]),
            "host1": (Xh1, ["income", "debt", "age"]), "host2": (Xh2, ["region", "tenure"])}


def _clear_stats(X: np.ndarray, features: list[str], y: np.ndarray, n_bins: int,
                 monotonic: bool, *, labels: bool) -> list[BinStats]:
    out = []
    for j, name in enumerate(features):
        st = bin_stats_clear(name, X[:, j], y, n_bins)
        if not labels:  # the guest never sees a host's bin edges, so its bins are unnamed
            st = BinStats(st.feature, st.counts, st.events)
        if monotonic:
            st = merge_stats(st, monotonic_groups(st.counts[:-1], st.events[:-1]))
        out.append(st)
    return out


def _clear_encoder(X: np.ndarray, y: np.ndarray, n_bins: int, monotonic: bool) -> WoeEncoder:
    if not monotonic:
        return WoeEncoder.fit(X, y, n_bins)
    cuts, woes = [], []
    for j in range(X.shape[1]):
        st = bin_stats_clear(str(j), X[:, j], y, n_bins)
        groups = monotonic_groups(st.counts[:-1], st.events[:-1])
        merged = merge_stats(st, groups)
        cuts.append(merge_cuts(quantile_bins(X[:, j], n_bins), groups))
        woes.append(np.asarray(woe_iv(merged.counts, merged.events, int(y.sum()), len(y))[0]))
    return WoeEncoder(cuts, woes)


@pytest.mark.parametrize(("n_hosts", "monotonic", "woe", "workers"), [
    (1, False, False, 1), (1, False, True, 1), (1, True, True, 1), (2, False, True, 1),
    (2, True, True, 1), (2, True, False, 1),
    (2, False, True, 2)])  # proofs, verification and per-bin sums on spawned processes
def test_pumped_binning_equals_clear_binning(data, n_hosts, monotonic, woe, workers):
    y = data["y"]
    n_bins = 20 if monotonic else 10
    names = ["host1", "host2"][:n_hosts]
    wire = Wire()
    context = proof_context(JOB, "guest")

    guest = BinningGuest(y, key_bits=512, allow_insecure_key_size=True, n_bins=n_bins,
                         workers=workers)
    hosts = {h: BinningHost(*data[h], party=h, reveal_names=(h == "host1"), policy=TEST_POLICY,
                            workers=workers) for h in names}

    # the order of run_binning_guest / run_binning_host, one message at a time
    labels = guest.labels_message(woe, monotonic, context=context)
    requests = {h: wire(labels, "guest", h) for h in names}
    guest.add_own_features(*data["guest"], "guest")
    for h, host in hosts.items():
        assert isinstance(requests[h], EncryptedLabels)
        stats = host.on_labels(requests[h], peer="guest", context=context)
        assert (host.awaits_merge_plan, host.awaits_woe) == (monotonic, woe)
        received_stats = wire(stats, h, "guest")
        assert isinstance(received_stats, HostBinStats)
        replies = guest.on_host_stats(h, received_stats)
        assert [type(r) for r in replies] == [MergePlan] * monotonic + [WoeValues] * woe
        for reply in replies:
            received = wire(reply, "guest", h)
            if isinstance(received, MergePlan):
                host.on_merge(received, peer="guest")
            else:
                host.on_woe(received, peer="guest")
        assert not (host.awaits_merge_plan or host.awaits_woe)
    table = guest.iv_table()

    # in the clear, on the pooled table
    total_events, total_rows = int(y.sum()), len(y)
    Xg, names_g = data["guest"]
    expected = iv_table_clear(_clear_stats(Xg, names_g, y, n_bins, monotonic, labels=True),
                              "guest", total_events, total_rows)
    for h, host in hosts.items():
        X, _ = data[h]
        expected += iv_table_clear(_clear_stats(X, host.aliases(), y, n_bins, monotonic,
                                                labels=False), h, total_events, total_rows)
    assert table == sorted(expected, key=lambda r: -r["iv"])
    want_features = {"g0", "g1", "host1:income", "host1:debt", "host1:age"}
    if n_hosts == 2:
        want_features |= {"host2_f0", "host2_f1"}  # host2 does not reveal its names
    assert {r["feature"] for r in table} == want_features

    for h, host in hosts.items():
        X, _ = data[h]
        clear = _clear_encoder(X, y, n_bins, monotonic)
        assert len(host.cuts) == X.shape[1]
        for got, want in zip(host.cuts, clear.cuts, strict=True):
            np.testing.assert_array_equal(got, want)
        if not woe:
            assert host.encoder is None
            continue
        assert host.encoder is not None
        for got, want in zip(host.encoder.woe, clear.woe, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(host.encoder.transform(X), clear.transform(X))

    per_host = ["EncryptedLabels", "HostBinStats"] + ["MergePlan"] * monotonic + [
        "WoeValues"] * woe
    assert sorted(t for *_, t in wire.sent) == sorted(per_host * n_hosts)
    if monotonic:  # the plans did merge something, so the comparison above means something
        assert any(len(c) < len(quantile_bins(data[h][0][:, j], n_bins))
                   for h, host in hosts.items() for j, c in enumerate(host.cuts))
