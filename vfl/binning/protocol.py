"""Federated IV: the guest's labels, encrypted under the guest's own key, binned by hosts.

Pure step classes plus the two I/O loops. What each side learns is in
``protocols/specs/binning.md``. The guest owns the key, so hosts do not trust
it: every ``[[y_i]]`` comes with a zero-knowledge proof that ``y_i`` is 0 or 1
(:mod:`vfl.crypto.zkp`), each host verifies all of them before summing, caps
the guest's key size by its own :class:`~vfl.policy.SecurityPolicy`, and
re-randomises every bin sum with a uniformly random ``n``-th residue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from vfl.binning.core import (
    BinStats,
    assign_bins,
    bin_stats_clear,
    iv_table_clear,
    merge_cuts,
    merge_stats,
    monotonic_groups,
    quantile_bins,
    woe_iv,
)
from vfl.binning.woe import WoeEncoder
from vfl.channel import Channel
from vfl.codec import message
from vfl.crypto.paillier import PaillierPublicKey, check_key_size, generate_keypair
from vfl.crypto.vector import EncryptedVector
from vfl.crypto.wire import Ciphertexts, decode_ciphertexts, encode_ciphertexts
from vfl.crypto.zkp import check_prover_modulus, prove_bits, uniform_rerandomize, verify_bits
from vfl.exceptions import ConfigError, CryptoError, RemoteProtocolError
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.types import FloatArray

__all__ = ["EncryptedLabels", "HostBinStats", "BinningGuest", "BinningHost",
           "labels_context", "labels_message_bytes", "run_binning_guest", "run_binning_host"]



@message("binning.EncryptedLabels/2")
@dataclass(frozen=True, slots=True)
class EncryptedLabels:
    """Guest → host: its own public key, ``[[y_i]]`` for every aligned row, and proofs.

    ``proofs`` holds one fixed-width proof per row (``vfl.crypto.zkp.proof_width``
    bytes, row after row) that ``[[y_i]]`` encrypts 0 or 1, bound to the job,
    this protocol step and the guest's name.
    """

    n: bytes
    labels: Ciphertexts
    proofs: bytes
    n_bins: int
    woe: bool  # the guest will send WOE values per bin back (for WOE encoding)
    monotonic: bool  # the guest will send a merge plan for monotonic bins


@message("binning.MergePlan/1")
@dataclass(frozen=True, slots=True)
class MergePlan:
    """Guest → host: per feature, the last fine bin of each merged (monotonic) bin."""

    groups_per_feature: list[int]
    group_ends: list[int]


@message("binning.WoeValues/1")
@dataclass(frozen=True, slots=True)
class WoeValues:
    """Guest → host: the WOE of each of the host's bins (reveals the label mix per bin)."""

    bins_per_feature: list[int]
    woe: np.ndarray


@message("binning.HostBinStats/1")
@dataclass(frozen=True, slots=True)
class HostBinStats:
    """Host → guest: per feature and bin, the row count and ``[[sum of y]]``."""

    features: list[str]
    bins_per_feature: list[int]
    counts: np.ndarray
    event_sums: Ciphertexts


class BinningGuest:
    """Guest side. Learns, per host feature, the row and event counts per host bin.

    Never sees host values or bin edges.
    """

    def __init__(self, y: npt.ArrayLike, *, key_bits: int = 2048,
                 allow_insecure_key_size: bool = False, n_bins: int = 10,
                 workers: int | None = None) -> None:
        self.y = np.asarray(y).astype(np.int64)
        self.n_bins = n_bins
        check_key_size(key_bits, allow_insecure_key_size=allow_insecure_key_size)
        self.public_key, self._private_key = generate_keypair(
            key_bits, allow_insecure_key_size=allow_insecure_key_size)
        self._workers = workers

    def labels_message(self, woe: bool = False, monotonic: bool = False, *,
                       context: bytes = b"") -> EncryptedLabels:
        """Encrypt the labels once, with their 0/1 proofs; the same message goes to every host.

        ``context`` binds the proofs (see :func:`labels_context`); hosts must
        verify with the same bytes.
        """
        if not np.isin(self.y, (0, 1)).all():
            raise ConfigError("Federated binning needs labels that are 0 or 1.")
        data, proofs = prove_bits(self.public_key, self.y.tolist(), context=context,
                                  workers=self._workers)
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


class BinningHost:
    """Host side. Learns nothing: the labels arrive encrypted under the guest's key.

    Trusts neither the guest's key nor its labels: the key must fit this
    host's policy, every label must come with a valid proof that it is 0 or 1,
    and every bin sum is re-randomised uniformly before it goes back.

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
        Processes for proof verification (``None``: the machine's cores from
        8,000 rows on).
    """

    def __init__(self, X: FloatArray, names: list[str], *, party: str,
                 reveal_names: bool = False, policy: SecurityPolicy = DEFAULT_POLICY,
                 workers: int | None = None) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.names = list(names)
        self.party = party
        self.reveal_names = reveal_names
        self.policy = policy
        self.workers = workers
        self.cuts: list[FloatArray] = []
        self.encoder: WoeEncoder | None = None

    def aliases(self) -> list[str]:
        """What the guest will call this host's features."""
        if self.reveal_names:
            return [f"{self.party}:{n}" for n in self.names]
        return [f"{self.party}_f{j}" for j in range(len(self.names))]

    def on_merge(self, msg: MergePlan, *, peer: str = "guest") -> None:
        """Merge this host's fine bins as the guest's plan says (monotonic binning)."""
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
        self.encoder = WoeEncoder(list(self.cuts), _check_woe(self, msg, peer))
        return self.encoder

    def on_labels(self, msg: EncryptedLabels, *, peer: str = "guest",
                  context: bytes = b"") -> HostBinStats:
        """Check the guest's key and 0/1 proofs, then bin every column and sum per bin.

        ``context`` must be the bytes the guest bound its proofs to
        (:func:`labels_context`).

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
        try:
            bad = verify_bits(key, msg.labels.data, msg.proofs, context=context,
                              workers=self.workers)
        except CryptoError:
            raise RemoteProtocolError(
                f"EncryptedLabels from {peer}: the 0/1 proofs do not match the labels "
                "in length; binning aborted.") from None
        if bad is not None:
            raise RemoteProtocolError(
                f"EncryptedLabels from {peer}: the proof that label {bad} is 0 or 1 does not "
                "verify; binning aborted.")
        sizes, counts, sums = self._bin_sums(enc, msg.n_bins)
        # an empty product is 1 = an unrandomised encryption of 0: re-randomise everything,
        # with r^n for r uniform in Z*_n (the guest chose p and q; DJN's h_s^a would leave
        # it the class of each sum modulo <h_s>, e.g. the Jacobi symbol of a tagged row)
        out = EncryptedVector(enc.public_key, uniform_rerandomize(enc.public_key, sums), 0)
        return HostBinStats(self.aliases(), sizes, np.asarray(counts, dtype=np.int64),
                            encode_ciphertexts(out))

    def _bin_sums(self, enc: EncryptedVector, n_bins: int
                  ) -> tuple[list[int], list[int], list[Any]]:
        """Equal-frequency bins of every column; ``[[sum of y]]`` per bin (not re-randomised).

        Only called on labels whose proofs verified.
        """
        n2 = enc.public_key.nsquare
        cts = enc.ciphertexts
        sums: list[Any] = []
        counts: list[int] = []
        sizes: list[int] = []
        self.cuts = []
        for j in range(self.X.shape[1]):
            cuts = quantile_bins(self.X[:, j], n_bins)
            self.cuts.append(cuts)
            idx = assign_bins(self.X[:, j], cuts)
            nb = len(cuts) + 2
            acc = [gmpy2.mpz(1)] * nb
            for i, b in enumerate(idx.tolist()):
                acc[b] = acc[b] * cts[i] % n2
            counts.extend(np.bincount(idx, minlength=nb).tolist())
            sums.extend(acc)
            sizes.append(nb)
        return sizes, counts, sums

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


def _check_woe(host: BinningHost, msg: WoeValues, peer: str) -> list[FloatArray]:
    sizes = [len(c) + 2 for c in host.cuts]
    w = np.asarray(msg.woe)
    if list(msg.bins_per_feature) != sizes or w.shape != (sum(sizes),) or not np.isfinite(w).all():
        raise RemoteProtocolError(f"WoeValues from {peer} do not match this host's bins.")
    out, start = [], 0
    for k in sizes:
        out.append(w[start:start + k].astype(np.float64))
        start += k
    return out


def labels_message_bytes(n_rows: int, key_bits: int) -> int:
    """Upper bound on an encoded ``EncryptedLabels`` for ``n_rows`` rows under a ``key_bits`` key.

    Per row one ciphertext (``2·key_bits/8`` bytes) and one proof
    (:func:`vfl.crypto.zkp.proof_width`: two more ciphertext widths, 16 bytes,
    two ``key_bits/8``); plus 64 KiB for the modulus, headers and framing.
    """
    n_bytes = (key_bits + 7) // 8
    return n_rows * (3 * 2 * n_bytes + 16 + 2 * n_bytes) + (1 << 16)


def labels_context(channel: Channel, guest: str) -> bytes:
    """What the 0/1 proofs are bound to: this protocol step, the job id and the guest.

    Both sides derive it from their own channel (the transport refuses
    messages of another job), so a proof made for another job, step or guest
    does not verify.
    """
    job = str(getattr(channel, "job", ""))
    return b"\x00".join([b"binning.EncryptedLabels/2", job.encode(), guest.encode()])


def run_binning_guest(channel: Channel, X: FloatArray, names: list[str], y: npt.ArrayLike, *,
                      hosts: list[str], n_bins: int = 10, key_bits: int = 2048,
                      allow_insecure_key_size: bool = False,
                      send_woe: bool = False, monotonic: bool = False,
                      policy: SecurityPolicy = DEFAULT_POLICY,
                      workers: int | None = None) -> list[dict[str, Any]]:
    """Federated IV table: the guest's own features and every host's.

    With ``send_woe`` the guest also returns to each host the WOE of its bins,
    so the host can WOE-encode its own columns. The guest's key is refused
    locally if it is larger than ``policy.max_key_bits`` (its hosts would
    refuse it); a key below 2048 bits needs ``allow_insecure_key_size`` or
    ``policy.allow_insecure_key_size``. ``workers`` are the processes that
    make the 0/1 proofs (``None``: the machine's cores from 2,000 rows on).
    """
    if key_bits > policy.max_key_bits:
        raise ConfigError(f"A {key_bits}-bit binning key is larger than the security setting "
                          f"'max_key_bits' ({policy.max_key_bits}); hosts would refuse it.")
    guest = BinningGuest(y, key_bits=key_bits, n_bins=n_bins, workers=workers,
                         allow_insecure_key_size=allow_insecure_key_size
                         or policy.allow_insecure_key_size)
    msg = guest.labels_message(send_woe, monotonic,
                               context=labels_context(channel, channel.party))
    for h in hosts:
        channel.send(h, msg)
    total_events, total_rows = int(guest.y.sum()), len(guest.y)
    own = guest.own_stats(X, names)
    if monotonic:
        own = [merge_stats(s, monotonic_groups(s.counts[:-1], s.events[:-1])) for s in own]
    table = iv_table_clear(own, channel.party, total_events, total_rows)
    for h in hosts:
        stats = guest.on_stats(h, channel.recv(h, HostBinStats))
        if monotonic:
            plans = [monotonic_groups(s.counts[:-1], s.events[:-1]) for s in stats]
            channel.send(h, MergePlan([len(p) for p in plans], [b for p in plans for _, b in p]))
            stats = [merge_stats(s, p) for s, p in zip(stats, plans, strict=True)]
        table.extend(iv_table_clear(stats, h, total_events, total_rows))
        if send_woe:
            woes = [woe_iv(s.counts, s.events, total_events, total_rows)[0] for s in stats]
            channel.send(h, WoeValues([len(w) for w in woes],
                                      np.asarray([v for w in woes for v in w], dtype=np.float64)))
    return sorted(table, key=lambda r: -r["iv"])


def run_binning_host(channel: Channel, X: FloatArray, names: list[str], *, guest: str,
                     reveal_names: bool = False, policy: SecurityPolicy = DEFAULT_POLICY,
                     workers: int | None = None) -> BinningHost:
    """Answer the guest's binning request; returns the host state (with its bin edges).

    ``policy`` is this host's own: it bounds the guest's key size. The guest's
    0/1 proofs are verified (over ``workers`` processes) before anything is
    summed; a bad proof raises :class:`RemoteProtocolError` naming the guest
    and the first failing row.
    """
    host = BinningHost(X, names, party=channel.party, reveal_names=reveal_names, policy=policy,
                       workers=workers)
    limit = getattr(channel, "limit_message_size", None)
    if limit is not None:  # the labels and proofs of our rows under the largest key we accept
        limit(guest, min(labels_message_bytes(len(host.X), policy.max_key_bits),
                         policy.max_message_bytes))
    request = channel.recv(guest, EncryptedLabels)
    if limit is not None:
        limit(guest, policy.max_message_bytes)
    channel.send(guest, host.on_labels(request, peer=guest, context=labels_context(channel, guest)))
    if request.monotonic:
        host.on_merge(channel.recv(guest, MergePlan), peer=guest)
    if request.woe:
        host.on_woe(channel.recv(guest, WoeValues), peer=guest)
    return host
