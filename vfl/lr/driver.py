"""The only I/O of hetero LR: the role states run over a :class:`~vfl.channel.Channel`.

Every driver follows :mod:`vfl.lr.schedule`: :func:`_train` walks the setup
steps, then per epoch the batch steps of every mini-batch and the epoch
steps, then the end steps; :func:`_walk` turns each step this party takes
part in into ``channel.send`` of what its state produces or ``channel.recv``
of the step's message type handed to its state. A ``_…Side`` class says, for
each step of its role, which step method of the state makes or takes the
message (``@_sends``, ``@_receives``; ``@_after`` runs once the party has
every message of a step). Checks of what arrives live in the states, so no
message order and no protocol rule is written here; what is left is setting
each peer's message-size limit once the job is known, and progress hooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from vfl.channel import Channel
from vfl.checkpoint import (
    MAX_EVERY_BATCHES,
    ArbiterSecret,
    CheckpointError,
    CheckpointStore,
    PartyCheckpoint,
    Position,
    data_digest,
    setup_digest,
    where,
)
from vfl.crypto.paillier import PaillierPrivateKey
from vfl.exceptions import CryptoError, LocalProtocolError, RemoteProtocolError
from vfl.lr import schedule as sch
from vfl.lr.arbiter import ArbiterParty
from vfl.lr.config import TrainConfig, message_limits
from vfl.lr.guest import GuestParty, GuestScoring
from vfl.lr.host import HostParty, HostScoring, PointsFn, host_hello
from vfl.lr.messages import (
    CalibrationReport,
    CalibrationRequest,
    CrossTerm,
    DecryptedGradient,
    EpochDecision,
    EpochLoss,
    FinalShare,
    HostForward,
    HostHello,
    MaskedGradient,
    PartialScores,
    PublicKeyAnnounce,
    Residual,
    ScoreRequest,
    ShareUpdate,
    TrainingResult,
    TrainSetup,
    ValidationBatch,
    ValidationMetrics,
    ValidationScores,
)
from vfl.lr.schedule import Act, Phase, Step
from vfl.policy import DEFAULT_POLICY, SecurityPolicy
from vfl.progress import ProgressHook
from vfl.roles import Role
from vfl.types import FloatArray, IntArray

__all__ = [
    "run_guest_training",
    "run_host_training",
    "run_arbiter",
    "run_guest_scoring",
    "run_guest_scoring_with_points",
    "run_host_scoring",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_SETUP, _BATCH, _EPOCH, _END = (sch.phase(sch.TRAINING, p)
                                for p in (Phase.SETUP, Phase.BATCH, Phase.EPOCH, Phase.END))


def _mark(kind: str, step: Step) -> Callable[[_F], _F]:
    def mark(fn: _F) -> _F:
        setattr(fn, "_vfl_step", (kind, step))  # noqa: B010 (read back in __init_subclass__)
        return fn

    return mark


def _sends(step: Step) -> Callable[[_F], _F]:
    """The method makes this party's message(s) of ``step``: ``(peers) -> {peer: message}``."""
    return _mark("send", step)


def _receives(step: Step) -> Callable[[_F], _F]:
    """The method takes ``step``'s message from one peer: ``(peer, msg) -> answer or None``."""
    return _mark("recv", step)


def _after(step: Step) -> Callable[[_F], _F]:
    """The method runs once this party has received every message of ``step``."""
    return _mark("after", step)


def _to(peers: Sequence[str], msg: object) -> dict[str, object]:
    return dict.fromkeys(peers, msg)


class _Side:
    """A party as the walk sees it: its roster, and its state's method for each step."""

    role: ClassVar[Role]
    steps: ClassVar[tuple[Step, ...]] = sch.TRAINING
    handlers: ClassVar[dict[tuple[str, Step], Callable[..., Any]]] = {}

    guest: str
    arbiter: str
    epoch = 0
    batch = 0
    rows: list[int] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handlers = {getattr(fn, "_vfl_step"): fn for fn in vars(cls).values()  # noqa: B009
                        if hasattr(fn, "_vfl_step")}

    @property
    def hosts(self) -> Sequence[str]:
        raise LocalProtocolError(f"The {self.role} does not know the hosts at this step.")

    @property
    def host_index(self) -> int:
        raise LocalProtocolError(f"The {self.role} has no host index.")

    @property
    def validation(self) -> bool:
        return False

    @property
    def taylor(self) -> bool:
        return False

    @property
    def shared(self) -> bool:
        return False

    def _handler(self, kind: str, step: Step) -> Callable[..., Any]:
        fn = self.handlers.get((kind, step))
        if fn is None:
            raise LocalProtocolError(f"The {self.role} driver cannot {kind} step {step.label} "
                                     f"({step.message.__name__}).")
        return fn

    def produce(self, step: Step, peers: tuple[str, ...]) -> Mapping[str, object]:
        """This party's message of ``step`` for each of ``peers``."""
        out: Mapping[str, object] = self._handler("send", step)(self, peers)
        return out

    def consume(self, step: Step, peer: str, msg: object) -> object:
        """Hand ``step``'s message from ``peer`` to the state; its answer, if the step has one."""
        return self._handler("recv", step)(self, peer, msg)

    def close_step(self, step: Step) -> None:
        """Every message of ``step`` has arrived."""
        fn = self.handlers.get(("after", step))
        if fn is not None:
            fn(self)


class _TrainingSide(_Side):
    """A party of a training run: its role state (``party``), its batches, the epoch's decision.

    The roster, config and batch plan come from the role state; each side
    only adds how its state is made and the step methods.
    """

    stop = False
    loss: float | None = None
    #: this party's checkpoint folder (None: no checkpoints)
    store: CheckpointStore | None = None
    #: where every party resumes from ((0, 0): a fresh run), from the guest's TrainSetup
    resume_at: Position = (0, 0)
    #: checkpoints within an epoch every this many batches (0: none), from the TrainSetup
    checkpoint_every = 0
    setup_digest = b""
    data_digest = b""

    @property
    def party(self) -> Any:
        raise NotImplementedError

    @property
    def key_fingerprint(self) -> bytes:
        key = getattr(self.party, "public_key", None)
        return b"" if key is None else bytes(key.fingerprint)

    def resume(self) -> Position:
        """Load the checkpoint of :attr:`resume_at` (if any); the position reached.

        Nothing is deleted here: the checkpoints of later positions go when
        this run writes its first one (:meth:`CheckpointStore.save`).
        """
        k = self.resume_at
        store = self._refuse_a_start_over()
        if not any(k):
            return k
        if store is None:
            raise LocalProtocolError(f"The {self.role} was asked to resume but keeps no "
                                     "checkpoints.")
        ckpt = store.load(k)
        store.check(ckpt, setup=self.setup_digest, key=self.key_fingerprint,
                    data=self.data_digest)
        self._restore(ckpt)
        self.stop = ckpt.stopped
        store.start = k
        return k

    def _refuse_a_start_over(self) -> CheckpointStore | None:
        """Refuse a job that starts over while this party, started with --resume, holds
        checkpoints (nothing is deleted); returns the store."""
        store = self.store
        if (store is not None and store.resume and not any(self.resume_at)
                and any(map(any, store.positions_held()))):  # the arbiter's key alone: no work
            raise CheckpointError(_STARTS_OVER.format(party=store.party))
        return store

    def _restore(self, ckpt: PartyCheckpoint) -> None:
        self.party.restore(ckpt)
        if getattr(self.party, "loss_history", None):
            self.loss = self.party.loss_history[-1]

    def save(self, epochs_done: int, batches_done: int = 0) -> None:
        """Write this party's checkpoint after ``epochs_done`` epochs and ``batches_done``
        batches of the next (guest and hosts)."""
        if self.store is None:
            return
        ckpt = self.party.checkpoint(job=self.store.job, epochs_done=epochs_done,
                                     stopped=self.stop, setup_digest=self.setup_digest,
                                     key_fingerprint=self.key_fingerprint,
                                     data_digest=self.data_digest, batches_done=batches_done)
        squares = getattr(self.party, "squares", None)
        self.store.save(ckpt, squares.iter_bytes() if squares is not None else None)

    @property
    def hosts(self) -> Sequence[str]:
        hosts: Sequence[str] = self.party.hosts
        return hosts

    @property
    def validation(self) -> bool:
        party = self.party  # the arbiter knows only how many rows are held out
        return bool(getattr(party, "validation_rows", ()) or getattr(party, "n_validation", 0))

    @property
    def config(self) -> TrainConfig:
        config: TrainConfig = self.party.config
        return config

    @property
    def taylor(self) -> bool:
        return self.config.mode == "taylor"

    @property
    def shared(self) -> bool:
        return self.config.protocol == "shared"

    def batches(self, epoch: int) -> list[list[int]]:
        plan: list[list[int]] = self.party.batches(epoch)
        return plan


def _walk(channel: Channel, side: _Side, steps: Sequence[Step]) -> None:
    """Send and receive what ``side`` does in ``steps``, in the schedule's order."""
    for act in sch.walk(steps, side.role, side):
        if act.kind is Act.SEND:
            out = side.produce(act.step, act.peers)
            for peer in act.peers:
                channel.send(peer, out[peer])
        elif act.kind is Act.RECV:
            (peer,) = act.peers
            # a step whose message depends on the protocol comes after the job is known
            shared = act.step.shared_message is not None and side.shared
            answer = side.consume(act.step, peer,
                                  channel.recv(peer, act.step.message_for(shared)))
            if act.answer is not None:
                want = act.answer.message_for(act.answer.shared_message is not None
                                              and side.shared)
                if not isinstance(answer, want):
                    raise LocalProtocolError(
                        f"The {side.role} has no {want.__name__} to answer "
                        f"{act.step.message_for(shared).__name__} from {peer}.")
                channel.send(peer, answer)
        else:
            side.close_step(act.step)


_STARTS_OVER = ("{party} was started with --resume and holds checkpoints, but the job starts "
                "over (another party holds none, or was started without --resume); nothing was "
                "deleted. Start every party with --resume, or every party without it to start "
                "over.")


def _train(channel: Channel, side: _TrainingSide, progress: ProgressHook) -> int:
    """Run the schedule's phases over the epochs; returns the epochs run.

    After the setup steps, every party loads its checkpoint of the position
    the guest's ``TrainSetup`` resumes from (if any) and the batches continue
    from there; after each epoch the guest and the hosts write their
    checkpoint (the arbiter writes its own before it announces the epoch's
    decision), and with ``TrainSetup.checkpoint_every`` = N also after every
    N batches within an epoch.
    """
    _walk(channel, side, _SETUP)
    cfg = side.config
    start, skip = side.resume()
    epochs_run = start
    every = side.checkpoint_every
    if not (start and not skip and side.stop):  # the epoch that stopped: only the end
        for epoch in range(start, cfg.epochs):
            plan = side.batches(epoch)
            if epoch == start:
                progress.on_start(cfg.epochs, len(plan))
                if start or skip:
                    progress.on_resume(start, skip)
            side.epoch = epoch
            first = skip if epoch == start else 0
            for b in range(first, len(plan)):
                side.batch, side.rows = b, plan[b]
                _walk(channel, side, _BATCH)
                if every and (b + 1) % every == 0 and b + 1 < len(plan):
                    side.save(epoch, b + 1)
                progress.on_batch(epoch, b, len(plan))
            _walk(channel, side, _EPOCH)
            epochs_run = epoch + 1
            side.save(epochs_run)
            progress.on_epoch(epoch, side.loss)
            if side.stop:
                break
    side.epoch = max(epochs_run - 1, 0)  # the last epoch run (a resume may run none)
    _walk(channel, side, _END)
    return epochs_run


# ===================================================================== guest
class _GuestSide(_TrainingSide):
    role = Role.GUEST

    def __init__(self, channel: Channel, party: GuestParty, arbiter: str) -> None:
        self.channel = channel
        self._party = party
        self.guest = party.name
        self.arbiter = arbiter
        self._job: TrainSetup | None = None

    @property
    def party(self) -> GuestParty:
        return self._party

    def _restore(self, ckpt: PartyCheckpoint) -> None:
        assert self.store is not None
        stored = ckpt.guest is not None and bool(ckpt.guest.squares_sha256)
        self.party.restore(ckpt, str(self.store.squares_path(ckpt.position))
                           if stored else None)
        if self.party.loss_history:
            self.loss = self.party.loss_history[-1]

    @property
    def job(self) -> TrainSetup:
        if self._job is None:
            raise LocalProtocolError("The guest has not set up the job yet.")
        return self._job

    @_receives(sch.HELLO)
    def _hello(self, peer: str, msg: HostHello) -> None:
        self.party.on_hello(peer, msg)

    @_after(sch.HELLO)
    def _set_up(self) -> None:
        party = self.party
        self._job = party.setup()
        self.resume_at = (self._job.resume_epochs, self._job.resume_batches)
        self.checkpoint_every = self._job.checkpoint_every
        self.setup_digest = setup_digest(self._job)
        limits = message_limits(party.config, party.n_rows, party.n_train, self._job.columns,
                                len(party.validation_rows))
        for host in self.hosts:
            self.channel.limit_message_size(host, limits["host_to_guest"])
        self.channel.limit_message_size(self.arbiter, limits["arbiter_to_party"])

    @_sends(sch.SETUP_HOSTS)
    def _setup_hosts(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.job)

    @_sends(sch.SETUP_ARBITER)
    def _setup_arbiter(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.arbiter_setup(self.job))

    @_receives(sch.KEY_GUEST)
    def _key(self, peer: str, msg: PublicKeyAnnounce) -> None:
        self.party.on_public_key(msg, peer=peer,
                                 allow_insecure_key_size=self.config.allow_insecure_key_size)

    @_receives(sch.FORWARD)
    def _forward(self, peer: str, msg: HostForward) -> None:
        self.party.on_forward(peer, msg, self.epoch, self.batch)

    @_sends(sch.RESIDUAL)
    def _residuals(self, peers: tuple[str, ...]) -> Mapping[str, Residual]:
        return self.party.residuals(self.epoch, self.batch, self.rows)

    @_sends(sch.GRADIENT_GUEST)
    def _gradient(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.masked_gradient())

    @_receives(sch.CROSS)
    def _cross(self, peer: str, msg: CrossTerm) -> None:
        self.party.on_cross(peer, msg)

    @_after(sch.CROSS)
    def _close_batch(self) -> None:
        self.party.close_batch()

    @_receives(sch.DECRYPTED_GUEST)
    def _decrypted(self, peer: str, msg: DecryptedGradient | ShareUpdate) -> None:
        if isinstance(msg, ShareUpdate):
            self.party.on_share_update(msg, peer=peer)
        else:
            self.party.on_decrypted(msg, peer=peer)

    @_receives(sch.VALIDATION_SCORES)
    def _validation_scores(self, peer: str, msg: ValidationScores) -> None:
        self.party.on_validation_scores(peer, msg, self.epoch)

    @_sends(sch.VALIDATION_BATCH)
    def _validation_batch(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.validation_batch(self.epoch))

    @_receives(sch.VALIDATION_METRICS)
    def _validation_metrics(self, peer: str, msg: ValidationMetrics) -> None:
        self.party.on_validation_metrics(msg, self.epoch, peer=peer)

    @_sends(sch.LOSS)
    def _loss(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.epoch_loss(self.epoch))

    @_receives(sch.DECISION_GUEST)
    def _decision(self, peer: str, msg: EpochDecision) -> None:
        decision = self.party.on_decision(msg, self.epoch, peer=peer)
        self.stop, self.loss = decision.stop, decision.loss

    @_sends(sch.RESULT)
    def _result(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.training_result())

    @_sends(sch.CALIBRATE)
    def _calibrate(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.calibration_request())

    @_receives(sch.CALIBRATION)
    def _calibration(self, peer: str, msg: CalibrationReport) -> None:
        self.party.on_calibration_report(msg, peer=peer)

    @_receives(sch.FINAL_GUEST)
    def _final(self, peer: str, msg: FinalShare) -> None:
        best = self.party.best_epoch
        self.party.on_final_share(msg, peer=peer, epoch=self.epoch if best is None else best)


def run_guest_training(channel: Channel, name: str, X: FloatArray, y: FloatArray,
                       config: TrainConfig, *, hosts: list[str], arbiter: str,
                       progress: ProgressHook | None = None,
                       model_id: str | None = None,
                       workers: int | None = None,
                       exponent_bits: int | None = None,
                       validation_rows: list[int] | None = None,
                       initial_coef: FloatArray | None = None,
                       init_score_std: float = 0.5,
                       checkpoints: CheckpointStore | None = None) -> tuple[GuestParty, int]:
    """Run the guest's side of training; returns the party and the epochs run.

    ``workers``: processes for ciphertext work (default: the machine's cores
    for jobs of 2,000 rows or more; 1 = in-process). ``exponent_bits``: length
    of the secret randomiser exponents (default |n|/2; at least 448).
    ``checkpoints``: the guest's checkpoint folder; written after every epoch,
    and, if it was opened to resume, its newest checkpoint of this data gives
    the run's model id, secret start and validation split and the epoch the
    guest offers to resume from.
    """
    progress = progress or ProgressHook()
    digest = data_digest(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
    held = checkpoints.newest(digest) if checkpoints is not None else (0, 0)
    if any(held):
        assert checkpoints is not None
        state = checkpoints.load(held)
        assert state.guest is not None
        model_id = state.model_id
        validation_rows = [int(r) for r in state.guest.validation_rows]
        initial_coef = state.guest.initial_coef
    party = GuestParty(name, X, y, config, hosts, model_id, workers, exponent_bits,
                       validation_rows, initial_coef, init_score_std)
    party.checkpoint_at = held
    party.checkpoints_held = checkpoints.positions_held() if any(held) and checkpoints else []
    party.checkpoint_every = checkpoints.every_batches if checkpoints is not None else 0
    side = _GuestSide(channel, party, arbiter)
    side.store, side.data_digest = checkpoints, digest
    try:
        return party, _train(channel, side, progress)
    finally:
        party.close()


# ====================================================================== host
class _HostSide(_TrainingSide):
    role = Role.HOST

    def __init__(self, channel: Channel, name: str, X: FloatArray, *, guest: str, arbiter: str,
                 workers: int | None, exponent_bits: int | None,
                 policy: SecurityPolicy) -> None:
        self.channel = channel
        self.name = name
        self.X = X
        self.guest = guest
        self.arbiter = arbiter
        self.workers = workers
        self.exponent_bits = exponent_bits
        self.policy = policy
        self._party: HostParty | None = None
        self._out: tuple[MaskedGradient, CrossTerm | None] | None = None
        self.offered: Position = (0, 0)  # the checkpoint this host offered in its HostHello

    @property
    def party(self) -> HostParty:
        if self._party is None:
            raise LocalProtocolError(f"{self.name} has no job yet; expected TrainSetup.")
        return self._party

    @property
    def host_index(self) -> int:
        return self.party.index


    def close(self) -> None:
        if self._party is not None:
            self._party.close()

    @_sends(sch.HELLO)
    def _hello(self, peers: tuple[str, ...]) -> dict[str, object]:
        self.offered = self.store.newest(self.data_digest) if self.store is not None else (0, 0)
        return _to(peers, dataclasses.replace(host_hello(self.X),
                                              checkpoint_epochs=self.offered[0],
                                              checkpoint_batches=self.offered[1]))

    @_receives(sch.SETUP_HOSTS)
    def _setup(self, peer: str, msg: TrainSetup) -> None:
        held = self.store.positions_held() if self.store is not None else []
        asked = (msg.resume_epochs, msg.resume_batches)
        if asked > self.offered or (any(asked) and asked not in held):
            raise RemoteProtocolError(
                f"TrainSetup from {peer} resumes from {where(asked)}; {self.name} "
                f"offered {where(self.offered) if any(self.offered) else 'none'} and holds "
                f"checkpoints of {', '.join(map(where, held)) or 'none'}.")
        if msg.checkpoint_every > MAX_EVERY_BATCHES:
            raise RemoteProtocolError(
                f"TrainSetup from {peer} asks for a checkpoint every {msg.checkpoint_every} "
                f"batches; at most {MAX_EVERY_BATCHES}.")
        party = HostParty.from_setup(self.name, self.X, msg, peer, self.workers,
                                     self.exponent_bits, self.policy)
        self._party = party
        self.resume_at, self.setup_digest = asked, setup_digest(msg)
        self.checkpoint_every = msg.checkpoint_every
        limits = message_limits(party.config, msg.n_rows, party.n_train, list(msg.columns),
                                msg.n_validation)
        self.channel.limit_message_size(self.guest, limits["guest_to_host"])
        self.channel.limit_message_size(self.arbiter, limits["arbiter_to_party"])

    @_receives(sch.KEY_HOSTS)
    def _key(self, peer: str, msg: PublicKeyAnnounce) -> None:
        self.party.on_public_key(msg, peer=peer,
                                 allow_insecure_key_size=self.policy.allow_insecure_key_size)

    @_sends(sch.FORWARD)
    def _forward(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.forward(self.epoch, self.batch, self.rows))

    @_receives(sch.RESIDUAL)
    def _residual(self, peer: str, msg: Residual) -> None:
        self._out = self.party.on_residual(msg)

    def _outbox(self) -> tuple[MaskedGradient, CrossTerm | None]:
        if self._out is None:
            raise LocalProtocolError(f"{self.name} has no gradient yet; expected Residual.")
        return self._out

    @_sends(sch.GRADIENT_HOSTS)
    def _gradient(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self._outbox()[0])

    @_sends(sch.CROSS)
    def _cross(self, peers: tuple[str, ...]) -> dict[str, object]:
        cross = self._outbox()[1]
        if cross is None:
            raise LocalProtocolError(f"{self.name} (host {self.host_index}) has no cross term.")
        return _to(peers, cross)

    @_receives(sch.DECRYPTED_HOSTS)
    def _decrypted(self, peer: str, msg: DecryptedGradient | ShareUpdate) -> None:
        self._out = None
        if isinstance(msg, ShareUpdate):
            self.party.on_share_update(msg, peer=peer)
        else:
            self.party.on_decrypted(msg, peer=peer)

    @_sends(sch.VALIDATION_SCORES)
    def _validation_scores(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.validation_scores(self.epoch))

    @_receives(sch.DECISION_HOSTS)
    def _decision(self, peer: str, msg: EpochDecision) -> None:
        self.stop = self.party.on_decision(msg, self.epoch, peer=peer)

    @_receives(sch.RESULT)
    def _result(self, peer: str, msg: TrainingResult) -> None:
        self.party.on_training_result(msg)

    @_receives(sch.FINAL_HOSTS)
    def _final(self, peer: str, msg: FinalShare) -> None:
        best = self.party.best_epoch
        self.party.on_final_share(msg, peer=peer, epoch=self.epoch if best is None else best)


def run_host_training(channel: Channel, name: str, X: FloatArray, *, guest: str, arbiter: str,
                      allow_insecure_key_size: bool = False,
                      progress: ProgressHook | None = None,
                      workers: int | None = None,
                      exponent_bits: int | None = None,
                      policy: SecurityPolicy | None = None,
                      checkpoints: CheckpointStore | None = None) -> tuple[HostParty, int]:
    """Run the host's side of training; returns the party (with ``coef``) and epochs run.

    ``policy``: this host's own limits (default: :data:`~vfl.policy.DEFAULT_POLICY`
    with ``allow_insecure_key_size`` as given). ``checkpoints``: the host's
    checkpoint folder (written after every epoch; opened to resume, its
    newest checkpoint of this data is offered to the guest).
    """
    progress = progress or ProgressHook()
    if policy is None:
        policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    side = _HostSide(channel, name, X, guest=guest, arbiter=arbiter, workers=workers,
                     exponent_bits=exponent_bits, policy=policy)
    side.store = checkpoints
    side.data_digest = data_digest(np.asarray(X, dtype=np.float64))
    try:
        epochs_run = _train(channel, side, progress)
    finally:
        side.close()
    return side.party, epochs_run


# =================================================================== arbiter
class _ArbiterSide(_TrainingSide):
    role = Role.ARBITER

    def __init__(self, channel: Channel, guest: str, policy: SecurityPolicy) -> None:
        self.channel = channel
        self.guest = guest
        self.arbiter = channel.party
        self.policy = policy
        self._party: ArbiterParty | None = None
        self._ckpt: PartyCheckpoint | None = None  # the checkpoint resumed from
        self._key_due = False  # write the key-only checkpoint e0 at the first gradient

    @property
    def party(self) -> ArbiterParty:
        if self._party is None:
            raise LocalProtocolError("The arbiter has no job yet; expected TrainSetup.")
        return self._party


    @_receives(sch.SETUP_ARBITER)
    def _setup(self, peer: str, msg: TrainSetup) -> None:
        self.resume_at = (msg.resume_epochs, msg.resume_batches)
        self.setup_digest = setup_digest(msg)
        self.checkpoint_every = msg.checkpoint_every
        key, secret = None, None
        if any(self.resume_at):  # the key pair (and histories) of the checkpoint resumed from
            if self.store is None:
                raise RemoteProtocolError(
                    f"TrainSetup from {peer} resumes from {where(self.resume_at)}, but this "
                    "arbiter was not started with --resume (or keeps no checkpoints).")
            # it writes at epoch ends (and its key before the first, when checkpoints are
            # also taken within epochs)
            # (protocol shared: its shares move every batch, so it writes at the interval too)
            within = msg.resume_batches if msg.config.protocol == "shared" else 0
            self._ckpt = self.store.load((msg.resume_epochs, within))
            if self._ckpt.setup_digest != self.setup_digest:
                raise CheckpointError(f"The arbiter's checkpoint of epoch {msg.resume_epochs} "
                                      f"was made for another training setup than {peer}'s "
                                      "now: refused.")
            secret = self.store.unseal(self._ckpt.sealed)
            c = self._ckpt
            if (secret.job, secret.epochs_done, secret.stopped, secret.setup_digest) != (
                    c.job, c.epochs_done, c.stopped, c.setup_digest):
                raise CheckpointError(f"The arbiter's checkpoint of epoch {c.epochs_done} does "
                                      "not match its sealed state (files swapped or altered): "
                                      "refused.")
            key = _private_key(secret, self._ckpt.key_fingerprint)
        party = ArbiterParty(msg, peer, allow_insecure_key_size=self.policy.allow_insecure_key_size,
                             private_key=key, policy=self.policy)
        if secret is not None:
            party.restore(secret)
        n_batches = len(party.batches(0))
        if msg.resume_epochs > party.config.epochs or msg.resume_batches >= max(n_batches, 1) or (
                msg.resume_batches and msg.resume_epochs >= party.config.epochs):
            raise RemoteProtocolError(
                f"TrainSetup from {peer} resumes from {where(self.resume_at)}; the job has "
                f"{party.config.epochs} epochs of {n_batches} batches.")
        if msg.checkpoint_every > MAX_EVERY_BATCHES:
            raise RemoteProtocolError(
                f"TrainSetup from {peer} asks for a checkpoint every {msg.checkpoint_every} "
                f"batches; at most {MAX_EVERY_BATCHES}.")
        self._party = party
        limits = message_limits(party.config, msg.n_rows, msg.n_rows, list(msg.columns),
                                msg.n_validation)
        try:
            for p in [peer, *party.hosts]:
                self.channel.limit_message_size(p, limits["party_to_arbiter"])
        except LocalProtocolError:
            raise RemoteProtocolError(
                f"TrainSetup from {peer} names a host this arbiter has no link to.") from None

    @_sends(sch.KEY_GUEST)
    def _key_guest(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.announce())

    @_sends(sch.KEY_HOSTS)
    def _key_hosts(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.announce())

    @_receives(sch.GRADIENT_GUEST)
    def _gradient_guest(self, peer: str, msg: MaskedGradient) -> DecryptedGradient | ShareUpdate:
        self._save_key_if_due()
        return self.party.on_masked_gradient(peer, msg, self.epoch, self.batch)

    @_receives(sch.GRADIENT_HOSTS)
    def _gradient_host(self, peer: str, msg: MaskedGradient) -> DecryptedGradient | ShareUpdate:
        self._save_key_if_due()
        answer = self.party.on_masked_gradient(peer, msg, self.epoch, self.batch)
        every, done = self.checkpoint_every, self.batch + 1
        if (self.shared and every and done % every == 0 and peer == self.party.hosts[-1]
                and done < len(self.batches(self.epoch))):
            # protocol shared: the arbiter's shares move every batch; it writes them at the
            # guest's interval before the last host hears of the batch, so every position a
            # host holds is one the arbiter holds (the guest resumes at or before the hosts')
            self._save_now(self.epoch, False, done)
        return answer

    def _save_key_if_due(self) -> None:
        """A fresh job checkpointed within epochs: write the key pair (checkpoint e0) when
        the first masked gradient arrives. Not earlier: by then every party has passed its
        own resume checks (a host's gradient follows its forward, the guest's the hosts'
        forwards), so a start-over that a party refuses destroys no checkpoint of the
        arbiter's; and not later: no party writes a checkpoint before it is decrypted."""
        if self._key_due:
            self._key_due = False
            self._save_now(0, False)

    @_receives(sch.LOSS)
    def _loss(self, peer: str, msg: EpochLoss) -> None:
        decision = self.party.on_epoch_loss(msg, self.epoch)
        self.stop, self.loss = decision.stop, decision.loss

    @_sends(sch.DECISION_GUEST)
    def _decision_guest(self, peers: tuple[str, ...]) -> dict[str, object]:
        decision = self.party.guest_decision()
        # written before anyone hears of the decision: the arbiter then always holds the
        # newest epoch any party holds (the guest and hosts write theirs after it)
        self._save_now(decision.epoch + 1, decision.stop)
        return _to(peers, decision)

    def _save_now(self, epochs_done: int, stop: bool, batches_done: int = 0) -> None:
        if self.store is None or not self.store.can_seal:
            return
        party = self.party
        empty = np.zeros(0)
        secret = dataclasses.replace(party.secret_state(), job=self.store.job,
                                     epochs_done=epochs_done, stopped=stop,
                                     setup_digest=self.setup_digest)
        self.store.save(PartyCheckpoint(
            "arbiter", self.arbiter, self.store.job, party.setup.model_id, epochs_done, stop,
            self.setup_digest, self.key_fingerprint, b"", empty, 0, empty, empty,
            np.zeros((0, 0)), None, self.store.seal(secret), batches_done))

    def save(self, epochs_done: int, batches_done: int = 0) -> None:
        """Written in :meth:`_decision_guest` already (at epoch ends only)."""

    def resume(self) -> Position:
        k = self.resume_at
        self._refuse_a_start_over()
        if not any(k):
            # its key, for a resume within the first epoch (_save_key_if_due)
            self._key_due = bool(self.checkpoint_every)
            return k
        assert self._ckpt is not None and self.store is not None  # loaded with the TrainSetup
        self.stop = self._ckpt.stopped
        self.store.start = k
        return k

    @_sends(sch.DECISION_HOSTS)
    def _decision_hosts(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.party.host_decision())

    @_sends(sch.FINAL_GUEST)
    def _final_guest(self, peers: tuple[str, ...]) -> dict[str, object]:
        return {p: self.party.final_share(p) for p in peers}

    @_sends(sch.FINAL_HOSTS)
    def _final_hosts(self, peers: tuple[str, ...]) -> dict[str, object]:
        return {p: self.party.final_share(p) for p in peers}

    @_receives(sch.VALIDATION_BATCH)
    def _validation_batch(self, peer: str, msg: ValidationBatch) -> ValidationMetrics:
        return self.party.on_validation_batch(msg, self.epoch)

    @_receives(sch.CALIBRATE)
    def _calibrate(self, peer: str, msg: CalibrationRequest) -> CalibrationReport:
        return self.party.on_calibration_request(msg)


def _private_key(secret: ArbiterSecret, fingerprint: bytes) -> PaillierPrivateKey:
    """The arbiter's key pair from its checkpoint, checked against the checkpoint's key."""
    try:
        key = PaillierPrivateKey.from_primes(int.from_bytes(secret.p, "big"),
                                             int.from_bytes(secret.q, "big"))
    except CryptoError:
        raise CheckpointError("The arbiter's checkpoint holds no valid key pair.") from None
    if bytes(key.public_key.fingerprint) != fingerprint:
        raise CheckpointError("The arbiter's checkpoint key does not match its fingerprint.")
    return key


def run_arbiter(channel: Channel, *, guest: str, allow_insecure_key_size: bool = False,
                progress: ProgressHook | None = None,
                policy: SecurityPolicy | None = None,
                checkpoints: CheckpointStore | None = None) -> ArbiterParty:
    """Run the arbiter until the guest's job ends (``policy``: its own limits).

    ``checkpoints``: the arbiter's checkpoint folder; its checkpoints (its key
    pair among them) are sealed with the store's passphrase, and written only
    if it has one.
    """
    progress = progress or ProgressHook()
    if policy is None:
        policy = DEFAULT_POLICY.replace(allow_insecure_key_size=allow_insecure_key_size)
    side = _ArbiterSide(channel, guest, policy)
    side.store = checkpoints
    try:
        _train(channel, side, progress)
    finally:
        if side._party is not None:
            side._party.close()
    return side.party


# =================================================================== scoring
class _GuestScoringSide(_Side):
    role = Role.GUEST
    steps = sch.SCORING

    def __init__(self, scoring: GuestScoring) -> None:
        self.scoring = scoring
        self.guest = ""
        self.arbiter = ""

    @property
    def hosts(self) -> Sequence[str]:
        return self.scoring.hosts

    @_sends(sch.REQUEST)
    def _request(self, peers: tuple[str, ...]) -> dict[str, object]:
        return _to(peers, self.scoring.request())

    @_receives(sch.SCORES)
    def _scores(self, peer: str, msg: PartialScores) -> None:
        self.scoring.on_partial_scores(peer, msg)


class _HostScoringSide(_Side):
    role = Role.HOST
    steps = sch.SCORING

    def __init__(self, scoring: HostScoring) -> None:
        self.scoring = scoring
        self.guest = scoring.guest
        self.arbiter = ""

    @_receives(sch.REQUEST)
    def _request(self, peer: str, msg: ScoreRequest) -> PartialScores:
        return self.scoring.on_score_request(msg)


def run_guest_scoring(channel: Channel, own_scores: FloatArray, model_id: str, *,
                      hosts: list[str],
                      calibration: tuple[float, float] | None = None) -> FloatArray:
    """Collect the hosts' partial scores; return the (calibrated) probabilities of the rows."""
    return run_guest_scoring_with_points(channel, own_scores, model_id, hosts=hosts,
                                         calibration=calibration)[0]


def run_guest_scoring_with_points(channel: Channel, own_scores: FloatArray, model_id: str, *,
                                  hosts: list[str],
                                  calibration: tuple[float, float] | None = None,
                                  scale: float = 0.0) -> tuple[FloatArray, IntArray]:
    """As :func:`run_guest_scoring`, and ask every host for its points at ``scale``.

    Returns the (calibrated) probabilities and the sum of the hosts' integer
    scorecard points per row (zeros with ``scale`` 0: no points asked).
    """
    scoring = GuestScoring(own_scores, model_id, hosts, calibration, scale)
    _walk(channel, _GuestScoringSide(scoring), sch.SCORING)
    return scoring.probabilities(), scoring.host_points()


def run_host_scoring(channel: Channel, scores: FloatArray, model_id: str, *, guest: str,
                     points: PointsFn | None = None) -> None:
    """Answer one scoring request with this host's partial scores ``X_h w_h``.

    ``points(scale)``: this host's integer points per row, sent when the
    guest asks for points (None: a request for points is refused).
    """
    _walk(channel, _HostScoringSide(HostScoring(scores, model_id, guest, points)), sch.SCORING)
