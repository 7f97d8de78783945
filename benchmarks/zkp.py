"""Cost of the 0/1 proofs of federated binning (``vfl.crypto.zkp``), per row.

Measures, at one key size (default 2048 bits) on a few hundred rows:

* plain encryption of 0/1 labels (the DJN fixed-base randomiser, what binning
  did before the proofs) for comparison;
* encrypt + prove (``prove_bits``), one process and with worker processes;
* verification, batched (``verify_bits``), one process and with workers;
* verification one row at a time (the two exact equations per row), on a
  sample, to show what batching saves;
* the prover's table build and the verifier's modulus sieve (once per run);
* the host's uniform re-randomisation of one bin sum.

``python -m benchmarks.zkp [--rows 300] [--bits 2048] [--workers 2]``. Short
(about a minute at 2048 bits); the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time

import numpy as np

from vfl.crypto import zkp
from vfl.crypto.paillier import PaillierPublicKey, Randomizer, generate_keypair
from vfl.crypto.vector import EncryptedVector


def _time(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - t, out


def run(rows: int, bits: int, workers: int) -> dict[str, float]:
    """Seconds per row (and once-per-run seconds) for each step."""
    pk, _ = generate_keypair(bits, allow_insecure_key_size=bits < 2048)
    pk = PaillierPublicKey(pk.n)
    labels = [secrets.randbits(1) for _ in range(rows)]
    ctx = b"benchmark"
    out: dict[str, float] = {"rows": rows, "key_bits": bits, "workers": workers}

    t, rnd = _time(Randomizer, pk, window_bits=8)
    out["randomizer_table_s"] = t
    t, _ = _time(EncryptedVector.encrypt, pk, np.asarray(labels, dtype=np.int64), 0, rnd)
    out["encrypt_only_ms_per_row"] = 1e3 * t / rows

    t, prover = _time(zkp.BitProver, pk)
    out["prover_tables_s"] = t
    t, _ = _time(prover.commit, labels)
    out["commit_ms_per_row"] = 1e3 * t / rows

    t, (cts, proofs) = _time(zkp.prove_bits, pk, labels, context=ctx, workers=1)
    out["prove_ms_per_row_1core"] = 1e3 * t / rows  # includes the tables (once per run)
    if workers > 1:
        t, _ = _time(zkp.prove_bits, pk, labels, context=ctx, workers=workers)
        out[f"prove_ms_per_row_{workers}workers"] = 1e3 * t / rows  # includes pool start-up

    t, _ = _time(zkp.check_prover_modulus, pk)
    out["modulus_sieve_s"] = t
    t, bad = _time(zkp.verify_bits, pk, cts, proofs, context=ctx, workers=1)
    assert bad is None
    out["verify_batched_ms_per_row_1core"] = 1e3 * t / rows
    if workers > 1:
        t, bad = _time(zkp.verify_bits, pk, cts, proofs, context=ctx, workers=workers)
        assert bad is None
        out[f"verify_batched_ms_per_row_{workers}workers"] = 1e3 * t / rows

    # one row at a time, exactly (what the batch replaces), on a sample
    sample = min(rows, 40)
    parsed = zkp._parse_rows(pk, cts, proofs)
    es = zkp._challenges(zkp._transcript_hash(pk, ctx, rows, cts, proofs, zkp.proof_width(pk)),
                         rows)
    t = time.perf_counter()
    for i in range(sample):
        row = parsed[i]
        assert row is not None and zkp._row_holds(pk, row, es[i])
    out["verify_single_ms_per_row"] = 1e3 * (time.perf_counter() - t) / sample
    # the host's re-randomisation of each bin sum (uniform r^n: one full exponentiation)
    sums = zkp._parse_rows(pk, cts, proofs)[:sample]
    t, _ = _time(zkp.uniform_rerandomize, pk, [r[0] for r in sums if r is not None])
    out["host_rerandomize_ms_per_bin_sum"] = 1e3 * t / sample
    out["proof_bytes_per_row"] = zkp.proof_width(pk)
    out["ciphertext_bytes_per_row"] = pk.ciphertext_bytes
    return out


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    res = run(args.rows, args.bits, args.workers)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()},
                     indent=1))


if __name__ == "__main__":
    main()
