"""Attacks on resuming (protocols/specs/hetero_lr.md, "Checkpoints and resume").

The resume position travels in two setup messages: each host's ``HostHello`` offers the
position of its newest checkpoint (``checkpoint_epochs``, ``checkpoint_batches``) and the
guest's ``TrainSetup`` names the one every party resumes from (``resume_epochs``,
``resume_batches``) and how often to checkpoint within an epoch (``checkpoint_every``). The
claims attacked here:

* a deviating guest cannot make a host load, or delete, anything but the checkpoint the host
  itself offered (or an older one it holds): another position is refused before any file is
  read or removed;
* a deviating host cannot make the guest resume from a position the guest holds no
  checkpoint of, nor from a batch beyond an epoch's end;
* an absurd checkpoint interval from the guest is refused by the host;
* reusing a kept intersection (protocols/specs/psi.md): a host hands its kept rows to the job
  only after echoing the guest's digest of the very intersection it kept, so a guest that
  guesses, or sends PsiReuse unasked, learns "not this one" and is refused; a host cannot
  make the guest take its rows by echoing a digest the guest did not offer.

The host is the real driver (``run_host_training``) over the in-memory transport with a real
checkpoint folder; the test plays the deviating guest.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from vfl.checkpoint import MAX_EVERY_BATCHES, CheckpointStore
from vfl.exceptions import RemoteProtocolError
from vfl.lr import run_host_training
from vfl.lr.guest import GuestParty
from vfl.lr.messages import HostHello
from vfl.transport import InMemoryNetwork

from ..lr.trio import run_trio, small_config, standardize

JOB = "job-resume-attack"
PASS = b"a passphrase for this test only"


@pytest.fixture(scope="module")
def data(breast):
    Xg, y, Xh = breast
    return standardize(Xg), y, standardize(Xh)


def _stores(root: Path, resume: bool) -> dict[str, CheckpointStore]:
    return {"guest": CheckpointStore(root / "guest", party="guest", role="guest", job=JOB,
                                     resume=resume, every_batches=1),
            "host1": CheckpointStore(root / "host1", party="host1", role="host", job=JOB,
                                     resume=resume),
            "arbiter": CheckpointStore(root / "arbiter", party="arbiter", role="arbiter",
                                       job=JOB, passphrase=PASS, resume=resume)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A job of 2 epochs checkpointed after every batch: the host holds (2, 0) and (1, 3)."""
    Xg, y, Xh = data
    root = tmp_path_factory.mktemp("resume-attack")
    cfg = small_config(epochs=2)
    run_trio(Xg, y, [Xh], cfg, checkpoints=_stores(root, resume=False))
    return root, cfg


def _host_against(root: Path, Xh, forge) -> tuple[HostHello, BaseException | None, dict]:
    """Run the real host (resuming) against a guest that answers its HostHello with
    ``forge(hello)``; return the hello, the host's error and the host's files before/after."""
    store = CheckpointStore(root / "host1", party="host1", role="host", job=JOB, resume=True)
    before = {p.name: p.read_bytes() for p in (root / "host1").iterdir()}
    net = InMemoryNetwork(["guest", "host1", "arbiter"], timeout=20)
    errors: list[BaseException] = []

    def host() -> None:
        try:
            run_host_training(net.endpoint("host1"), "host1", Xh, guest="guest",
                              arbiter="arbiter", allow_insecure_key_size=True, checkpoints=store)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=host)
    t.start()
    guest = net.endpoint("guest")
    hello = guest.recv("host1", HostHello)
    guest.send("host1", forge(hello))
    t.join(timeout=60)
    assert not t.is_alive()
    after = {p.name: p.read_bytes() for p in (root / "host1").iterdir()}
    assert after == before  # nothing read into the job, nothing deleted or rewritten
    return hello, (errors[0] if errors else None), before


def _setup(data, cfg, resume: tuple[int, int], every: int = 0):
    Xg, y, Xh = data
    guest = GuestParty("guest", Xg, y, cfg, ["host1"])
    real = guest.setup({"host1": HostHello(len(y), Xh.shape[1])})
    return dataclasses.replace(real, resume_epochs=resume[0], resume_batches=resume[1],
                               checkpoint_every=every)


@pytest.mark.parametrize("asked", [(1, 2), (2, 1), (3, 0), (0, 1)])
def test_a_guest_cannot_make_a_host_resume_from_a_position_it_did_not_offer(
        finished, data, asked):
    """The host offered its newest checkpoint, (2, 0); the guest names a later position, or
    one the host holds no file of: refused, naming the guest, before any file is touched."""
    root, cfg = finished
    hello, error, files = _host_against(root, data[2], lambda h: _setup(data, cfg, asked))
    assert (hello.checkpoint_epochs, hello.checkpoint_batches) == (2, 0)
    assert {"host1.e2.ckpt", "host1.e1.b3.ckpt"} <= set(files)
    assert isinstance(error, RemoteProtocolError), error
    assert "TrainSetup from guest resumes from" in str(error)


def test_a_guest_cannot_ask_a_host_for_an_absurd_checkpoint_interval(finished, data):
    root, cfg = finished
    _, error, _ = _host_against(root, data[2],
                                lambda h: _setup(data, cfg, (2, 0), MAX_EVERY_BATCHES + 1))
    assert isinstance(error, RemoteProtocolError) and "checkpoint every" in str(error)


def test_a_host_cannot_make_the_guest_resume_where_the_guest_holds_nothing(data):
    """The guest holds (5, 0) and (4, 2); it resumes from the newest position it holds at or
    before the host's offer, and refuses an offer before every position it holds; a batch
    past an epoch's end is refused outright."""
    Xg, y, Xh = data
    guest = GuestParty("guest", Xg, y, small_config(epochs=6), ["host1"])
    guest.checkpoint_at, guest.checkpoints_held = (5, 0), [(5, 0), (4, 2)]
    n_batches = len(guest.batches(0))

    def offer(k: int, j: int):
        return guest.setup({"host1": HostHello(len(y), Xh.shape[1], k, j)})

    def at(k: int, j: int) -> tuple[int, int]:
        setup = offer(k, j)
        return setup.resume_epochs, setup.resume_batches

    assert at(4, 2) == (4, 2)
    assert at(5, 1) == (5, 0)  # the host is ahead
    assert at(0, 0) == (0, 0)  # it holds none: a fresh start
    # the host's newest is (4, 3) (another interval): the newest the guest holds before it,
    # which the host must then hold itself (it checks)
    assert at(4, 3) == (4, 2)
    for bad in [(4, 1), (3, 0)]:
        with pytest.raises(RemoteProtocolError, match="host1 offers to resume from epoch"):
            offer(*bad)
    with pytest.raises(RemoteProtocolError, match=f"an epoch of this job has {n_batches}"):
        offer(5, n_batches)


# ------------------------------------------------------------ reusing the kept intersection
# protocols/specs/psi.md, "Reusing the intersection": a host hands its kept rows to the job
# only after it echoed the guest's digest of the very intersection it kept itself; a guest
# takes its kept rows only if every host echoed its own digest.

def _kept_host(tmp_path: Path, ids: list[str], guest_ids: list[str]):
    """A host that kept the intersection of ``guest_ids`` and ``ids`` (resuming)."""
    from vfl.psi.cache import intersection_digest

    store = CheckpointStore(tmp_path / "host1", party="host1", role="host", job=JOB,
                            resume=True)
    shared = sorted(set(ids) & set(guest_ids))
    rows = np.asarray([ids.index(i) for i in shared], dtype=np.int64)
    store.keep_psi("train", ids, rows, ["guest"])
    return store, intersection_digest(JOB, ids, rows)


def _host_psi(net, ids, offer):
    from vfl.psi import run_psi_host

    result: dict[str, object] = {}

    def host() -> None:
        try:
            result["rows"] = run_psi_host(net.endpoint("host1"), ids, "guest", reuse=offer)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result["error"] = exc

    t = threading.Thread(target=host)
    t.start()
    return t, result


IDS = [f"C{i:04d}" for i in range(200)]
GUEST_IDS = [f"C{i:04d}" for i in range(100, 300)]


@pytest.mark.parametrize("digest", ["guessed", "none"])
def test_a_guest_cannot_make_a_host_hand_over_rows_it_did_not_echo(tmp_path, digest):
    """The guest offers a digest of another candidate intersection (or none), is not echoed,
    and sends PsiReuse anyway: the host refuses it; the only answer the guest got was the
    empty echo ("not the intersection I kept")."""
    from vfl.psi.cache import intersection_digest
    from vfl.psi.messages import PsiHello, PsiReuse

    store, real = _kept_host(tmp_path, IDS, GUEST_IDS)
    offer = store.kept_psi("train", IDS, ["guest"])
    guess = intersection_digest(JOB, IDS, np.arange(100, 150, dtype=np.int64))
    sent = guess if digest == "guessed" else b""
    net = InMemoryNetwork(["guest", "host1"], timeout=10)
    t, result = _host_psi(net, IDS, offer)
    guest = net.endpoint("guest")
    guest.send("host1", PsiHello(len(GUEST_IDS), sent))
    assert guest.recv("host1", PsiHello).reuse == b""  # no echo: nothing else learned
    guest.send("host1", PsiReuse(guess if digest == "guessed" else real))
    t.join(timeout=30)
    assert "rows" not in result and isinstance(result["error"], RemoteProtocolError)
    assert "Received psi.Reuse/1 from guest" in str(result["error"])
    assert offer is not None and not offer.used


def test_a_guest_cannot_offer_a_malformed_digest(tmp_path):
    from vfl.psi.messages import PsiHello

    store, _ = _kept_host(tmp_path, IDS, GUEST_IDS)
    net = InMemoryNetwork(["guest", "host1"], timeout=10)
    t, result = _host_psi(net, IDS, store.kept_psi("train", IDS, ["guest"]))
    net.endpoint("guest").send("host1", PsiHello(len(GUEST_IDS), b"\x00" * 5))
    t.join(timeout=30)
    assert isinstance(result["error"], RemoteProtocolError)
    assert "digest of 5 bytes" in str(result["error"])


@pytest.mark.parametrize("echo", ["other", "unasked"])
def test_a_host_cannot_make_the_guest_take_rows_by_echoing(tmp_path, echo):
    """A host echoing another digest than the guest's, or one the guest never offered: the
    guest refuses before any point is blinded."""
    from vfl.psi import run_psi_guest
    from vfl.psi.cache import ReuseOffer
    from vfl.psi.messages import PsiHello

    offer = ReuseOffer(b"\x11" * 32, np.arange(10, dtype=np.int64)) if echo == "other" else None
    net = InMemoryNetwork(["guest", "host1"], timeout=10)
    host = net.endpoint("host1")
    host.send("guest", PsiHello(len(IDS), b"\x22" * 32))
    with pytest.raises(RemoteProtocolError, match="PsiHello from host1 echoes"):
        run_psi_guest(net.endpoint("guest"), GUEST_IDS, ["host1"], reuse=offer)
    assert offer is None or not offer.used
