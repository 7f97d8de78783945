"""The message order of hetero LR is written once (``vfl/lr/schedule.py``) and followed.

* Each role's projection of the table is exactly the order the hand-written
  loops had before the table existed (transcribed below from ``guest.py``,
  ``host.py`` and ``arbiter.py`` at commit b3577cd), for 1 to 3 hosts, with
  and without validation.
* The projections run to the end on FIFO links without a deadlock, every
  receive finds the type it expects, and no link ever holds more than two
  messages (so a sender never waits on the receiver's inbox of 8).
* A real threaded run sends and receives in exactly the projected order.
* The spec quotes the table as :func:`schedule_markdown` renders it.
* The role state modules do no I/O and no raw ciphertext arithmetic.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vfl.codec import decode_envelope
from vfl.lr import driver
from vfl.lr import schedule as sch
from vfl.lr.config import epoch_batches
from vfl.lr.schedule import SCORING, TRAINING, Act, Phase, Step, schedule_markdown, walk
from vfl.roles import Role

from .trio import run_trio, small_config

ROOT = Path(__file__).resolve().parents[2]
G, A = "guest", "arbiter"
Event = tuple[str, str, str]  # ("sent" | "received", peer, message class name)


@dataclass
class Roster:
    guest: str = G
    arbiter: str = A
    hosts: tuple[str, ...] = ()
    host_index: int = -1
    validation: bool = False
    taylor: bool = True
    shared: bool = False


def _names(n_hosts: int) -> list[str]:
    return [f"host{i + 1}" for i in range(n_hosts)]


def project_phase(steps, role: Role, roster: Roster) -> list[Event]:
    """What ``role`` sends and receives in ``steps``, in order (as ``driver._walk`` does it)."""
    out: list[Event] = []
    sh = roster.shared
    for act in walk(steps, role, roster):
        if act.kind is Act.SEND:
            out += [("sent", p, act.step.message_for(sh).__name__) for p in act.peers]
        elif act.kind is Act.RECV:
            out.append(("received", act.peers[0], act.step.message_for(sh).__name__))
            if act.answer is not None:
                out.append(("sent", act.peers[0], act.answer.message_for(sh).__name__))
    return out


def project_run(name: str, hosts: list[str], validation: bool, plan: list[int],
                taylor: bool = True, shared: bool = False) -> list[Event]:
    """A party's whole training run from the table; ``plan``: batches of each epoch run."""
    role = Role.GUEST if name == G else Role.ARBITER if name == A else Role.HOST
    roster = Roster(hosts=tuple(hosts), host_index=hosts.index(name) if role is Role.HOST else -1,
                    validation=validation, taylor=taylor, shared=shared)
    out = project_phase(sch.phase(TRAINING, Phase.SETUP), role, roster)
    for n_batches in plan:
        for _ in range(n_batches):
            out += project_phase(sch.phase(TRAINING, Phase.BATCH), role, roster)
        out += project_phase(sch.phase(TRAINING, Phase.EPOCH), role, roster)
    return out + project_phase(sch.phase(TRAINING, Phase.END), role, roster)


# ------- the per-role loops (b3577cd; validation through the arbiter since issue 10)
def legacy_guest(hosts: list[str], validation: bool, plan: list[int]) -> list[Event]:
    ev = [("received", h, "HostHello") for h in hosts]
    ev += [("sent", h, "TrainSetup") for h in hosts]
    ev += [("sent", A, "TrainSetup"), ("received", A, "PublicKeyAnnounce")]
    for n_batches in plan:
        for _ in range(n_batches):
            ev += [("received", h, "HostForward") for h in hosts]
            ev += [("sent", h, "Residual") for h in hosts]
            ev += [("sent", A, "MaskedGradient")]
            ev += [("received", h, "CrossTerm") for h in hosts[1:]]
            ev += [("received", A, "DecryptedGradient")]
        if validation:
            ev += [("received", h, "ValidationScores") for h in hosts]
            ev += [("sent", A, "ValidationBatch"), ("received", A, "ValidationMetrics")]
        ev += [("sent", A, "EpochLoss"), ("received", A, "EpochDecision")]
    if validation:
        ev += [("sent", h, "TrainingResult") for h in hosts]
        ev += [("sent", A, "CalibrationRequest"), ("received", A, "CalibrationReport")]
    return ev


def legacy_host(index: int, validation: bool, plan: list[int]) -> list[Event]:
    ev = [("sent", G, "HostHello"), ("received", G, "TrainSetup"),
          ("received", A, "PublicKeyAnnounce")]
    for n_batches in plan:
        for _ in range(n_batches):
            ev += [("sent", G, "HostForward"), ("received", G, "Residual"),
                   ("sent", A, "MaskedGradient")]
            if index > 0:
                ev += [("sent", G, "CrossTerm")]
            ev += [("received", A, "DecryptedGradient")]
        if validation:
            ev += [("sent", G, "ValidationScores")]
        ev += [("received", A, "EpochDecision")]
    if validation:
        ev += [("received", G, "TrainingResult")]
    return ev


def legacy_arbiter(hosts: list[str], validation: bool, plan: list[int]) -> list[Event]:
    ev = [("received", G, "TrainSetup")] + [("sent", p, "PublicKeyAnnounce") for p in [G, *hosts]]
    for n_batches in plan:
        for _ in range(n_batches):
            for p in [G, *hosts]:
                ev += [("received", p, "MaskedGradient"), ("sent", p, "DecryptedGradient")]
        if validation:
            ev += [("received", G, "ValidationBatch"), ("sent", G, "ValidationMetrics")]
        ev += [("received", G, "EpochLoss"), ("sent", G, "EpochDecision")]
        ev += [("sent", h, "EpochDecision") for h in hosts]
    if validation:
        ev += [("received", G, "CalibrationRequest"), ("sent", G, "CalibrationReport")]
    return ev


def legacy(name: str, hosts: list[str], validation: bool, plan: list[int]) -> list[Event]:
    if name == G:
        return legacy_guest(hosts, validation, plan)
    if name == A:
        return legacy_arbiter(hosts, validation, plan)
    return legacy_host(hosts.index(name), validation, plan)


def shared_order(name: str, hosts: list[str], validation: bool, plan: list[int]) -> list[Event]:
    """Protocol shared (issue 24): the former loops with ``ShareUpdate`` in place of
    ``DecryptedGradient``, no cross terms, and the arbiter's ``FinalShare`` to every party
    after everything else."""
    ev = [(d, p, "ShareUpdate" if k == "DecryptedGradient" else k)
          for d, p, k in legacy(name, hosts, validation, plan) if k != "CrossTerm"]
    if name == A:
        return ev + [("sent", p, "FinalShare") for p in [G, *hosts]]
    return ev + [("received", A, "FinalShare")]


CASES = [(n, v, plan) for n in (1, 2, 3) for v in (False, True) for plan in ([1], [3, 2])]


@pytest.mark.parametrize(("n_hosts", "validation", "plan"), CASES)
def test_every_projection_is_the_order_of_the_former_loops(n_hosts, validation, plan):
    hosts = _names(n_hosts)
    for name in [G, *hosts, A]:
        assert project_run(name, hosts, validation, plan) == legacy(name, hosts, validation, plan), name
        for taylor in (True, False):
            assert project_run(name, hosts, validation, plan, taylor, shared=True) == (
                shared_order(name, hosts, validation, plan)), name


# ---------------------------------------------------------------- deadlock freedom
def _simulate(seqs: dict[str, list[Event]], limit: dict[str, int] | None = None):
    """Run the parties on FIFO links, each as far as it can; returns positions, queues, order."""
    pos = dict.fromkeys(seqs, 0)
    queues: dict[tuple[str, str], deque[str]] = {(a, b): deque() for a in seqs for b in seqs}
    order: list[tuple[str, Event]] = []
    moved = True
    while moved:
        moved = False
        for me, seq in seqs.items():
            stop = len(seq) if limit is None or me not in limit else limit[me]
            while pos[me] < stop:
                direction, peer, kind = seq[pos[me]]
                if direction == "sent":
                    queues[(me, peer)].append(kind)
                else:
                    q = queues[(peer, me)]
                    if not q:
                        break
                    assert q[0] == kind, f"{me} expects {kind} from {peer} but {q[0]} is next"
                    q.popleft()
                order.append((me, seq[pos[me]]))
                pos[me] += 1
                moved = True
    return pos, queues, order


@pytest.mark.parametrize("shared", [False, True], ids=["reveal", "shared"])
@pytest.mark.parametrize("taylor", [True, False], ids=["taylor", "accurate"])
@pytest.mark.parametrize(("n_hosts", "validation", "plan"), CASES)
def test_the_schedule_runs_to_the_end_without_deadlock(n_hosts, validation, plan, taylor, shared):
    hosts = _names(n_hosts)
    seqs = {name: project_run(name, hosts, validation, plan, taylor, shared)
            for name in [G, *hosts, A]}
    pos, queues, order = _simulate(seqs)
    assert pos == {name: len(seq) for name, seq in seqs.items()}, "deadlock"
    assert not any(queues.values()), "a message is never received"
    # ``order`` is one valid global order: every receive after its send, each party in its order
    assert len(order) == sum(len(s) for s in seqs.values())


@pytest.mark.parametrize(("n_hosts", "validation"), [(1, True), (2, True), (3, False)])
def test_no_link_ever_holds_more_than_two_messages(n_hosts, validation):
    """The most messages a link can hold, over every reachable state (the receiver held back)."""
    hosts = _names(n_hosts)
    plan = [2, 2]
    seqs = {name: project_run(name, hosts, validation, plan) for name in [G, *hosts, A]}
    deepest = 0
    for receiver, seq in seqs.items():
        for held in range(len(seq) + 1):
            pos, queues, _ = _simulate(seqs, {receiver: held})
            if pos[receiver] < held:
                break  # the receiver cannot get this far: no later state is reachable
            deepest = max(deepest, *(len(q) for (_, b), q in queues.items() if b == receiver))
    assert 1 <= deepest <= 2  # 2 is reached with two or more hosts


# --------------------------------------------------------------- a real threaded run
@pytest.mark.parametrize(("n_hosts", "validation", "protocol"),
                         [(1, True, "reveal-gradients"), (2, False, "reveal-gradients"),
                          (3, True, "reveal-gradients"), (1, True, "shared"),
                          (2, False, "shared")])
def test_a_threaded_run_follows_the_projection(breast, n_hosts, validation, protocol):
    Xg, y, Xh = breast
    opt = {"optimizer": "adam" if protocol == "reveal-gradients" else "momentum"}
    cfg = small_config(epochs=2, batch_size=150, validation_fraction=0.2 if validation else 0.0,
                       protocol=protocol, **opt)
    blocks = np.array_split(np.arange(Xh.shape[1]), n_hosts)
    run = run_trio(Xg, y, [Xh[:, b] for b in blocks], cfg, record=True)
    hosts = _names(n_hosts)
    plan = [len(epoch_batches(len(y), run.guest.validation_rows, cfg, e)) for e in range(run.epochs)]
    for name, transcript in run.transcripts.items():
        got = [(d, peer, type(decode_envelope(data).body).__name__) for d, peer, data in transcript]
        assert got == project_run(name, hosts, validation, plan, cfg.mode == "taylor",
                                  protocol == "shared"), name
        if n_hosts > 1:  # accurate mode (the default) sends no cross terms
            assert "CrossTerm" not in {kind for _, _, kind in got}


# ------------------------------------------------------------------- the table itself
def test_the_table_is_well_formed():
    for table in (TRAINING, SCORING):
        labels = [s.label for s in table]
        assert len(set(labels)) == len(labels)
        by_label = {s.label: s for s in table}
        for s in table:
            assert s.sender is not s.receiver
            assert (s.hosts is sch.Hosts.NONE) == (Role.HOST not in (s.sender, s.receiver))
            if s.answers is not None:
                q = by_label[s.answers]
                assert labels.index(q.label) < labels.index(s.label)
                assert (q.phase, q.sender, q.receiver) == (s.phase, s.receiver, s.sender)
                assert (q.hosts, q.validation_only) == (s.hosts, s.validation_only)
    # phases appear in run order, each as one block
    assert [p for p in dict.fromkeys(s.phase for s in TRAINING)] == [
        Phase.SETUP, Phase.BATCH, Phase.EPOCH, Phase.END]


def _steps_of(table: tuple[Step, ...], role: Role) -> tuple[set[Step], set[Step]]:
    sends = {s for s in table if s.sender is role and s.answers is None}
    receives = {s for s in table if s.receiver is role}
    return sends, receives


@pytest.mark.parametrize(("side", "table", "role"), [
    (driver._GuestSide, TRAINING, Role.GUEST), (driver._HostSide, TRAINING, Role.HOST),
    (driver._ArbiterSide, TRAINING, Role.ARBITER), (driver._GuestScoringSide, SCORING, Role.GUEST),
    (driver._HostScoringSide, SCORING, Role.HOST),
])
def test_every_driver_serves_exactly_its_steps(side, table, role):
    sends, receives = _steps_of(table, role)
    assert side.role is role and side.steps == table
    assert {s for (kind, s) in side.handlers if kind == "send"} == sends
    assert {s for (kind, s) in side.handlers if kind == "recv"} == receives
    assert {s for (kind, s) in side.handlers if kind == "after"} <= receives


def test_spec_quotes_the_rendered_table():
    spec = (ROOT / "protocols" / "specs" / "hetero_lr.md").read_text()
    m = re.search(r"<!-- schedule_markdown\(\) begin -->\n(.*?)<!-- schedule_markdown\(\) end -->",
                  spec, re.S)
    assert m, "hetero_lr.md lacks the generated 'Message order' block"
    assert m.group(1) == schedule_markdown(), (
        "hetero_lr.md is out of date: paste vfl.lr.schedule.schedule_markdown() between the markers")
    assert "## Message order" in spec[:m.start()]


# ------------------------------------------------------------------------------ purity
STATE_MODULES = ["guest.py", "host.py", "arbiter.py", "_party.py", "schedule.py"]


def _imports(path: Path) -> set[str]:
    """Modules ``path`` names in its imports (``from a import b`` gives ``a`` and ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _reachable(path: Path) -> set[str]:
    """``vfl`` modules ``path`` imports, directly or through the ``vfl`` modules it imports."""
    seen: set[str] = set()
    todo = [path]
    while todo:
        for module in _imports(todo.pop()):
            for name in (module, module.rpartition(".")[0]):  # ``from a import b``: a.b or a
                base = ROOT.joinpath(*name.split("."))
                hit = next((f for f in (base.with_suffix(".py"), base / "__init__.py")
                            if name.startswith("vfl.") and f.is_file()), None)
                if hit is not None and name not in seen:
                    seen.add(name)
                    if hit.name != "__init__.py":  # a package's initialiser re-exports: skip it
                        todo.append(hit)
    return seen


@pytest.mark.parametrize("name", STATE_MODULES)
def test_role_state_modules_do_no_io(name):
    path = ROOT / "vfl" / "lr" / name
    reached = _reachable(path)
    assert "vfl.lr.messages" in reached  # the walk does follow the imports
    bad = {m for m in reached if m.startswith(("vfl.channel", "vfl.lr.driver", "vfl.progress",
                                               "vfl.transport"))}
    assert not bad, f"{name} reaches {bad}"
    text = path.read_text()
    assert ".send(" not in text and ".recv(" not in text


def test_only_the_driver_imports_the_channel():
    users = sorted(p.name for p in (ROOT / "vfl" / "lr").glob("*.py")
                   if "vfl.channel" in _imports(p))
    assert users == ["driver.py", "estimator.py"]


@pytest.mark.parametrize("path", sorted((ROOT / "vfl" / "lr").glob("*.py")), ids=lambda p: p.name)
def test_no_raw_ciphertext_arithmetic_outside_crypto(path):
    text = path.read_text()
    assert "gmpy2" not in _imports(path)
    for needle in ("nsquare", "% n2", "powmod", "invert("):
        assert needle not in text, f"{path.name} does ciphertext arithmetic by hand ({needle})"
