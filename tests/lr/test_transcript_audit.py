"""Audit of everything the parties send during training.

* every ciphertext is randomised: c != 1 + m*n, i.e. (c - 1) mod n != 0, and
  (c - 1)/n is not the plaintext (an unrandomised Paillier ciphertext decodes
  with the public key alone);
* encryptions of one value differ (the first batch encrypts only zeros);
* nothing a party sends repeats a ciphertext it received (re-randomised);
* the arbiter decrypts only uniformly masked gradient values.
"""

from __future__ import annotations

import dataclasses

import gmpy2

from vfl.codec import decode_envelope
from vfl.crypto.wire import Ciphertexts
from vfl.lr.messages import DecryptedGradient, HostForward, MaskedGradient

from .trio import run_trio, small_config


def _ciphertext_fields(body):
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        if isinstance(value, Ciphertexts):
            yield f.name, value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _ciphertext_fields(value)


def _split(ct: Ciphertexts, width: int) -> list[int]:
    return [int.from_bytes(ct.data[i:i + width], "big") for i in range(0, len(ct.data), width)]


def test_transcript_audit(breast):
    Xg, y, Xh = breast
    cfg = small_config(epochs=2, batch_size=128)
    run = run_trio(Xg, y, [Xh[:, :15], Xh[:, 15:]], cfg, record=True)
    priv = run.arbiter.private_key
    pub = priv.public_key
    n = int(pub.n)
    width = pub.ciphertext_bytes

    checked = 0
    for party, transcript in run.transcripts.items():
        received = set()
        for direction, _peer, data in transcript:
            env = decode_envelope(data)
            for _name, ct in _ciphertext_fields(env.body):
                values = _split(ct, width)
                if direction == "received":
                    received.update(values)
                    continue
                plain = priv.raw_decrypt_many([gmpy2.mpz(c) for c in values])
                for c, m in zip(values, plain, strict=False):
                    assert (c - 1) % n != 0, f"{party} sent an unrandomised ciphertext"
                    assert (c - 1) // n != int(m)
                    assert c not in received, f"{party} forwarded a ciphertext it received"
                    checked += 1
    assert checked > 1000

    # the first batch of each host encrypts all-zero scores: every ciphertext differs
    for host in ("host1", "host2"):
        first = next(decode_envelope(d).body for dr, _, d in run.transcripts[host]
                     if dr == "sent" and isinstance(decode_envelope(d).body, HostForward))
        zeros = _split(first.scores, width)
        assert priv.raw_decrypt_many([gmpy2.mpz(c) for c in zeros]) == [0] * len(zeros)
        assert len(set(zeros)) == len(zeros)

    # the arbiter only ever decrypts masked gradients: g + 2^l + r with r uniform on
    # [0, 2^(l+kappa)), never a bare gradient, and all of it inside the range it checks
    budget = run.arbiter.budget
    decrypted = []
    for direction, _peer, data in run.transcripts["arbiter"]:
        body = decode_envelope(data).body
        if direction == "received" and isinstance(body, MaskedGradient):
            vals = priv.raw_decrypt_many([gmpy2.mpz(c) for c in _split(body.values, width)])
            decrypted.extend(int(v) for v in vals)
        if direction == "sent" and isinstance(body, DecryptedGradient):
            assert len(body.residues) % budget.width == 0
            assert budget.width < (pub.bits + 7) // 8  # bounded, not a full residue of Z_n
    assert len(decrypted) > 50
    assert all(v < 1 << budget.masked_bits for v in decrypted)
    # an honest gradient is below 2^l; masked values sit far above it (fails w.p. ~2^-79)
    assert all(v > 1 << (budget.value_bits + 2) for v in decrypted)
    top_bytes = {v >> (budget.masked_bits - 9) for v in decrypted}
    assert len(top_bytes) > 20  # spread over the whole masked range, as uniform values are
