"""PSI set-size bounds: a dictionary attack through PSI is capped at the victim's limit.

PSI answers "which of these IDs do you hold?" for every ID a party blinds, so a
party that blinds a dictionary of guessed phone numbers or national IDs learns
which of them its peer holds. These tests run that attacker's real
computation (real blinding, real messages over a real channel) against the
real PSI drivers, and show that each side now (a) refuses an announced set
above its own ``max_psi_set_size`` before it receives or blinds any point,
(b) refuses any message with more points than announced, before blinding,
and (c) still computes the exact intersection, in the same common order,
on the honest path. What remains (``protocols/specs/psi.md``): up to the
victim's limit of guesses per run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from vfl.exceptions import RemoteProtocolError, TransportError
from vfl.policy import DEFAULT_POLICY
from vfl.psi import PsiClient, PsiServer, run_psi_guest, run_psi_host
from vfl.psi.ecdh import BlindingKey
from vfl.psi.messages import PsiHello, PsiRequest, PsiResponse, PsiResult
from vfl.transport import InMemoryNetwork

LIMIT = 1000
POLICY = DEFAULT_POLICY.replace(max_psi_set_size=LIMIT)


def _ids(prefix: str, lo: int, hi: int) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(lo, hi)]


@pytest.fixture
def blinding_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Every blinding operation, as (thread name, what, number of points)."""
    log: list[tuple[str, str, int]] = []
    blind, blind_ids = BlindingKey.blind, BlindingKey.blind_ids

    def spy_blind(self: BlindingKey, points: Any, *, peer: str = "self") -> list[bytes]:
        pts = list(points)
        log.append((threading.current_thread().name, f"blind:{peer}", len(pts)))
        return blind(self, pts, peer=peer)

    def spy_blind_ids(self: BlindingKey, ids: Any) -> list[bytes]:
        log.append((threading.current_thread().name, "blind_ids", len(ids)))
        return blind_ids(self, ids)

    monkeypatch.setattr(BlindingKey, "blind", spy_blind)
    monkeypatch.setattr(BlindingKey, "blind_ids", spy_blind_ids)
    return log


def _run(host: Callable[[Any], Any], guest: Callable[[Any], Any]) -> dict[str, Any]:
    """Run ``host`` in a thread named "host1" and ``guest`` here; results or exceptions."""
    net = InMemoryNetwork(["guest", "host1"], timeout=20)
    out: dict[str, Any] = {}

    def wrap(name: str, fn: Callable[[Any], Any]) -> None:
        ep = net.endpoint(name)
        try:
            out[name] = fn(ep)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[name] = exc
        finally:
            ep.close()  # as the runner does: the peer's pending recv fails at once

    t = threading.Thread(target=wrap, args=("host1", host), name="host1")
    t.start()
    wrap("guest", guest)
    t.join(30)
    assert not t.is_alive()
    return out


def _work(log: list[tuple[str, str, int]], thread: str) -> list[tuple[str, int]]:
    return [(what, n) for name, what, n in log if name == thread]


# --------------------------------------------------------------- guest attacks
def test_guest_announcing_above_host_limit_is_refused_before_any_blinding(blinding_log):
    host_ids = _ids("C", 0, 300)
    dictionary = _ids("C", 0, LIMIT + 1)  # the attacker's guesses, one more than allowed
    out = _run(lambda ch: run_psi_host(ch, host_ids, "guest", policy=POLICY),
               lambda ch: run_psi_guest(ch, dictionary, ["host1"]))
    err = out["host1"]
    assert isinstance(err, RemoteProtocolError)
    msg = str(err)
    assert "guest" in msg and str(LIMIT + 1) in msg and str(LIMIT) in msg
    assert _work(blinding_log, "host1") == []            # the host blinded nothing
    assert isinstance(out["guest"], TransportError)      # and never announced its own size
    assert _work(blinding_log, "MainThread") == []       # the guest never sent a point


# Excess points: 100 fit the 64 KiB envelope margin of the transport's byte cap, so the
# role's exact count refuses them; 3 x LIMIT exceed it, so a transport with
# ``limit_message_size`` refuses the message unread (and the count would otherwise).
EXCESS = [100, 3 * LIMIT]


def _refused(err: object, peer: str, count: int, announced: int) -> bool:
    """A refusal naming ``peer``: the role's point count, or the transport's byte cap."""
    msg = str(err)
    return isinstance(err, RemoteProtocolError) and peer in msg and (
        f"{count} points; expected {announced}" in msg or "accepts at most" in msg)


@pytest.mark.parametrize("excess", EXCESS)
def test_guest_sending_more_points_than_announced_is_refused_before_blinding(
        blinding_log, excess):
    host_ids = _ids("C", 0, 300)
    dictionary = _ids("C", 0, 200 + excess)  # announced as 200

    def attacker(ch):
        key = BlindingKey()
        ch.send("host1", PsiHello(200))
        ch.recv("host1", PsiHello)
        ch.send("host1", PsiRequest(b"".join(key.blind_ids(dictionary))))
        return ch.recv("host1", PsiResponse)

    out = _run(lambda ch: run_psi_host(ch, host_ids, "guest", policy=POLICY), attacker)
    assert _refused(out["host1"], "guest", 200 + excess, 200), out["host1"]
    if excess == EXCESS[0]:
        assert "300 points; expected 200" in str(out["host1"])
    assert _work(blinding_log, "host1") == []
    assert isinstance(out["guest"], TransportError)      # no response: the guest learned nothing


def test_server_role_counts_points_before_blinding_whatever_the_transport(blinding_log):
    server = PsiServer(_ids("C", 0, 300), "guest", policy=POLICY)
    server.on_hello(PsiHello(200))
    request = PsiRequest(b"".join(BlindingKey().blind_ids(_ids("C", 0, 3 * LIMIT))))
    blinding_log.clear()
    with pytest.raises(RemoteProtocolError, match=f"guest has {3 * LIMIT} points; expected 200"):
        server.on_request(request)
    assert blinding_log == []


def test_guest_sending_fewer_points_than_announced_is_refused(blinding_log):
    def attacker(ch):
        key = BlindingKey()
        ch.send("host1", PsiHello(200))
        ch.recv("host1", PsiHello)
        ch.send("host1", PsiRequest(b"".join(key.blind_ids(_ids("C", 0, 150)))))
        return ch.recv("host1", PsiResponse)

    out = _run(lambda ch: run_psi_host(ch, _ids("C", 0, 300), "guest", policy=POLICY), attacker)
    assert isinstance(out["host1"], RemoteProtocolError)
    assert _work(blinding_log, "host1") == []


def test_guest_result_larger_than_either_set_is_refused():
    host_ids = _ids("C", 0, 300)

    def attacker(ch):
        key = BlindingKey()
        ch.send("host1", PsiHello(5))
        ch.recv("host1", PsiHello)
        ch.send("host1", PsiRequest(b"".join(key.blind_ids(_ids("C", 0, 5)))))
        ch.recv("host1", PsiResponse)
        ch.send("host1", PsiResult(np.arange(6, dtype=np.int64)))  # 6 matches out of 5 IDs

    out = _run(lambda ch: run_psi_host(ch, host_ids, "guest", policy=POLICY), attacker)
    err = out["host1"]
    assert isinstance(err, RemoteProtocolError)
    assert "guest" in str(err) and "6 positions; at most 5" in str(err)


# ---------------------------------------------------------------- host attacks
def test_host_announcing_above_guest_limit_is_refused_before_any_blinding(blinding_log):
    guest_ids = _ids("C", 0, 300)
    dictionary = _ids("C", 0, LIMIT + 1)
    out = _run(lambda ch: run_psi_host(ch, dictionary, "guest"),
               lambda ch: run_psi_guest(ch, guest_ids, ["host1"], policy=POLICY))
    err = out["guest"]
    assert isinstance(err, RemoteProtocolError)
    msg = str(err)
    assert "host1" in msg and str(LIMIT + 1) in msg and str(LIMIT) in msg
    assert _work(blinding_log, "MainThread") == []       # the guest blinded (and sent) nothing
    assert isinstance(out["host1"], TransportError)
    assert _work(blinding_log, "host1") == []            # the host never got a point to blind


@pytest.mark.parametrize("excess", EXCESS)
def test_host_answering_more_points_than_announced_is_refused_before_blinding(
        blinding_log, excess):
    guest_ids = _ids("C", 0, 300)
    dictionary = _ids("C", 0, 100 + excess)  # announced as 100

    def attacker(ch):
        key = BlindingKey()
        ch.recv("guest", PsiHello)
        ch.send("guest", PsiHello(100))
        request = ch.recv("guest", PsiRequest)
        points = [request.blinded[i:i + 32] for i in range(0, len(request.blinded), 32)]
        ch.send("guest", PsiResponse(b"".join(key.blind(points, peer="guest")),
                                     b"".join(key.blind_ids(dictionary))))
        return ch.recv("guest", PsiResult)

    out = _run(attacker, lambda ch: run_psi_guest(ch, guest_ids, ["host1"], policy=POLICY))
    assert _refused(out["guest"], "host1", 100 + excess, 100), out["guest"]
    if excess == EXCESS[0]:
        assert "200 points; expected 100" in str(out["guest"])
    # The guest blinded its own request only, none of the host's points.
    assert [w for w, _ in _work(blinding_log, "MainThread")] == ["blind_ids"]
    assert isinstance(out["host1"], TransportError)      # no result: the host learned nothing


def test_client_role_counts_points_before_blinding_whatever_the_transport(blinding_log):
    client = PsiClient(_ids("C", 0, 300), ["host1"], policy=POLICY)
    client.on_hello("host1", PsiHello(100))
    client.request()
    key = BlindingKey()
    response = PsiResponse(b"".join(key.blind_ids(_ids("C", 0, 300))),
                           b"".join(key.blind_ids(_ids("C", 0, 3 * LIMIT))))
    blinding_log.clear()
    with pytest.raises(RemoteProtocolError, match=f"host1 has {3 * LIMIT} points; expected 100"):
        client.on_response("host1", response)
    assert blinding_log == []


# ------------------------------------------------ what remains, and honest runs
def test_capacity_is_exactly_the_limit_per_run():
    """At the limit the attack is the protocol: the guest learns which guesses the host holds."""
    host_ids = _ids("C", 500, 800) + _ids("X", 0, 100)
    dictionary = _ids("C", 0, LIMIT)
    out = _run(lambda ch: run_psi_host(ch, host_ids, "guest", policy=POLICY),
               lambda ch: run_psi_guest(ch, dictionary, ["host1"]))
    found = {dictionary[i] for i in out["guest"]}
    assert found == set(_ids("C", 500, 800))


def _canonical(ids: set[str]) -> list[str]:
    return sorted(ids, key=lambda x: hashlib.sha256(b"vfl/psi/v1/order\x00" + x.encode()).digest())


class _Recording:
    """A channel that records ``limit_message_size`` calls (and forwards them if supported)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.party, self.limits = inner, inner.party, []

    def send(self, to: str, message: object) -> None:
        self.inner.send(to, message)

    def recv(self, frm: str, expected: Any, timeout: float | None = None) -> Any:
        return self.inner.recv(frm, expected, timeout)

    def limit_message_size(self, peer: str, max_bytes: int) -> None:
        self.limits.append((peer, max_bytes))
        forward = getattr(self.inner, "limit_message_size", None)
        if forward is not None:
            forward(peer, max_bytes)


def test_honest_run_at_the_limit_gives_the_exact_intersection_in_the_common_order():
    guest_ids = _ids("C", 0, LIMIT)
    host_ids = _ids("C", 600, 600 + LIMIT)[::-1]
    channels: dict[str, _Recording] = {}

    def party(name, fn):
        def run(ch):
            channels[name] = _Recording(ch)
            return fn(channels[name])
        return run

    out = _run(party("host1", lambda ch: run_psi_host(ch, host_ids, "guest", policy=POLICY)),
               party("guest", lambda ch: run_psi_guest(ch, guest_ids, ["host1"], policy=POLICY)))
    g = [guest_ids[i] for i in out["guest"]]
    h = [host_ids[i] for i in out["host1"]]
    assert g == h == _canonical(set(guest_ids) & set(host_ids))
    assert len(g) == 400
    ceiling = POLICY.max_message_bytes
    # Each side caps the peer's point-carrying message at the announced size, then restores.
    assert channels["host1"].limits == [("guest", 32 * LIMIT + (1 << 16)), ("guest", ceiling)]
    assert channels["guest"].limits == [("host1", 32 * 2 * LIMIT + (1 << 16)),
                                        ("host1", ceiling)]
