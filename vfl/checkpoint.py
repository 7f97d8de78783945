"""Training checkpoints: each party's state after every epoch, on its own disk, and resume.

Every party (guest, hosts, arbiter) writes its own checkpoint at the end of
every epoch, in its own checkpoint folder; nothing of it crosses a party
boundary. A checkpoint holds what the rest of the run depends on: the party's
weights and optimiser state, its per-epoch weights (for keeping the best
validation epoch), and the job fingerprint it belongs to (job id, model id,
the guest's ``TrainSetup``, the arbiter's public key, a digest of the party's
own aligned training data). The guest adds its secret random start, its
validation split, its loss and validation history and, in the accurate mode,
the hosts' encrypted squares it keeps per row; the arbiter adds its Paillier
key pair, its loss and validation history and the best epoch's validation
scores, **sealed** with a key derived from a passphrase (Argon2id, then
XSalsa20-Poly1305, libsodium through PyNaCl).

Long epochs can also be checkpointed within: with the guest's
``every_batches`` = N, the guest and the hosts also write one after every N
batches of an epoch. A checkpoint's *position* is ``(k, j)``: ``k`` epochs
completed and ``j`` batches of the next one (``j`` = 0 at an epoch's end).
The arbiter writes at epoch ends only: nothing it keeps changes within an
epoch.

Files (``<folder>/<party>.e<k>.ckpt``, or ``<party>.e<k>.b<j>.ckpt`` within
an epoch, plus the guest's ``.squares`` beside them) are written atomically
(temporary file, ``fsync``, rename) and the two newest are kept: every batch
is a round trip through all the parties, so after a crash their newest
checkpoints differ by at most one position, and the oldest newest one is
where they resume. A write that fails (a full disk) stops the job with
an error and leaves the previous checkpoints intact. Files are ``0600`` in a
``0700`` folder. They are read back through :mod:`vfl.codec` (type-checked,
bounded: no code-executing deserialiser), and refused, naming the
difference, if they belong to another job, party, key or data.

Resume (``vfl run --resume``, ``protocols/specs/hetero_lr.md`` "Resume") is
negotiated in the messages a run starts with: each host's ``HostHello``
gives the position of its newest valid checkpoint, the guest takes the
smallest (its own included) and announces it in ``TrainSetup.resume_epochs``
and ``resume_batches``; every party then loads its checkpoint of that
position (the arbiter: of that epoch) and the batches continue from there.
The batches of an epoch are a function of the seed and the epoch, the masks
cancel exactly, and decrypted values do not depend on the encryption
randomness, so a resumed run ends with the same weights, bit for bit, as one
that was never interrupted.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vfl.codec import Envelope, decode_envelope, encode_envelope, message
from vfl.crypto.wire import Ciphertexts
from vfl.exceptions import ConfigError, VFLError
from vfl.psi.cache import PsiKept, ReuseOffer, ids_digest, intersection_digest

__all__ = ["ArbiterSecret", "CheckpointError", "CheckpointStore", "GuestState", "ShareRecord",
           "PartyCheckpoint", "Position", "data_digest", "setup_digest", "KEEP",
           "PASSPHRASE_ENV", "MAX_EVERY_BATCHES", "where"]

#: ``(epochs completed, batches completed of the next epoch)``
Position = tuple[int, int]

#: Checkpoints kept per party (the newest ones).
KEEP = 2
#: The environment variable the arbiter's passphrase may come from.
PASSPHRASE_ENV = "VFL_CHECKPOINT_PASSPHRASE"  # noqa: S105 - a variable name
#: Shortest passphrase accepted.
MIN_PASSPHRASE_CHARS = 12
#: Largest checkpoint state file read back (the squares live in their own file).
MAX_STATE_BYTES = 1 << 30
#: Largest checkpoint interval in batches (a TrainSetup with more is refused).
MAX_EVERY_BATCHES = 1 << 24

_NAME = re.compile(r"^(?P<party>.+)\.e(?P<k>[0-9]{1,9})(?:\.b(?P<j>[0-9]{1,9}))?\.ckpt$")
_SQUARES = re.compile(r"^(?P<party>.+)\.e(?P<k>[0-9]{1,9})(?:\.b(?P<j>[0-9]{1,9}))?\.squares$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class CheckpointError(VFLError):
    """A checkpoint cannot be written, read, or used for this job (the message says why)."""


@message("checkpoint.Share/1")
@dataclass(frozen=True, slots=True)
class ShareRecord:
    """One side's share of one party's weights (protocol ``shared``): signed integers,
    ``width`` bytes each, big-endian two's complement."""

    width: int
    weights: bytes
    momentum: bytes
    snapshots: bytes  # n_snapshots x len(weights) values, one epoch after another
    n_snapshots: int
    # a party's own checkpoint: the arbiter's share as it last received it
    encrypted: Ciphertexts | None = None
    # the guest, accurate mode: the weights it expands around
    expansion: bytes = b""


@message("checkpoint.Guest/1")
@dataclass(frozen=True, slots=True)
class GuestState:
    """What only the guest keeps: its secret start and split, histories, stored squares."""

    initial_coef: np.ndarray
    validation_rows: np.ndarray  # int64
    loss_history: np.ndarray  # float64, one per epoch completed
    validation: np.ndarray  # float64, (epochs, 5): epoch, auc, ks, log-loss, brier
    squares_present: bytes  # accurate mode: packed bits, one per row (empty: Taylor mode)
    squares_sha256: bytes  # of the .squares file (empty: none)
    # within an epoch: the epoch's encrypted loss sum so far (None at an epoch's end)
    loss_sum: Ciphertexts | None = None


@message("checkpoint.Arbiter/2")
@dataclass(frozen=True, slots=True)
class ArbiterSecret:
    """The arbiter's sealed state: its key pair and what its later decisions depend on."""

    p: bytes
    q: bytes
    loss_history: np.ndarray
    validation: np.ndarray  # (epochs, 5), as the guest's
    best_epoch: int | None
    best_ok: bool  # the selection key of the best epoch so far
    best_value: float
    best_scores: np.ndarray
    best_labels: np.ndarray
    # protocol shared: the arbiter's share of each party's weights (guest, then hosts)
    shares: list[ShareRecord] = field(default_factory=list)
    kept_epoch: int | None = None
    # the header it belongs to, authenticated with it (a sealed state cannot be moved to
    # another epoch's file or have its decision flipped unnoticed)
    job: str = ""
    epochs_done: int = 0
    stopped: bool = False
    setup_digest: bytes = b""


@message("checkpoint.Party/2")
@dataclass(frozen=True, slots=True)
class PartyCheckpoint:
    """One party's state after ``epochs_done`` epochs of job ``job``."""

    role: str
    party: str
    job: str
    model_id: str
    epochs_done: int
    stopped: bool  # the last epoch's decision was to stop
    setup_digest: bytes
    key_fingerprint: bytes
    data_digest: bytes
    coef: np.ndarray
    opt_t: int
    opt_m: np.ndarray
    opt_v: np.ndarray
    snapshots: np.ndarray  # (epochs with validation, n_weights)
    guest: GuestState | None
    sealed: bytes  # the arbiter's ArbiterSecret, sealed (empty for the others)
    batches_done: int = 0  # batches completed of epoch ``epochs_done`` (0: its end)
    share: ShareRecord | None = None  # protocol shared: this party's share of its weights

    @property
    def position(self) -> Position:
        """``(epochs_done, batches_done)``."""
        return self.epochs_done, self.batches_done


def data_digest(*arrays: np.ndarray) -> bytes:
    """SHA-256 of a party's aligned training data (shapes, dtypes and bytes)."""
    h = hashlib.sha256(b"vfl/checkpoint/data/v1")
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(repr((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.digest()


def setup_digest(setup: object) -> bytes:
    """SHA-256 of the guest's ``TrainSetup``, where to resume and how often to checkpoint
    left out (they may change from one run of a job to the next)."""
    body = replace(setup, resume_epochs=0, resume_batches=0,  # type: ignore[type-var]
                   checkpoint_every=0)
    return hashlib.sha256(encode_envelope(Envelope("", 0, "", "", body))).digest()


def read_passphrase(passphrase_file: str | Path | None) -> bytes | None:
    """The checkpoint passphrase: ``passphrase_file`` (owner-only) or the environment.

    Raises
    ------
    ConfigError
        If the file is readable by others than its owner, or the passphrase
        is shorter than :data:`MIN_PASSPHRASE_CHARS`.
    """
    text: str | None = None
    where = ""
    if passphrase_file is not None:
        path = Path(passphrase_file)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{path}: the checkpoint passphrase file must be readable by "
                                  f"its owner only (chmod 600 {path}).")
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the checkpoint passphrase: "
                              f"{exc.strerror}.") from None
        where = str(path)
    elif os.environ.get(PASSPHRASE_ENV):
        text, where = os.environ[PASSPHRASE_ENV], PASSPHRASE_ENV
    if text is None:
        return None
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise ConfigError(f"The checkpoint passphrase ({where}) is shorter than "
                          f"{MIN_PASSPHRASE_CHARS} characters.")
    return text.encode()


class _Sealer:
    """Argon2id key derivation (once per salt) and XSalsa20-Poly1305 sealing."""

    SALT_BYTES = 16

    def __init__(self, passphrase: bytes) -> None:
        self._passphrase = passphrase
        self._keys: dict[bytes, bytes] = {}

    def _key(self, salt: bytes) -> bytes:
        from nacl import pwhash, secret

        if salt not in self._keys:
            self._keys[salt] = pwhash.argon2id.kdf(
                secret.SecretBox.KEY_SIZE, self._passphrase, salt,
                opslimit=pwhash.argon2id.OPSLIMIT_MODERATE,
                memlimit=pwhash.argon2id.MEMLIMIT_MODERATE)
        return self._keys[salt]

    def seal(self, data: bytes, salt: bytes) -> bytes:
        from nacl import secret

        return salt + bytes(secret.SecretBox(self._key(salt)).encrypt(data))

    def open(self, blob: bytes) -> bytes:
        from nacl import exceptions, secret

        salt, box = blob[:self.SALT_BYTES], blob[self.SALT_BYTES:]
        try:
            return bytes(secret.SecretBox(self._key(salt)).decrypt(box))
        except exceptions.CryptoError:
            raise CheckpointError("The arbiter's checkpoint does not open with this passphrase "
                                  f"(wrong {PASSPHRASE_ENV} or passphrase file, or the file "
                                  "was altered).") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, chunks: Iterator[bytes]) -> str:
    """Write ``chunks`` to ``path`` atomically (0600); returns the SHA-256 hex of the bytes."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                h.update(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return h.hexdigest()


class CheckpointStore:
    """One party's checkpoint folder.

    Parameters
    ----------
    folder : path
        Created (``0700``) if missing.
    party, role, job : str
        Whose checkpoints these are; files of another party or job in the
        folder are refused by name.
    passphrase : bytes, optional
        The arbiter's (:func:`read_passphrase`); required to save or load an
        arbiter checkpoint.
    resume : bool
        Whether this run may resume from the folder's checkpoints. Whatever
        it resumes from (0 for a fresh run), this party's checkpoints of
        later positions are removed only when the run writes its first
        checkpoint, so a run that fails before that (a peer refusing, a
        forgotten ``--resume``) destroys nothing.
    every_batches : int
        The guest's: also checkpoint after every ``every_batches`` batches
        within an epoch (0: at epoch ends only). The hosts follow the
        guest's interval; the arbiter's and the hosts' own are not used.
    """

    def __init__(self, folder: str | Path, *, party: str, role: str, job: str,
                 passphrase: bytes | None = None, resume: bool = False,
                 every_batches: int = 0) -> None:
        self.folder = Path(folder)
        if not _SAFE_NAME.match(party):
            raise ConfigError(f"Party name {party!r} cannot name checkpoint files (letters, "
                              "digits, '.', '_' and '-' only).")
        if not 0 <= every_batches <= MAX_EVERY_BATCHES:
            raise ConfigError(f"The checkpoint interval must be 0 to {MAX_EVERY_BATCHES} "
                              f"batches, not {every_batches}.")
        self.party, self.role, self.job, self.resume = party, role, job, resume
        self.every_batches = every_batches
        #: where this run resumes from; later checkpoints go at the first save
        self.start: Position = (0, 0)
        self._pruned = False
        self._sealer = _Sealer(passphrase) if passphrase is not None else None
        self._salt = os.urandom(_Sealer.SALT_BYTES)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = self.folder.stat()
        except OSError as exc:
            raise ConfigError(f"Cannot prepare the checkpoint folder {self.folder}: "
                              f"{exc.strerror}.") from None
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            raise ConfigError(f"The checkpoint folder {self.folder} must belong to this user "
                              f"and be closed to others (chmod 700 {self.folder}): it holds "
                              "this party's model state.")

    # ------------------------------------------------------------------ files
    def _stem(self, pos: Position) -> str:
        k, j = pos
        return f"{self.party}.e{k}" + (f".b{j}" if j else "")

    def _state_path(self, pos: Position) -> Path:
        return self.folder / f"{self._stem(pos)}.ckpt"

    def squares_path(self, pos: Position) -> Path:
        """Where the guest's stored squares of the checkpoint at ``pos`` live."""
        return self.folder / f"{self._stem(pos)}.squares"

    def positions_held(self) -> list[Position]:
        """The positions of this party's checkpoint files, newest first."""
        return self._positions(_NAME)

    def _positions(self, pattern: re.Pattern[str]) -> list[Position]:
        out = []
        for p in self.folder.iterdir():
            m = pattern.match(p.name)
            if m and m.group("party") == self.party:
                out.append((int(m.group("k")), int(m.group("j") or 0)))
        return sorted(out, reverse=True)

    def _remove_orphan_squares(self) -> None:
        """Remove squares files without their state file (a run killed between the two
        writes of one checkpoint, or a state file pruned): each holds a ciphertext per row."""
        held = set(self.positions_held())
        for pos in self._positions(_SQUARES):
            if pos not in held:
                self.squares_path(pos).unlink(missing_ok=True)

    @property
    def can_seal(self) -> bool:
        """Whether an arbiter checkpoint can be written (a passphrase was given)."""
        return self._sealer is not None

    def seal(self, secret: ArbiterSecret) -> bytes:
        """The arbiter's secret state, encrypted under the passphrase."""
        if self._sealer is None:
            raise CheckpointError(f"{self.party}: no checkpoint passphrase ({PASSPHRASE_ENV} or "
                                  "[checkpoint] passphrase_file); the arbiter's key is never "
                                  "written in the clear.")
        data = encode_envelope(Envelope(self.job, 0, self.party, self.party, secret))
        return self._sealer.seal(data, self._salt)

    def unseal(self, blob: bytes) -> ArbiterSecret:
        """Open :meth:`seal`'s output."""
        if self._sealer is None:
            raise CheckpointError(f"{self.party}: resuming needs the checkpoint passphrase "
                                  f"({PASSPHRASE_ENV} or [checkpoint] passphrase_file).")
        env = self._decode(self._sealer.open(blob), "the arbiter's sealed state")
        if not isinstance(env.body, ArbiterSecret):
            raise CheckpointError(f"{self.party}: the sealed checkpoint state is not the "
                                  "arbiter's.")
        return env.body

    def _remove_stale_temporaries(self) -> None:
        """Remove this party's half-written files left by a run killed while it wrote one
        (``.<party>.e<k>[.b<j>].ckpt.<random>.tmp``); other parties' files are left alone."""
        stale = re.compile(
            rf"\.{re.escape(self.party)}\.e\d+(\.b\d+)?\.(ckpt|squares)\.[^/]*\.tmp")
        for path in self.folder.glob(f".{self.party}.e*.tmp"):
            if stale.fullmatch(path.name):
                path.unlink(missing_ok=True)

    def save(self, ckpt: PartyCheckpoint, squares: Iterator[bytes] | None = None) -> Path:
        """Write ``ckpt`` (and the guest's squares) atomically; keep the :data:`KEEP` newest.

        Raises
        ------
        CheckpointError
            If the folder cannot take the files (full disk, permissions); the
            earlier checkpoints are intact.
        """
        if not self._pruned:  # this run's first checkpoint: the old run's later ones go now
            self.discard_after(self.start)
            self._remove_stale_temporaries()
            self._pruned = True
        k = ckpt.position
        path = self._state_path(k)
        replaced = False  # the squares file of k was replaced: an older state k is stale
        try:
            if squares is not None:
                digest = _write_atomic(self.squares_path(k), squares)
                replaced = True
                assert ckpt.guest is not None
                ckpt = replace(ckpt, guest=replace(ckpt.guest,
                                                   squares_sha256=bytes.fromhex(digest)))
            data = encode_envelope(Envelope(self.job, 0, self.party, self.party, ckpt))
            _write_atomic(path, iter([data]))
        except OSError as exc:
            if replaced:
                path.unlink(missing_ok=True)
                self.squares_path(k).unlink(missing_ok=True)
            raise CheckpointError(
                f"{self.party} could not write its checkpoint of {where(k)} to {self.folder}: "
                f"{exc.strerror or exc}. The earlier checkpoints are intact; free space (or fix "
                "the folder) and resume with --resume.") from None
        for old in self.positions_held()[KEEP:]:
            self._state_path(old).unlink(missing_ok=True)
            self.squares_path(old).unlink(missing_ok=True)
        self._remove_orphan_squares()
        return path

    def discard_after(self, k: Position) -> None:
        """Remove this party's checkpoints of later positions than ``k``.

        Called once the job's resume position ``k`` is agreed: a checkpoint
        of a later position (one this party wrote before the others caught up)
        belongs to the interrupted run and must not outrank what this run writes.
        """
        for old in self.positions_held():
            if old > k:
                self._state_path(old).unlink(missing_ok=True)
                self.squares_path(old).unlink(missing_ok=True)

    # ------------------------------------------------------------ kept PSI
    def _psi_path(self, tag: str) -> Path:
        return self.folder / f"{self.party}.psi-{tag}"

    def keep_psi(self, tag: str, ids: Sequence[str], rows: npt.NDArray[np.int64],
                 peers: Sequence[str]) -> None:
        """Keep this party's result of the job's PSI ``tag`` ("train" or "valid") with
        ``peers`` for a resume: its aligned rows and the digests of its IDs and of the
        intersection (:mod:`vfl.psi.cache`; no ID is written)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        kept = PsiKept(self.party, self.job, tag, sorted(peers), ids_digest(ids), len(ids),
                       intersection_digest(self.job, ids, rows), rows)
        try:
            _write_atomic(self._psi_path(tag),
                          iter([encode_envelope(Envelope(self.job, 0, self.party, self.party,
                                                         kept))]))
        except OSError as exc:
            raise CheckpointError(f"{self.party} could not keep its PSI result in "
                                  f"{self.folder}: {exc.strerror or exc}.") from None

    def kept_psi(self, tag: str, ids: Sequence[str], peers: Sequence[str]) -> ReuseOffer | None:
        """The PSI result ``tag`` this party kept, if it resumes this job and its IDs and
        peers are those it kept it for (else ``None``: PSI runs again, as when nothing was
        kept; a guest whose hosts changed must not offer the old intersection of all).

        Raises
        ------
        CheckpointError
            If the kept file is damaged or not this party's and job's.
        """
        path = self._psi_path(tag)
        if not self.resume or not path.is_file():
            return None
        try:
            size = path.stat().st_size
            if size > MAX_STATE_BYTES:
                raise CheckpointError(f"{path}: {size} bytes, more than a kept PSI holds.")
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the kept PSI result: "
                                  f"{exc.strerror}.") from None
        kept = self._decode(data, f"kept PSI result {path}").body
        if not isinstance(kept, PsiKept) or (kept.party, kept.job, kept.tag) != (
                self.party, self.job, tag):
            raise CheckpointError(f"{path} is not {self.party}'s kept PSI result of job "
                                  f"{self.job!r}.")
        if (kept.n_ids != len(ids) or kept.ids_sha256 != ids_digest(ids)
                or list(kept.peers) != sorted(peers)):
            return None  # the IDs or the peers changed: PSI runs again
        rows = kept.rows
        if (rows.dtype != np.int64 or rows.ndim != 1
                or (rows.size and (int(rows.min()) < 0 or int(rows.max()) >= len(ids)))
                or np.unique(rows).size != rows.size
                or kept.digest != intersection_digest(self.job, ids, rows)):
            raise CheckpointError(f"{path} does not match its own digest (altered?): refused.")
        return ReuseOffer(kept.digest, rows.copy())

    def _decode(self, data: bytes, what: str) -> Envelope:
        try:
            return decode_envelope(data, peer=what, max_bytes=MAX_STATE_BYTES)
        except VFLError as exc:
            raise CheckpointError(f"{self.party}: {what} is damaged or not a vfl checkpoint: "
                                  f"{exc}") from None

    def load(self, k: Position) -> PartyCheckpoint:
        """The checkpoint at ``k``, checked to be this party's and this job's.

        Raises
        ------
        CheckpointError
            Naming the file and the difference: missing, damaged, another
            party's, another job's, or its squares file altered.
        """
        path = self._state_path(k)
        try:
            size = path.stat().st_size
            if size > MAX_STATE_BYTES:
                raise CheckpointError(f"{path}: {size} bytes, more than a checkpoint holds.")
            data = path.read_bytes()
        except OSError:
            raise CheckpointError(f"{self.party} holds no checkpoint of {where(k)} in "
                                  f"{self.folder}.") from None
        env = self._decode(data, f"checkpoint file {path}")
        ckpt = env.body
        if not isinstance(ckpt, PartyCheckpoint):
            raise CheckpointError(f"{path} is not a party checkpoint.")
        if (ckpt.party, ckpt.role) != (self.party, self.role):
            raise CheckpointError(f"{path} belongs to {ckpt.party} ({ckpt.role}), not to "
                                  f"{self.party} ({self.role}).")
        if ckpt.job != self.job:
            raise CheckpointError(f"{path} belongs to job {ckpt.job!r}; this is job "
                                  f"{self.job!r}.")
        if ckpt.position != k:
            raise CheckpointError(f"{path} says it holds {where(ckpt.position)}, its name "
                                  f"{where(k)}.")
        if ckpt.guest is not None and ckpt.guest.squares_sha256:
            h = hashlib.sha256()
            try:
                with open(self.squares_path(k), "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                raise CheckpointError(f"{self.squares_path(k)} is missing.") from None
            if h.digest() != ckpt.guest.squares_sha256:
                raise CheckpointError(f"{self.squares_path(k)} does not match its checkpoint "
                                      "(altered or incomplete).")
        return ckpt

    def newest(self, digest: bytes) -> Position:
        """The position of the newest checkpoint this run may resume from ((0, 0): none).

        Only when resuming. A checkpoint of this job and party made from
        other data is refused (:class:`CheckpointError` naming the file),
        not silently skipped.
        """
        if not self.resume:
            return 0, 0
        held = self.positions_held()
        if not held:
            return 0, 0
        ckpt = self.load(held[0])
        if ckpt.data_digest and digest and ckpt.data_digest != digest:
            raise CheckpointError(
                f"{self._state_path(held[0])} was made from other training data than "
                f"{self.party} has now (the aligned rows or columns changed): refused. Resume "
                "with the same data, or start again without --resume.")
        return held[0]

    def check(self, ckpt: PartyCheckpoint, *, setup: bytes, key: bytes, data: bytes) -> None:
        """Refuse ``ckpt`` unless it was made for this job's setup, key and data."""
        where = self._state_path(ckpt.position)
        if ckpt.setup_digest != setup:
            raise CheckpointError(f"{where} was made for another training setup (model id, "
                                  "hyper-parameters, hosts or rows differ): refused.")
        if ckpt.key_fingerprint != key:
            raise CheckpointError(f"{where} was made under another Paillier key than the "
                                  "arbiter announced now (the arbiter did not restore its "
                                  "key): refused.")
        if ckpt.data_digest != data:
            raise CheckpointError(f"{where} was made from other training data than "
                                  f"{self.party} has now: refused.")


def where(pos: Position) -> str:
    """``epoch 3`` or ``epoch 3 + 40 batches`` (epochs, then batches completed), for errors."""
    k, j = pos
    return f"epoch {k}" if not j else f"epoch {k} + {j} batches"
