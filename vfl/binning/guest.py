"""Federated binning, guest side: pure protocol logic, no I/O.

The guest encrypts its labels under a key of its own, with a proof per row
that each label is 0 or 1, decrypts what every host returns (row and event
counts per host bin), merges bins to monotonic event rates if asked, and
assembles the IV table. What it learns is in ``protocols/specs/binning.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vfl.binning.core import (
    BinStats,
    bin_stats_clear,
    iv_table_clear,
    merge_stats,
    monotonic_groups,
    woe_iv,
)
from vfl.binning.messages import EncryptedLabels, HostBinStats, MergePlan, WoeValues
from vfl.crypto.engine import ComputeConfig
from vfl.crypto.paillier import check_key_size, generate_keypair
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.crypto.zkp import prove_bits
from vfl.exceptions import ConfigError, CryptoError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.types import FloatArray

__all__ = ["BinningGuest"]


class BinningGuest:
    """Guest side. Learns, per host feature, the row and event counts per host bin.

    Never sees host values or bin edges.

    Steps: :meth:`labels_message` (the same message to every host),
    :meth:`add_own_features`, then per host :meth:`on_host_stats` (returns the
    replies for that host, in order), and :meth:`iv_table`.

    Parameters
    ----------
    y : array of 0/1 labels, in the PSI order
    key_bits : int
        Size of the guest's own Paillier key. Refused (:class:`ConfigError`) if
        larger than ``policy.max_key_bits``, since hosts would refuse it.
    allow_insecure_key_size : bool
        Permit keys below 2048 bits (so does ``policy.allow_insecure_key_size``).
    n_bins : int
        Equal-frequency bins asked of every host and used for own features.
    workers : int, optional
        Processes that make the 0/1 proofs (``None``: the machine's cores from
        2,000 rows on).
    policy : SecurityPolicy
        This party's limits.
    compute : ComputeConfig, optional
        The guest's ``[compute]``; ``engine="dask"`` makes the proofs on its
        own cluster (:func:`~vfl.crypto.zkp.prove_bits`). Default: the
        current :func:`~vfl.crypto.engine.compute_context`.
    """

    def __init__(self, y: npt.ArrayLike, *, key_bits: int = 2048,
                 allow_insecure_key_size: bool = False, n_bins: int = 10,
                 workers: int | None = None, policy: SecurityPolicy = DEFAULT_POLICY,
                 compute: ComputeConfig | None = None) -> None:
        if key_bits > policy.max_key_bits:
            raise ConfigError(f"A {key_bits}-bit binning key is larger than the security setting "
                              f"'max_key_bits' ({policy.max_key_bits}); hosts would refuse it.")
        insecure = allow_insecure_key_size or policy.allow_insecure_key_size
        self.y = np.asarray(y).astype(np.int64)
        self.n_bins = n_bins
        check_key_size(key_bits, allow_insecure_key_size=insecure)
        self.public_key, self._private_key = generate_keypair(
            key_bits, allow_insecure_key_size=insecure)
        self._workers = workers
        self._compute = compute
        self.woe = False
        self.monotonic = False
        self._table: list[dict[str, Any]] = []

    @property
    def total_events(self) -> int:
        """Rows with label 1."""
        return int(self.y.sum())

    @property
    def total_rows(self) -> int:
        """Aligned rows."""
        return len(self.y)

    def labels_message(self, woe: bool = False, monotonic: bool = False, *,
                       context: bytes = b"") -> EncryptedLabels:
        """Encrypt the labels once, with their 0/1 proofs; the same message goes to every host.

        ``woe`` and ``monotonic`` are what this run will send hosts after
        their statistics (see :meth:`on_host_stats`). ``context`` binds the
        proofs (:func:`vfl.binning.messages.proof_context`); hosts must verify
        with the same bytes.
        """
        if not np.isin(self.y, (0, 1)).all():
            raise ConfigError("Federated binning needs labels that are 0 or 1.")
        self.woe, self.monotonic = woe, monotonic
        data, proofs = prove_bits(self.public_key, self.y.tolist(), context=context,
                                  workers=self._workers, compute=self._compute)
        enc = EncryptedVector.from_bytes(self.public_key, data, 0, expected_len=len(self.y))
        return EncryptedLabels(self.public_key.to_bytes(), encode_ciphertexts(enc), proofs,
                               self.n_bins, woe, monotonic)

    def on_stats(self, host: str, msg: HostBinStats) -> list[BinStats]:
        """Decrypt the event counts per bin and check them."""
        sizes = list(msg.bins_per_feature)
        if len(sizes) != len(msg.features) or any(s < 1 for s in sizes):
            raise RemoteProtocolError(f"HostBinStats from {host} has inconsistent bin counts.")
        total = sum(sizes)
        counts = np.asarray(msg.counts)
        if counts.shape != (total,) or counts.dtype != np.int64 or (counts < 0).any():
            raise RemoteProtocolError(f"HostBinStats from {host} has malformed counts.")
        enc = decode_ciphertexts(self.public_key, msg.event_sums, peer=host,
                                 what="HostBinStats", expected_len=total, frac_bits=0)
        try:
            events = enc.decrypt(self._private_key)
        except CryptoError:
            raise RemoteProtocolError(
                f"HostBinStats from {host}: an event sum decrypts outside the range of a count."
            ) from None
        out, start = [], 0
        for name, k in zip(msg.features, sizes, strict=True):
            c = counts[start:start + k].tolist()
            e = events[start:start + k]
            if sum(c) != len(self.y) or any(ev < 0 or ev > cn for ev, cn in zip(e, c, strict=True)):
                raise RemoteProtocolError(
                    f"HostBinStats from {host}: bins of {name!r} do not partition the rows."
                )
            out.append(BinStats(name, c, e))
            start += k
        return out

    def own_stats(self, X: FloatArray, names: list[str]) -> list[BinStats]:
        """The guest's own features, binned in the clear."""
        return [bin_stats_clear(n, X[:, j], self.y, self.n_bins) for j, n in enumerate(names)]

    def add_own_features(self, X: FloatArray, names: list[str], party: str) -> None:
        """Add the guest's own features (binned in the clear, merged if monotonic) to the table."""
        own = self.own_stats(X, names)
        if self.monotonic:
            own = [merge_stats(s, monotonic_groups(s.counts[:-1], s.events[:-1])) for s in own]
        self._table.extend(iv_table_clear(own, party, self.total_events, self.total_rows))

    def merge_plan(self, stats: list[BinStats]) -> tuple[MergePlan, list[BinStats]]:
        """Monotonic merge of every feature's fine bins: the plan for the host, and merged stats."""
        plans = [monotonic_groups(s.counts[:-1], s.events[:-1]) for s in stats]
        msg = MergePlan([len(p) for p in plans], [b for p in plans for _, b in p])
        return msg, [merge_stats(s, p) for s, p in zip(stats, plans, strict=True)]

    def woe_values(self, stats: list[BinStats]) -> WoeValues:
        """The WOE of every bin of every feature, for the host's own encoder."""
        woes = [woe_iv(s.counts, s.events, self.total_events, self.total_rows)[0] for s in stats]
        return WoeValues([len(w) for w in woes],
                         np.asarray([v for w in woes for v in w], dtype=np.float64))

    def on_host_stats(self, host: str, msg: HostBinStats) -> list[MergePlan | WoeValues]:
        """Take ``host``'s statistics into the table; returns what to send it back, in order.

        A :class:`MergePlan` if this run is monotonic, then :class:`WoeValues`
        if it sends WOE values (of the merged bins, if merged).
        """
        stats = self.on_stats(host, msg)
        replies: list[MergePlan | WoeValues] = []
        if self.monotonic:
            plan, stats = self.merge_plan(stats)
            replies.append(plan)
        self._table.extend(iv_table_clear(stats, host, self.total_events, self.total_rows))
        if self.woe:
            replies.append(self.woe_values(stats))
        return replies

    def iv_table(self) -> list[dict[str, Any]]:
        """Every feature's IV row so far (own features first on ties), highest IV first."""
        return sorted(self._table, key=lambda r: -r["iv"])
