"""Training by pumping messages between the role states in one thread: no channel, no threads.

Each party is a generator that walks :mod:`vfl.lr.schedule` (setup; per epoch
the batch steps of every batch, then the epoch steps; end) and calls its
state's step methods directly: what one state returns is handed, through the
wire codec, to the state the table names as its receiver. The pump resumes a
party when the message it waits for is at the head of its link. The weights
must equal the plaintext reference (1e-6) and, bit for bit, a threaded run
over the in-memory transport started from the same secret start and
validation rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from vfl.codec import Envelope, decode_envelope, encode_envelope
from vfl.lr import schedule as sch
from vfl.lr.arbiter import ArbiterParty
from vfl.lr.config import TrainConfig, validation_split
from vfl.lr.guest import GuestParty
from vfl.lr.host import HostParty, host_hello
from vfl.lr.reference import fit_reference
from vfl.lr.schedule import Act, Phase, Step, walk
from vfl.policy import DEFAULT_POLICY
from vfl.roles import Role

from .trio import run_trio, small_config

G, A = "guest", "arbiter"
PHASES = {p: sch.phase(sch.TRAINING, p) for p in Phase}


@dataclass
class Recv:
    """A party waits for ``kind`` from ``peer``."""

    peer: str
    kind: type


@dataclass
class Node:
    """One party: its roster (what :func:`walk` reads), position in the run and step table."""

    name: str
    role: Role
    guest: str = G
    arbiter: str = A
    hosts: list[str] = field(default_factory=list)
    host_index: int = -1
    validation: bool = False
    taylor: bool = True
    shared: bool = False
    state: Any = None
    epoch: int = 0
    batch: int = 0
    rows: list[int] = field(default_factory=list)
    stop: bool = False
    sends: dict[Step, Callable[[tuple[str, ...]], dict[str, Any]]] = field(default_factory=dict)
    takes: dict[Step, Callable[[str, Any], Any]] = field(default_factory=dict)
    after: dict[Step, Callable[[], None]] = field(default_factory=dict)


class Pump:
    """FIFO links between the parties; messages go through the codec when ``wire``."""

    def __init__(self, names: list[str], wire: bool) -> None:
        self.links: dict[tuple[str, str], deque[Any]] = {(a, b): deque() for a in names
                                                         for b in names if a != b}
        self.wire = wire
        self.count = 0

    def post(self, sender: str, receiver: str, msg: Any) -> None:
        if self.wire:
            env = Envelope("pumped", self.count, sender, receiver, msg)
            msg = decode_envelope(encode_envelope(env), peer=sender).body
        self.links[(sender, receiver)].append(msg)
        self.count += 1

    def run(self, procs: dict[str, Generator[Recv, Any, Any]]) -> dict[str, Any]:
        waiting: dict[str, Recv] = {}
        done: dict[str, Any] = {}

        def advance(name: str, msg: Any = None) -> None:
            try:
                waiting[name] = procs[name].send(msg)
            except StopIteration as stop:
                waiting.pop(name, None)
                done[name] = stop.value

        for name in procs:
            advance(name)
        while waiting:
            ready = [n for n, r in waiting.items() if self.links[(r.peer, n)]]
            assert ready, f"deadlock: {waiting}"
            for name in ready:
                req = waiting[name]
                msg = self.links[(req.peer, name)].popleft()
                assert isinstance(msg, req.kind), f"{name} got {type(msg).__name__}, not {req.kind}"
                advance(name, msg)
        assert not any(self.links.values()), "a message was never received"
        return done


def follow(node: Node, pump: Pump) -> Generator[Recv, Any, Any]:
    """One party's run: the schedule's phases, each step handed to its state."""

    def phase(which: Phase) -> Generator[Recv, Any, None]:
        for act in walk(PHASES[which], node.role, node):
            if act.kind is Act.SEND:
                out = node.sends[act.step](act.peers)
                for peer in act.peers:
                    pump.post(node.name, peer, out[peer])
            elif act.kind is Act.RECV:
                (peer,) = act.peers
                msg = yield Recv(peer, act.step.message_for(node.shared))
                answer = node.takes[act.step](peer, msg)
                if act.answer is not None:
                    pump.post(node.name, peer, answer)
            elif act.step in node.after:
                node.after[act.step]()

    yield from phase(Phase.SETUP)
    epochs = 0
    for epoch in range(node.state.config.epochs):
        node.epoch = epoch
        for b, rows in enumerate(node.state.batches(epoch)):
            node.batch, node.rows = b, rows
            yield from phase(Phase.BATCH)
        yield from phase(Phase.EPOCH)
        epochs = epoch + 1
        if node.stop:
            break
    yield from phase(Phase.END)
    return node.state, epochs


def _all(peers: tuple[str, ...], msg: Any) -> dict[str, Any]:
    return dict.fromkeys(peers, msg)


def guest_node(party: GuestParty) -> Node:
    n = Node(G, Role.GUEST, hosts=party.hosts, validation=bool(party.validation_rows),
             taylor=party.config.mode == "taylor", shared=party.shared, state=party)
    job: dict[str, Any] = {}

    def decision(peer: str, msg: Any) -> None:
        n.stop = party.on_decision(msg, n.epoch, peer=peer).stop

    n.takes = {
        sch.HELLO: party.on_hello,
        sch.KEY_GUEST: lambda p, m: party.on_public_key(m, peer=p, allow_insecure_key_size=True),
        sch.FORWARD: lambda p, m: party.on_forward(p, m, n.epoch, n.batch),
        sch.CROSS: party.on_cross,
        sch.DECRYPTED_GUEST: lambda p, m: (party.on_share_update(m, peer=p) if party.shared
                                           else party.on_decrypted(m, peer=p)),
        sch.FINAL_GUEST: lambda p, m: party.on_final_share(
            m, peer=p, epoch=n.epoch if party.best_epoch is None else party.best_epoch),
        sch.VALIDATION_SCORES: lambda p, m: party.on_validation_scores(p, m, n.epoch),
        sch.VALIDATION_METRICS: lambda p, m: party.on_validation_metrics(m, n.epoch, peer=p),
        sch.DECISION_GUEST: decision,
        sch.CALIBRATION: lambda p, m: party.on_calibration_report(m, peer=p),
    }
    n.sends = {
        sch.SETUP_HOSTS: lambda peers: _all(peers, job["setup"]),
        sch.SETUP_ARBITER: lambda peers: _all(peers, party.arbiter_setup(job["setup"])),
        sch.RESIDUAL: lambda peers: party.residuals(n.epoch, n.batch, n.rows),
        sch.GRADIENT_GUEST: lambda peers: _all(peers, party.masked_gradient()),
        sch.VALIDATION_BATCH: lambda peers: _all(peers, party.validation_batch(n.epoch)),
        sch.LOSS: lambda peers: _all(peers, party.epoch_loss(n.epoch)),
        sch.RESULT: lambda peers: _all(peers, party.training_result()),
        sch.CALIBRATE: lambda peers: _all(peers, party.calibration_request()),
    }
    n.after = {
        sch.HELLO: lambda: job.update(setup=party.setup()),
        sch.CROSS: party.close_batch,
    }
    return n


def host_node(name: str, X: np.ndarray) -> Node:
    n = Node(name, Role.HOST)
    out: dict[str, Any] = {}
    policy = DEFAULT_POLICY.replace(allow_insecure_key_size=True)

    def setup(peer: str, msg: Any) -> None:
        n.state = party = HostParty.from_setup(name, X, msg, peer, workers=1, policy=policy)
        n.hosts, n.host_index = party.hosts, party.index
        n.validation = bool(party.validation_rows)
        n.taylor = party.config.mode == "taylor"
        n.shared = party.shared

    def decision(peer: str, msg: Any) -> None:
        n.stop = n.state.on_decision(msg, n.epoch, peer=peer)

    n.sends = {
        sch.HELLO: lambda peers: _all(peers, host_hello(X)),
        sch.FORWARD: lambda peers: _all(peers, n.state.forward(n.epoch, n.batch, n.rows)),
        sch.GRADIENT_HOSTS: lambda peers: _all(peers, out["gradient"][0]),
        sch.CROSS: lambda peers: _all(peers, out["gradient"][1]),
        sch.VALIDATION_SCORES: lambda peers: _all(peers, n.state.validation_scores(n.epoch)),
    }
    n.takes = {
        sch.SETUP_HOSTS: setup,
        sch.KEY_HOSTS: lambda p, m: n.state.on_public_key(m, peer=p,
                                                          allow_insecure_key_size=True),
        sch.RESIDUAL: lambda p, m: out.update(gradient=n.state.on_residual(m)),
        sch.DECRYPTED_HOSTS: lambda p, m: (n.state.on_share_update(m, peer=p) if n.shared
                                           else n.state.on_decrypted(m, peer=p)),
        sch.FINAL_HOSTS: lambda p, m: n.state.on_final_share(
            m, peer=p, epoch=n.epoch if n.state.best_epoch is None else n.state.best_epoch),
        sch.DECISION_HOSTS: decision,
        sch.RESULT: lambda p, m: n.state.on_training_result(m),
    }
    return n


def arbiter_node() -> Node:
    n = Node(A, Role.ARBITER)

    def setup(peer: str, msg: Any) -> None:
        n.state = ArbiterParty(msg, peer, allow_insecure_key_size=True)
        n.hosts = n.state.hosts
        n.validation = n.state.validation
        n.shared = n.state.shared

    def loss(peer: str, msg: Any) -> None:
        n.stop = n.state.on_epoch_loss(msg, n.epoch).stop

    n.takes = {
        sch.SETUP_ARBITER: setup,
        sch.GRADIENT_GUEST: lambda p, m: n.state.on_masked_gradient(p, m, n.epoch, n.batch),
        sch.GRADIENT_HOSTS: lambda p, m: n.state.on_masked_gradient(p, m, n.epoch, n.batch),
        sch.LOSS: loss,
        sch.VALIDATION_BATCH: lambda p, m: n.state.on_validation_batch(m, n.epoch),
        sch.CALIBRATE: lambda p, m: n.state.on_calibration_request(m),
    }
    n.sends = {
        sch.KEY_GUEST: lambda peers: _all(peers, n.state.announce()),
        sch.KEY_HOSTS: lambda peers: _all(peers, n.state.announce()),
        sch.DECISION_GUEST: lambda peers: _all(peers, n.state.guest_decision()),
        sch.DECISION_HOSTS: lambda peers: _all(peers, n.state.host_decision()),
        sch.FINAL_GUEST: lambda peers: {p: n.state.final_share(p) for p in peers},
        sch.FINAL_HOSTS: lambda peers: {p: n.state.final_share(p) for p in peers},
    }
    return n


def pumped_run(Xg, y, Xhs, config: TrainConfig, *, initial_coef, validation_rows, wire=True):
    """Train in this thread; returns the guest, the hosts, the arbiter and the epochs run."""
    names = [f"host{i + 1}" for i in range(len(Xhs))]
    guest = GuestParty(G, Xg, y, config, names, workers=1, initial_coef=initial_coef,
                       validation_rows=validation_rows)
    nodes = [guest_node(guest), *(host_node(n, X) for n, X in zip(names, Xhs, strict=True)),
             arbiter_node()]
    pump = Pump([n.name for n in nodes], wire)
    done = pump.run({n.name: follow(n, pump) for n in nodes})
    for n in nodes[:-1]:
        n.state.close()
    epochs = {name: e for name, (_, e) in done.items()}
    assert len(set(epochs.values())) == 1, epochs
    return done[G][0], [done[n][0] for n in names], done[A][0], epochs[G]


SCENARIOS = {
    "one host": dict(hosts=1, validation=False),
    "one host, validation": dict(hosts=1, validation=True),
    "two hosts": dict(hosts=2, validation=False),
    "two hosts, validation": dict(hosts=2, validation=True),
}


PROTOCOLS = {"reveal-gradients": dict(protocol="reveal-gradients", optimizer="adam",
                                      learning_rate=0.1),
             "shared": dict(protocol="shared", optimizer="momentum", learning_rate=0.4,
                            decay=0.5)}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pumped_run_equals_reference_and_threaded_run(breast, name, protocol):
    spec = SCENARIOS[name]
    Xg, y, Xh = breast
    Xhs = [Xh] if spec["hosts"] == 1 else [Xh[:, :12], Xh[:, 12:]]
    cfg = small_config(epochs=3, batch_size=128, **PROTOCOLS[protocol])
    val = validation_split(y, 0.2) if spec["validation"] else None
    # the threaded run draws the secret start; the pumped run replays it
    threaded = run_trio(Xg, y, Xhs, cfg, guest_kwargs={"validation_rows": val})
    start = threaded.guest.initial_coef
    guest, hosts, arbiter, epochs = pumped_run(Xg, y, Xhs, cfg, initial_coef=start,
                                               validation_rows=val)
    # bit for bit what the threaded drivers computed (protocol shared: each side rounds its
    # own share, whose split depends on the run's secret masks: equal to ~2^-32 per step)
    assert epochs == threaded.epochs
    if protocol == "shared":
        np.testing.assert_allclose(guest.coef, threaded.guest.coef, atol=1e-8, rtol=0)
        for mine, theirs in zip(hosts, threaded.hosts, strict=True):
            np.testing.assert_allclose(mine.coef, theirs.coef, atol=1e-8, rtol=0)
        np.testing.assert_allclose(guest.loss_history, threaded.guest.loss_history, atol=1e-7)
        assert guest.loss_history == arbiter.loss_history
    else:
        assert guest.coef.tobytes() == threaded.guest.coef.tobytes()
        for mine, theirs in zip(hosts, threaded.hosts, strict=True):
            assert mine.coef.tobytes() == theirs.coef.tobytes()
        assert guest.loss_history == threaded.guest.loss_history == arbiter.loss_history
    assert guest.validation_history == threaded.guest.validation_history
    assert guest.best_epoch == threaded.guest.best_epoch
    # and the plaintext run of the same algorithm (at the kept epoch, with validation)
    ref = fit_reference(Xg, y, Xhs, cfg, initial_guest_coef=start, validation_rows=val)
    np.testing.assert_allclose(guest.loss_history, ref.loss_history, atol=1e-7, rtol=0)
    assert epochs == ref.epochs_run
    if val:
        assert guest.best_epoch is not None and len(guest.validation_history) == epochs
        ref = fit_reference(Xg, y, Xhs, cfg.replace(epochs=guest.best_epoch + 1),
                            initial_guest_coef=start, validation_rows=val)
    np.testing.assert_allclose(guest.coef, ref.guest_coef, atol=1e-6, rtol=0)
    for host, ref_coef in zip(hosts, ref.host_coefs, strict=True):
        np.testing.assert_allclose(host.coef, ref_coef, atol=1e-6, rtol=0)
    assert np.abs(ref.guest_coef[:-1]).max() > 0.05  # the weights moved
    if val:
        # the arbiter's figures of the kept epoch against sklearn on the plaintext scores
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

        s = Xg @ ref.guest_coef[:-1] + ref.guest_coef[-1] + sum(
            X @ c for X, c in zip(Xhs, ref.host_coefs, strict=True))
        sv, yv = s[val], y[val]
        best = guest.validation_history[guest.best_epoch]
        p = 1 / (1 + np.exp(-sv))
        assert abs(best["auc"] - roc_auc_score(yv, sv)) < 2e-4
        assert abs(best["loss"] - log_loss(yv, p)) < 2e-4
        assert abs(best["brier"] - brier_score_loss(yv, p)) < 2e-4
        # Platt's smoothed targets as sample weights of a duplicated set
        n1, n0 = yv.sum(), len(yv) - yv.sum()
        t = np.where(yv == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))
        platt = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(
            np.concatenate([sv, sv])[:, None], np.concatenate([np.ones_like(yv),
                                                               np.zeros_like(yv)]),
            sample_weight=np.concatenate([t, 1 - t]))
        cal = guest.calibration
        assert cal is not None and cal.best_epoch == guest.best_epoch
        assert abs(cal.slope - platt.coef_[0, 0]) < 1e-3
        assert abs(cal.intercept - platt.intercept_[0]) < 1e-3
        assert cal.band_rows.sum() == len(val) and cal.band_defaults.sum() == yv.sum()
    else:
        assert guest.calibration is None


def test_pumped_objects_without_the_codec_give_the_same_weights(breast):
    """Handing the states' objects over directly (no encoding) changes nothing."""
    Xg, y, Xh = breast
    Xhs = [Xh[:, :12], Xh[:, 12:]]
    cfg = small_config(epochs=2, batch_size=128)
    val = validation_split(y, 0.2)
    start = GuestParty(G, Xg, y, cfg, ["host1", "host2"], validation_rows=val).initial_coef
    runs = [pumped_run(Xg, y, Xhs, cfg, initial_coef=start, validation_rows=val, wire=w)
            for w in (True, False)]
    (g1, h1, _, e1), (g2, h2, _, e2) = runs
    # (protocol shared, the default: equal to each share's rounding, ~2^-32 a step)
    assert e1 == e2
    np.testing.assert_allclose(g1.coef, g2.coef, atol=1e-8, rtol=0)
    for a, b in zip(h1, h2, strict=True):
        np.testing.assert_allclose(a.coef, b.coef, atol=1e-8, rtol=0)
    reveal = cfg.replace(protocol="reveal-gradients", optimizer="adam")
    runs = [pumped_run(Xg, y, Xhs, reveal, initial_coef=start, validation_rows=val, wire=w)
            for w in (True, False)]
    (g1, h1, _, e1), (g2, h2, _, e2) = runs
    assert e1 == e2 and g1.coef.tobytes() == g2.coef.tobytes()  # bit for bit
    assert [h.coef.tobytes() for h in h1] == [h.coef.tobytes() for h in h2]
