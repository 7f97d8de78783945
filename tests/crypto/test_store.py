"""The guest's per-row ciphertext store: on disk, read back exactly, gone when closed."""

from __future__ import annotations

import os

import gmpy2
import numpy as np

from vfl.crypto.store import CiphertextStore


def test_store_reads_back_what_it_was_given_and_none_elsewhere():
    rng = np.random.default_rng(4)
    width = 64
    cts = [gmpy2.mpz(int(x)) << 400 | int(x) for x in rng.integers(1, 2**62, size=50)]
    with CiphertextStore(1000, width) as store:
        rows = rng.choice(1000, 50, replace=False).tolist()
        store.put(rows, cts)
        got = store.get(rows[::-1])
        assert got == cts[::-1]
        others = [r for r in range(1000) if r not in set(rows)][:20]
        assert store.get(others) == [None] * 20
        # replacing a row keeps the others
        store.put([rows[0]], [gmpy2.mpz(7)])
        assert store.get(rows[:2]) == [gmpy2.mpz(7), cts[1]]
        assert store.present.sum() == 50


def test_store_file_is_anonymous_and_closed():
    store = CiphertextStore(10, 16)
    fd = store._fd
    # created unlinked: the file has no name, so nothing is left behind if the process dies
    assert os.fstat(fd).st_nlink == 0
    store.close()
    try:
        os.fstat(fd)
        still_open = True
    except OSError:
        still_open = False
    assert not still_open
