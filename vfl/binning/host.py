"""Federated binning, host side: pure protocol logic, no I/O.

The labels arrive encrypted under the guest's own key, so the host does not
trust it: every ``[[y_i]]`` comes with a zero-knowledge proof that ``y_i`` is 0
or 1 (:mod:`vfl.crypto.zkp`), the host verifies all of them before summing,
caps the guest's key size by its own :class:`~vfl.policy.SecurityPolicy`, and
re-randomises every bin sum with a uniformly random ``n``-th residue. What it
learns is in ``protocols/specs/binning.md``.
"""

from __future__ import annotations

import numpy as np

from vfl.binning.core import assign_bins, merge_cuts, quantile_bins
from vfl.binning.messages import EncryptedLabels, HostBinStats, MergePlan, WoeValues
from vfl.binning.woe import WoeEncoder
from vfl.crypto.engine import ComputeConfig
from vfl.crypto.paillier import PaillierPublicKey, check_key_size
from vfl.crypto.tasks import TaskRunner, sum_by_groups
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import decode_ciphertexts, encode_ciphertexts
from vfl.crypto.zkp import check_prover_modulus, prover_tasks, uniform_rerandomize, verify_bits
from vfl.exceptions import CryptoError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.types import FloatArray

__all__ = ["BinningHost", "labels_message_bytes"]


def labels_message_bytes(n_rows: int, key_bits: int) -> int:
    """Upper bound on an encoded ``EncryptedLabels`` for ``n_rows`` rows under a ``key_bits`` key.

    Per row one ciphertext (``2·key_bits/8`` bytes) and one proof
    (:func:`vfl.crypto.zkp.proof_width`: two more ciphertext widths, 16 bytes,
    two ``key_bits/8``); plus 64 KiB for the modulus, headers and framing.
    """
    n_bytes = (key_bits + 7) // 8
    return n_rows * (3 * 2 * n_bytes + 16 + 2 * n_bytes) + (1 << 16)


class BinningHost:
    """Host side. Learns nothing: the labels arrive encrypted under the guest's key.

    Trusts neither the guest's key nor its labels: the key must fit this
    host's policy, every label must come with a valid proof that it is 0 or 1,
    and every bin sum is re-randomised uniformly before it goes back.

    Steps: :meth:`on_labels` (returns the statistics), then
    :meth:`on_merge` if :attr:`awaits_merge_plan`, then :meth:`on_woe` if
    :attr:`awaits_woe`. :meth:`labels_size_limit` caps the guest's first
    message; :meth:`size_limit` applies after it.

    Parameters
    ----------
    X : ndarray (n_rows, n_features), this host's raw columns in the PSI order
    names : list of str
    party : str
        Used in aliases when names are not revealed.
    reveal_names : bool
        Send real feature names; otherwise stable aliases ``<party>_f<j>``.
    policy : SecurityPolicy
        This host's own limits: the guest's key must be at least 2048 bits
        (unless ``allow_insecure_key_size``) and at most ``max_key_bits``.
    workers : int, optional
        Processes for proof verification and the per-bin sums (``None``: the
        machine's cores from 8,000 rows on).
    compute : ComputeConfig, optional
        This host's ``[compute]``; ``engine="dask"`` runs the verification's
        batch products and the per-bin sums on its own cluster (tasks see the
        guest's encrypted labels and this host's bin indices, never its
        feature values). Default: the current
        :func:`~vfl.crypto.engine.compute_context`.
    """

    def __init__(self, X: FloatArray, names: list[str], *, party: str,
                 reveal_names: bool = False, policy: SecurityPolicy = DEFAULT_POLICY,
                 workers: int | None = None, compute: ComputeConfig | None = None) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.names = list(names)
        self.party = party
        self.reveal_names = reveal_names
        self.policy = policy
        self.workers = workers
        self.compute = compute
        self.cuts: list[FloatArray] = []
        self.encoder: WoeEncoder | None = None
        self.awaits_merge_plan = False  # the guest's request announced a MergePlan
        self.awaits_woe = False  # ... and WoeValues

    def aliases(self) -> list[str]:
        """What the guest will call this host's features."""
        if self.reveal_names:
            return [f"{self.party}:{n}" for n in self.names]
        return [f"{self.party}_f{j}" for j in range(len(self.names))]

    def labels_size_limit(self) -> int:
        """Largest ``EncryptedLabels`` accepted: this host's rows under the largest key it accepts."""
        return min(labels_message_bytes(len(self.X), self.policy.max_key_bits),
                   self.policy.max_message_bytes)

    def size_limit(self) -> int:
        """Largest later message from the guest (the policy's ceiling)."""
        return self.policy.max_message_bytes

    def on_merge(self, msg: MergePlan, *, peer: str = "guest") -> None:
        """Merge this host's fine bins as the guest's plan says (monotonic binning)."""
        self.awaits_merge_plan = False
        if len(msg.groups_per_feature) != len(self.cuts):
            raise RemoteProtocolError(f"MergePlan from {peer} has the wrong number of features.")
        start, merged = 0, []
        for cuts, k in zip(self.cuts, msg.groups_per_feature, strict=True):
            ends = list(msg.group_ends[start:start + k])
            start += k
            n_fine = len(cuts) + 1
            steps = zip(ends[:-1], ends[1:], strict=True)
            if (k < 1 or len(ends) != k or ends[-1] != n_fine - 1 or ends[0] < 0
                    or any(b <= a for a, b in steps)):
                raise RemoteProtocolError(f"MergePlan from {peer} is not a partition of the bins.")
            groups = [(0 if i == 0 else ends[i - 1] + 1, e) for i, e in enumerate(ends)]
            merged.append(merge_cuts(cuts, groups))
        if start != len(msg.group_ends):
            raise RemoteProtocolError(f"MergePlan from {peer} has extra entries.")
        self.cuts = merged

    def on_woe(self, msg: WoeValues, *, peer: str = "guest") -> WoeEncoder:
        """Build this host's WOE encoder from the guest's per-bin values."""
        self.awaits_woe = False
        self.encoder = WoeEncoder(list(self.cuts), self._check_woe(msg, peer))
        return self.encoder

    def on_labels(self, msg: EncryptedLabels, *, peer: str = "guest",
                  context: bytes = b"") -> HostBinStats:
        """Check the guest's key and 0/1 proofs, then bin every column and sum per bin.

        ``context`` must be the bytes the guest bound its proofs to
        (:func:`vfl.binning.messages.proof_context`).

        Raises
        ------
        RemoteProtocolError
            If the guest's key is outside this host's policy or malformed, the
            request is malformed, or a proof fails (naming the first failing row).
        """
        key = self._guest_key(msg.n, peer)
        if not 2 <= msg.n_bins <= 100:
            raise RemoteProtocolError(f"{peer} asked for {msg.n_bins} bins; expected 2..100.")
        enc = decode_ciphertexts(key, msg.labels, peer=peer, what="EncryptedLabels",
                                 expected_len=self.X.shape[0], frac_bits=0)
        with prover_tasks(key, len(enc), workers=self.workers, compute=self.compute) as tasks:
            try:
                bad = verify_bits(key, msg.labels.data, msg.proofs, context=context, tasks=tasks)
            except CryptoError:
                raise RemoteProtocolError(
                    f"EncryptedLabels from {peer}: the 0/1 proofs do not match the labels "
                    "in length; binning aborted.") from None
            if bad is not None:
                raise RemoteProtocolError(
                    f"EncryptedLabels from {peer}: the proof that label {bad} is 0 or 1 does "
                    "not verify; binning aborted.")
            sizes, counts, sums = self._bin_sums(enc, msg.labels.data, msg.n_bins, tasks)
        # an empty product is 1 = an unrandomised encryption of 0: re-randomise everything,
        # with r^n for r uniform in Z*_n (the guest chose p and q; DJN's h_s^a would leave
        # it the class of each sum modulo <h_s>, e.g. the Jacobi symbol of a tagged row)
        pk = sums.public_key
        out = EncryptedVector(pk, uniform_rerandomize(pk, sums.ciphertexts), 0)
        self.awaits_merge_plan, self.awaits_woe = msg.monotonic, msg.woe
        return HostBinStats(self.aliases(), sizes, np.asarray(counts, dtype=np.int64),
                            encode_ciphertexts(out))

    def _bin_sums(self, enc: EncryptedVector, data: bytes, n_bins: int, tasks: TaskRunner
                  ) -> tuple[list[int], list[int], EncryptedVector]:
        """Equal-frequency bins of every column; ``[[sum of y]]`` per bin (not re-randomised).

        Only called on labels whose proofs verified (``data``: their bytes).
        Rows are split over ``tasks``; each chunk returns its per-bin products
        for every column, multiplied here (the same ciphertexts as
        :meth:`~vfl.crypto.vector.EncryptedVector.sum_by_group`). Returns the
        bins per feature, the row count per bin and the sums, feature after
        feature.
        """
        pk = enc.public_key
        rows, cols = self.X.shape
        self.cuts = [quantile_bins(self.X[:, j], n_bins) for j in range(cols)]
        sizes = [len(c) + 2 for c in self.cuts]
        idx = np.empty((rows, cols), dtype=np.int32)
        for j, cuts in enumerate(self.cuts):
            idx[:, j] = assign_bins(self.X[:, j], cuts)
        counts = [int(k) for j in range(cols)
                  for k in np.bincount(idx[:, j], minlength=sizes[j])]
        return sizes, counts, sum_by_groups(pk, data, idx, sizes, tasks)

    def _check_woe(self, msg: WoeValues, peer: str) -> list[FloatArray]:
        sizes = [len(c) + 2 for c in self.cuts]
        w = np.asarray(msg.woe)
        if (list(msg.bins_per_feature) != sizes or w.shape != (sum(sizes),)
                or not np.isfinite(w).all()):
            raise RemoteProtocolError(f"WoeValues from {peer} do not match this host's bins.")
        out, start = [], 0
        for k in sizes:
            out.append(w[start:start + k].astype(np.float64))
            start += k
        return out

    def _guest_key(self, n: bytes, peer: str) -> PaillierPublicKey:
        """The guest's public key, if this host's policy accepts it."""
        policy = self.policy
        if len(n) * 8 > policy.max_key_bits + 7:  # before parsing anything
            raise RemoteProtocolError(
                f"EncryptedLabels from {peer}: its Paillier key is larger than the "
                f"{policy.max_key_bits} bits this host accepts.")
        try:
            key = PaillierPublicKey.from_bytes(n)
        except CryptoError:
            raise RemoteProtocolError(
                f"EncryptedLabels from {peer}: its Paillier modulus is malformed.") from None
        if key.bits > policy.max_key_bits:
            raise RemoteProtocolError(
                f"EncryptedLabels from {peer}: its {key.bits}-bit Paillier key is larger than the "
                f"{policy.max_key_bits} bits this host accepts.")
        try:
            check_key_size(key.bits, allow_insecure_key_size=policy.allow_insecure_key_size)
            check_prover_modulus(key)
        except CryptoError as exc:
            raise RemoteProtocolError(f"EncryptedLabels from {peer}: {exc}") from None
        return key
