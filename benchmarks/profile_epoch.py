"""Where an epoch's time goes: the roles' step methods called in sequence, timed per phase.

    python -m benchmarks.profile_epoch [--data ../shared/data] [--key-bits 2048] [--workers N]

Runs one epoch of default_credit with guest, host and arbiter driven directly
(no transport, one process, each party with its own worker pool) and prints
the wall time of each protocol phase summed over the epoch.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks._data import default_credit
from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.lr import ArbiterParty, GuestParty, HostParty, TrainConfig, batch_plan
from vfl.lr.messages import HostHello


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    Xg, y, Xh = default_credit(args.data)
    cfg = TrainConfig(epochs=1, tol=0.0, validation_fraction=0.0, key_bits=args.key_bits,
                      allow_insecure_key_size=args.key_bits < 2048)
    guest = GuestParty("guest", Xg, y, cfg, ["host"], workers=args.workers)
    setup = guest.setup({"host": HostHello(len(y), Xh.shape[1])})
    host = HostParty("host", Xh, setup, 0, workers=args.workers)
    t = time.perf_counter()
    arbiter = ArbiterParty(guest.arbiter_setup(setup), "guest", allow_insecure_key_size=args.key_bits < 2048)
    keygen = time.perf_counter() - t
    t = time.perf_counter()
    for p in (guest, host):
        p.on_public_key(arbiter.announce(), peer="arbiter",
                        allow_insecure_key_size=args.key_bits < 2048)
    setup_s = time.perf_counter() - t
    phases: dict[str, float] = defaultdict(float)

    def wire(msg):  # what the transport would do: encode and decode
        t0 = time.perf_counter()
        out = decode_envelope(encode_envelope(Envelope("j", 0, "a", "b", msg))).body
        phases["codec (encode+decode)"] += time.perf_counter() - t0
        return out

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        phases[name] += time.perf_counter() - t0
        return out

    plan = batch_plan(len(y), cfg.batch_size, cfg.seed, 0)
    t_epoch = time.perf_counter()
    for b, rows in enumerate(plan):
        fwd = wire(timed("host: encrypt scores", host.forward, 0, b, rows))
        guest.on_forward("host", fwd, 0, b)
        res = timed("guest: residual + re-randomise", guest.residuals, 0, b, rows)
        masked_h, _ = timed("host: X^T[[d]] + mask", host.on_residual, wire(res["host"]))
        masked_g = timed("guest: X^T[[d]] + mask", guest.masked_gradient)
        guest.close_batch()
        dg = timed("arbiter: decrypt", arbiter.on_masked_gradient, "guest", wire(masked_g), 0, b)
        dh = timed("arbiter: decrypt", arbiter.on_masked_gradient, "host", wire(masked_h), 0, b)
        timed("parties: unmask + update", lambda m: guest.on_decrypted(m, peer="arbiter"), wire(dg))
        timed("parties: unmask + update", lambda m: host.on_decrypted(m, peer="arbiter"), wire(dh))
    loss = wire(guest.epoch_loss(0))
    timed("arbiter: loss", arbiter.on_epoch_loss, loss, 0)
    total = time.perf_counter() - t_epoch
    guest.close()
    host.close()
    print(f"key generation {keygen:.1f} s; worker start + tables {setup_s:.1f} s (once per job)")
    print(f"epoch of {len(y):,} rows, {len(plan)} batches: {total:.1f} s wall")
    for name, sec in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34s} {sec:6.2f} s  {100 * sec / total:5.1f} %")
    print(f"  {'other':34s} {total - sum(phases.values()):6.2f} s")
    print("weights finite:", bool(np.isfinite(guest.coef).all() and np.isfinite(host.coef).all()))


if __name__ == "__main__":
    main()
