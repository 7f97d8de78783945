"""The message order of hetero LR, written down once (``protocols/specs/hetero_lr.md``).

:data:`TRAINING` lists every message of a training run as a :class:`Step`:
its phase, sender and receiver role, message type, how many of it there are
(``each host``, ``hosts after the first``, ``only with validation``) and a
note. A run is the ``setup`` steps once; then, per epoch, the ``batch`` steps
for every mini-batch of the epoch's plan followed by the ``epoch`` steps,
until an ``EpochDecision`` says stop or ``epochs`` epochs have run; then the
``end`` steps. :data:`SCORING` is the two-step scoring exchange.

Every party takes the steps it sends or receives in table order (its
*projection*, :func:`walk`). Fan-outs and fan-ins go over the hosts in their
order. A step that *answers* another (``answers``) is sent as soon as the
message it answers has arrived, to the same peer; its receiver receives it at
the step's own row. That is how the arbiter decrypts each party's
``MaskedGradient`` the moment it arrives while the guest first takes the later
hosts' cross terms: no single linear order of whole messages has both.

The drivers (:mod:`vfl.lr.driver`) only walk this table; the tests check
that every role's projection is the order the role had before the table
existed, and that the projections run to the end on FIFO links without a
deadlock (``tests/lr/test_schedule.py``).

This module is pure: no I/O, no state of a run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Protocol

import vfl.lr.messages as msg
from vfl.codec import type_name_of
from vfl.roles import Role

__all__ = [
    "Phase",
    "Hosts",
    "Step",
    "Act",
    "Action",
    "Roster",
    "TRAINING",
    "SCORING",
    "phase",
    "walk",
    "schedule_markdown",
]

_G, _H, _A = Role.GUEST, Role.HOST, Role.ARBITER


class Phase(StrEnum):
    """When a step happens."""

    SETUP = "setup"  # once, before the first epoch
    BATCH = "batch"  # every mini-batch of every epoch
    EPOCH = "epoch"  # after the last batch of every epoch
    END = "end"  # once, after the last epoch
    SCORING = "scoring"  # one scoring request (prediction)


class Hosts(StrEnum):
    """Which hosts a step involves (as sender or receiver)."""

    NONE = "one"  # a guest ↔ arbiter step
    EACH = "each host"
    LATER = "hosts after the first"


@dataclass(frozen=True, slots=True)
class Step:
    """One message of the protocol: who sends what to whom, how often."""

    label: str
    phase: Phase
    sender: Role
    receiver: Role
    message: type[Any]
    hosts: Hosts = Hosts.NONE
    validation_only: bool = False
    taylor_only: bool = False
    answers: str | None = None  # label of the step whose message this one answers
    note: str = ""
    #: protocol ``shared``: the message this step carries instead (None: the same)
    shared_message: type[Any] | None = None
    #: the step exists only under protocol ``shared`` (or only under the other one)
    shared_only: bool = False
    reveal_only: bool = False

    def message_for(self, shared: bool) -> type[Any]:
        """The step's message type under the job's protocol."""
        return self.shared_message if shared and self.shared_message is not None else self.message

    @property
    def multiplicity(self) -> str:
        """``each host``, ``hosts after the first``, ``one``, plus ``only with validation``."""
        return (self.hosts.value + (", only with validation" if self.validation_only else "")
                + (", Taylor mode only" if self.taylor_only else "")
                + (", protocol shared only" if self.shared_only else "")
                + (", protocol reveal-gradients only" if self.reveal_only else ""))


_S, _B, _E, _F = Phase.SETUP, Phase.BATCH, Phase.EPOCH, Phase.END
_EACH, _LATER = Hosts.EACH, Hosts.LATER

HELLO = Step("S1", _S, _H, _G, msg.HostHello, _EACH,
             note="aligned row and column counts; the guest then checks the shapes and the "
                  "batch-size guardrail")
SETUP_HOSTS = Step("S2", _S, _G, _H, msg.TrainSetup, _EACH,
                   note="the job; each host checks it against its own data and policy")
SETUP_ARBITER = Step("S2'", _S, _G, _A, msg.TrainSetup,
                     note="training rows only, no validation rows")
KEY_GUEST = Step("S3", _S, _A, _G, msg.PublicKeyAnnounce, note="the session's modulus `n`")
KEY_HOSTS = Step("S3'", _S, _A, _H, msg.PublicKeyAnnounce, _EACH, note="the same key")
FORWARD = Step("1", _B, _H, _G, msg.HostForward, _EACH,
               note="`[[X_b w_h]]`; Taylor mode also `[[Σ (X_b w_h)²]]`; accurate mode also "
                    "`[[clip(X_b w_h, ±3)²]]` of the batch rows due")
RESIDUAL = Step("2", _B, _G, _H, msg.Residual, _EACH,
                note="`[[4d]]`; Taylor mode, for the hosts after the first also "
                     "`[[Σ earlier hosts' scores]]`")
GRADIENT_GUEST = Step("3", _B, _G, _A, msg.MaskedGradient,
                      note="before the guest takes the later hosts' cross terms")
GRADIENT_HOSTS = Step("3'", _B, _H, _A, msg.MaskedGradient, _EACH,
                      note="a host sends it before its cross term")
CROSS = Step("3''", _B, _H, _G, msg.CrossTerm, _LATER, taylor_only=True, reveal_only=True,
             note="then the guest folds the batch's loss terms")
DECRYPTED_GUEST = Step("4", _B, _A, _G, msg.DecryptedGradient, answers="3",
                       shared_message=msg.ShareUpdate,
                       note="masked values, each checked below `2^(ℓ+κ+1)`; protocol shared: "
                            "`lr.ShareUpdate/1`, the arbiter's new share `[[V_g]]` (and "
                            "`[[y²]]` of the squares asked for), nothing decrypted")
DECRYPTED_HOSTS = Step("4'", _B, _A, _H, msg.DecryptedGradient, _EACH, answers="3'",
                       shared_message=msg.ShareUpdate,
                       note="then every party unmasks and takes its optimiser step; protocol "
                            "shared: `lr.ShareUpdate/1` `[[V_h]]`, and each side steps its "
                            "own share")
VALIDATION_SCORES = Step("V1", _E, _H, _G, msg.ValidationScores, _EACH, validation_only=True,
                         note="`[[X_v w_h]]` on the validation rows with this epoch's weights")
VALIDATION_BATCH = Step("V2", _E, _G, _A, msg.ValidationBatch, validation_only=True,
                        note="`[[s_v]]` (the guest adds its scores) in a fresh secret order, "
                             "re-randomised, with the labels in that order")
VALIDATION_METRICS = Step("V3", _E, _A, _G, msg.ValidationMetrics, validation_only=True,
                          answers="V2",
                          note="AUC, KS, log-loss, Brier (4 decimals); then the guest's patience")
LOSS = Step("E1", _E, _G, _A, msg.EpochLoss,
            note="`[[8·2^(2F)·Σ loss]]` (Taylor) or `[[2^(F+16)·Σ loss]]` (accurate), "
                 "`n_samples`, `stop_requested`")
DECISION_GUEST = Step("E2", _E, _A, _G, msg.EpochDecision, note="stop or not, and the loss")
DECISION_HOSTS = Step("E2'", _E, _A, _H, msg.EpochDecision, _EACH,
                      note="stop or not (`loss` = null); the run ends after an epoch that stops")
RESULT = Step("V4", _F, _G, _H, msg.TrainingResult, _EACH, validation_only=True,
              note="the best epoch, whose weights every party keeps")
CALIBRATE = Step("V5", _F, _G, _A, msg.CalibrationRequest, validation_only=True,
                 note="the same epoch")
CALIBRATION = Step("V6", _F, _A, _G, msg.CalibrationReport, validation_only=True, answers="V5",
                   note="Platt `slope`, `intercept` of the kept epoch's joint score; "
                        "figures before and after, per score band")
FINAL_GUEST = Step("F1", _F, _A, _G, msg.FinalShare, shared_only=True,
                   note="the arbiter's share of the guest's weights of the kept epoch, in the "
                        "clear")
FINAL_HOSTS = Step("F1'", _F, _A, _H, msg.FinalShare, _EACH, shared_only=True,
                   note="the same for each host, of its own weights only")

#: Every message of a training run, in order.
TRAINING: tuple[Step, ...] = (
    HELLO, SETUP_HOSTS, SETUP_ARBITER, KEY_GUEST, KEY_HOSTS,
    FORWARD, RESIDUAL, GRADIENT_GUEST, GRADIENT_HOSTS, CROSS, DECRYPTED_GUEST, DECRYPTED_HOSTS,
    VALIDATION_SCORES, VALIDATION_BATCH, VALIDATION_METRICS, LOSS, DECISION_GUEST,
    DECISION_HOSTS, RESULT, CALIBRATE, CALIBRATION, FINAL_GUEST, FINAL_HOSTS,
)

REQUEST = Step("P1", Phase.SCORING, _G, _H, msg.ScoreRequest, _EACH, note="model id, row count")
SCORES = Step("P2", Phase.SCORING, _H, _G, msg.PartialScores, _EACH, answers="P1",
              note="`X_h w_h` per aligned row")

#: One scoring request (prediction on aligned rows).
SCORING: tuple[Step, ...] = (REQUEST, SCORES)


def phase(steps: Sequence[Step], which: Phase) -> tuple[Step, ...]:
    """The steps of one phase, in order."""
    return tuple(s for s in steps if s.phase is which)


class Act(Enum):
    """What a party does at a step."""

    SEND = "send"  # produce the step's message(s) and send them to ``peers`` in order
    RECV = "recv"  # receive the step's message from the one peer in ``peers``
    DONE = "done"  # this party has received every message of the step


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a party does: send to some peers, receive from one, or close a step.

    ``answer`` (with ``RECV`` only): the step whose message goes back to the
    same peer at once.
    """

    kind: Act
    step: Step
    peers: tuple[str, ...] = ()
    answer: Step | None = None


class Roster(Protocol):
    """What a party knows of the run's parties, read when the walk reaches a step.

    A host learns ``hosts`` and ``host_index`` from the guest's ``TrainSetup``
    and the arbiter learns ``hosts`` from it: the walk reads them only in the
    steps after it.
    """

    @property
    def guest(self) -> str: ...

    @property
    def arbiter(self) -> str: ...

    @property
    def hosts(self) -> Sequence[str]: ...

    @property
    def host_index(self) -> int: ...

    @property
    def validation(self) -> bool: ...

    @property
    def taylor(self) -> bool: ...

    @property
    def shared(self) -> bool: ...


def _peers(step: Step, me: Role, roster: Roster) -> tuple[str, ...]:
    other = step.receiver if me is step.sender else step.sender
    if other is _H:
        hosts = tuple(roster.hosts)
        return hosts[1:] if step.hosts is _LATER else hosts
    if me is _H and step.hosts is _LATER and roster.host_index == 0:
        return ()
    return (roster.guest if other is _G else roster.arbiter,)


def walk(steps: Sequence[Step], me: Role, roster: Roster) -> Iterator[Action]:
    """The actions of party role ``me`` in ``steps`` (one phase), in order.

    A generator: ``roster`` is read only when a step needs it, so a party may
    learn the other parties from a message of an earlier step.
    """
    answered_by = {s.answers: s for s in steps if s.answers is not None}
    for step in steps:
        if me not in (step.sender, step.receiver):
            continue
        if step.validation_only and not roster.validation:
            continue
        if step.shared_only and not roster.shared:
            continue
        # a Taylor-only step in accurate mode (or a reveal-only one under protocol shared)
        # has no peers: nothing is sent or received, and its receiver still closes it (the
        # guest folds the batch's loss terms there)
        idle = (step.taylor_only and not roster.taylor) or (step.reveal_only and roster.shared)
        peers = () if idle else _peers(step, me, roster)
        if me is step.sender:
            if step.answers is None and peers:
                yield Action(Act.SEND, step, peers)
            continue
        reply = answered_by.get(step.label)
        answer = reply if reply is not None and reply.sender is me else None
        for peer in peers:
            yield Action(Act.RECV, step, (peer,), answer)
        yield Action(Act.DONE, step)


# ------------------------------------------------------------------ rendering
_PHASE_TEXT = {
    Phase.SETUP: "once, before the first epoch",
    Phase.BATCH: "every mini-batch",
    Phase.EPOCH: "after each epoch's last batch",
    Phase.END: "once, after the last epoch",
    Phase.SCORING: "each scoring request",
}


def _rows(steps: Sequence[Step]) -> list[str]:
    out = ["| step | phase | from → to | message | how many | note |",
           "| --- | --- | --- | --- | --- | --- |"]
    for s in steps:
        note = s.note
        if s.answers is not None:
            note = f"answers {s.answers} (sent as soon as {s.answers} arrives); {note}"
        out.append(f"| {s.label} | {s.phase.value} | {s.sender.value} → {s.receiver.value} | "
                   f"`{type_name_of(s.message)}` | {s.multiplicity} | {note} |")
    return out


def schedule_markdown() -> str:
    """The spec's "Message order" tables, rendered from :data:`TRAINING` and :data:`SCORING`."""
    phases = "; ".join(f"**{p.value}**: {_PHASE_TEXT[p]}" for p in Phase)
    lines = [
        "A training run is the setup steps once; then, for every epoch, the batch steps for "
        "each mini-batch of the epoch's plan followed by the epoch steps, until an "
        "`EpochDecision` says stop or `epochs` epochs have run; then the end steps "
        f"({phases}).",
        "",
        "Every party takes the steps it sends or receives in this order; a fan-out or fan-in "
        "goes over the hosts in their order. A step that answers another is sent by its "
        "sender as soon as the message it answers arrives (from the same peer), and received "
        "at its own row: the arbiter decrypts each party's `MaskedGradient` at once, while the "
        "guest first takes the later hosts' `CrossTerm`s. No link ever holds more than two "
        "messages, so a send never waits for its receiver.",
        "",
        *_rows(TRAINING),
        "",
        "Scoring (prediction):",
        "",
        *_rows(SCORING),
    ]
    return "\n".join(lines) + "\n"
