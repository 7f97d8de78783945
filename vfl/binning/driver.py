"""The I/O loops that run federated binning over any :class:`~vfl.channel.Channel`.

Only the order of messages lives here; every decision is in
:class:`~vfl.binning.guest.BinningGuest` and :class:`~vfl.binning.host.BinningHost`.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from vfl.binning.guest import BinningGuest
from vfl.binning.host import BinningHost
from vfl.binning.messages import EncryptedLabels, HostBinStats, MergePlan, WoeValues, proof_context
from vfl.channel import Channel
from vfl.crypto.engine import ComputeConfig
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.types import FloatArray

__all__ = ["labels_context", "run_binning_guest", "run_binning_host"]


def labels_context(channel: Channel, guest: str) -> bytes:
    """What the 0/1 proofs are bound to: this protocol step, the job id and the guest.

    Both sides derive it from their own channel (the transport refuses
    messages of another job), so a proof made for another job, step or guest
    does not verify.
    """
    return proof_context(str(getattr(channel, "job", "")), guest)


def run_binning_guest(channel: Channel, X: FloatArray, names: list[str], y: npt.ArrayLike, *,
                      hosts: list[str], n_bins: int = 10, key_bits: int = 2048,
                      allow_insecure_key_size: bool = False,
                      send_woe: bool = False, monotonic: bool = False,
                      policy: SecurityPolicy = DEFAULT_POLICY,
                      workers: int | None = None,
                      compute: ComputeConfig | None = None) -> list[dict[str, Any]]:
    """Federated IV table: the guest's own features and every host's.

    With ``send_woe`` the guest also returns to each host the WOE of its bins,
    so the host can WOE-encode its own columns. The guest's key is refused
    locally if it is larger than ``policy.max_key_bits`` (its hosts would
    refuse it); a key below 2048 bits needs ``allow_insecure_key_size`` or
    ``policy.allow_insecure_key_size``. ``workers`` are the processes that
    make the 0/1 proofs (``None``: the machine's cores from 2,000 rows on);
    ``compute`` with ``engine="dask"`` makes them on the guest's own cluster.
    """
    guest = BinningGuest(y, key_bits=key_bits, n_bins=n_bins, workers=workers,
                         allow_insecure_key_size=allow_insecure_key_size, policy=policy,
                         compute=compute)
    msg = guest.labels_message(send_woe, monotonic,
                               context=labels_context(channel, channel.party))
    for h in hosts:
        channel.send(h, msg)
    guest.add_own_features(X, names, channel.party)
    for h in hosts:
        for reply in guest.on_host_stats(h, channel.recv(h, HostBinStats)):
            channel.send(h, reply)
    return guest.iv_table()


def run_binning_host(channel: Channel, X: FloatArray, names: list[str], *, guest: str,
                     reveal_names: bool = False, policy: SecurityPolicy = DEFAULT_POLICY,
                     workers: int | None = None,
                     compute: ComputeConfig | None = None) -> BinningHost:
    """Answer the guest's binning request; returns the host state (with its bin edges).

    ``policy`` is this host's own: it bounds the guest's key size. The guest's
    0/1 proofs are verified (over ``workers`` processes, or on the host's own
    Dask cluster with ``compute``'s ``engine="dask"``, which also runs the
    per-bin sums) before anything is summed; a bad proof raises :class:`~vfl.exceptions.RemoteProtocolError`
    naming the guest and the first failing row.
    """
    host = BinningHost(X, names, party=channel.party, reveal_names=reveal_names, policy=policy,
                       workers=workers, compute=compute)
    limit = getattr(channel, "limit_message_size", None)
    if limit is not None:
        limit(guest, host.labels_size_limit())
    request = channel.recv(guest, EncryptedLabels)
    if limit is not None:
        limit(guest, host.size_limit())
    channel.send(guest, host.on_labels(request, peer=guest, context=labels_context(channel, guest)))
    if host.awaits_merge_plan:
        host.on_merge(channel.recv(guest, MergePlan), peer=guest)
    if host.awaits_woe:
        host.on_woe(channel.recv(guest, WoeValues), peer=guest)
    return host
