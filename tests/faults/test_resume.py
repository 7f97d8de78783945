"""Issue 13, items 1-2: checkpoints after every epoch, and a resumed run that ends with the
weights of the run that was never interrupted, bit for bit.

Guest, host and arbiter run the real drivers in threads over the in-memory transport, each
with its own checkpoint folder (as each would on its own machine). "A party died before it
wrote epoch k" is made by removing its newest checkpoint file: the parties then agree on the
epoch every one of them holds.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from vfl.checkpoint import CheckpointError, CheckpointStore
from vfl.exceptions import ConfigError
from vfl.model import load_model_part
from vfl.progress import ProgressHook

from ..lr.trio import run_trio, small_config, standardize

PASS = b"correct horse battery staple"
JOB = "job-resume"


def _stores(root: Path, *, resume: bool, job: str = JOB, passphrase: bytes = PASS
            ) -> dict[str, CheckpointStore]:
    return {
        "guest": CheckpointStore(root / "guest", party="guest", role="guest", job=job,
                                 resume=resume),
        "host1": CheckpointStore(root / "host1", party="host1", role="host", job=job,
                                 resume=resume),
        "arbiter": CheckpointStore(root / "arbiter", party="arbiter", role="arbiter", job=job,
                                   passphrase=passphrase, resume=resume),
    }


def _run(Xg, y, Xh, config, stores, progress=None, **guest_kwargs):
    run = run_trio(Xg, y, [Xh], config, checkpoints=stores, progress=progress,
                   guest_kwargs=guest_kwargs)
    guest, host, arbiter = run.guest, run.hosts[0], run.arbiter
    return {"guest": guest.coef.copy(), "host": host.coef.copy(), "epochs": run.epochs,
            "loss": list(guest.loss_history), "best": guest.best_epoch,
            "validation": list(guest.validation_history), "model_id": guest.model_id,
            "calibration": guest.calibration, "arbiter_losses": list(arbiter.loss_history),
            "primes": (int(arbiter.private_key.p), int(arbiter.private_key.q))}


#: Protocol shared (the default): each side rounds its own share of the weights, and the
#: split depends on the secret masks of the run, so a resumed run equals the uninterrupted
#: one to ~2^-32 a step, not bit for bit (hetero_lr.md, "Secret-shared training").
WEIGHTS_TOL = 1e-8


def _same(a, b):
    np.testing.assert_allclose(a, b, atol=WEIGHTS_TOL, rtol=0)


def _same_history(a, b):
    """Losses (grid 2^-32) to 1e-7; validation figures (4 decimals) to one
    unit of their last digit."""
    # (the losses move ~10x the weights' rounding: measured up to 4e-8)
    np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-7, rtol=0)
    np.testing.assert_allclose(a["arbiter_losses"], b["arbiter_losses"], atol=1e-7, rtol=0)
    assert len(a["validation"]) == len(b["validation"])
    for x, y in zip(a["validation"], b["validation"], strict=True):
        assert x.keys() == y.keys() and x["epoch"] == y["epoch"]
        assert all(abs(x[k] - y[k]) <= 1.01e-4 for k in x), (x, y)


def _same_calibration(a, b):
    """The Platt fit and the figures of the raw scores; the out-of-sample ("after") figures
    depend on the secret order the guest shuffles the validation scores into, new every run."""
    if a is None or b is None:
        assert a is b
        return
    assert a.best_epoch == b.best_epoch
    assert abs(a.slope - b.slope) <= 2e-6 and abs(a.intercept - b.intercept) <= 2e-6
    for name in ("before", "band_rows", "band_defaults", "band_pd_before"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1.01e-4, rtol=0,
                                   err_msg=name)


@pytest.fixture(scope="module")
def data(breast):
    Xg, y, Xh = breast
    return standardize(Xg), y, standardize(Xh)


@pytest.mark.parametrize(("mode", "validation"), [("accurate", 0.2), ("taylor", 0.0)])
def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path, data, mode,
                                                                 validation):
    Xg, y, Xh = data
    cfg = small_config(epochs=4, mode=mode, validation_fraction=validation, curvature_every=2)
    clean = _run(Xg, y, Xh, cfg, _stores(tmp_path / "clean", resume=False))
    assert clean["epochs"] == 4
    held = {p: sorted(k for k, _ in s.positions_held()) for p, s in _stores(tmp_path / "clean",
                                                           resume=True).items()}
    assert held == {"guest": [3, 4], "host1": [3, 4], "arbiter": [3, 4]}  # the two newest
    for name in ("guest", "host1", "arbiter"):  # 0600 files in a 0700 folder
        folder = tmp_path / "clean" / name
        assert folder.stat().st_mode & 0o077 == 0
        assert all(f.stat().st_mode & 0o077 == 0 for f in folder.iterdir())
    # the arbiter's key pair is sealed: its primes appear nowhere in its files in the clear
    arbiter_bytes = b"".join(f.read_bytes() for f in (tmp_path / "clean/arbiter").iterdir())
    for prime in clean["primes"]:
        assert prime.to_bytes((prime.bit_length() + 7) // 8, "big") not in arbiter_bytes
    assert b"checkpoint.Arbiter/2" not in arbiter_bytes  # the sealed state's type name too

    # the host died before it wrote epoch 4: every party resumes from epoch 3
    (tmp_path / "clean/host1/host1.e4.ckpt").unlink()
    resumed = _run(Xg, y, Xh, cfg, _stores(tmp_path / "clean", resume=True))
    assert resumed["model_id"] == clean["model_id"]
    _same(resumed["guest"], clean["guest"])
    _same(resumed["host"], clean["host"])
    _same_history(resumed, clean)
    assert resumed["best"] == clean["best"]
    _same_calibration(resumed["calibration"], clean["calibration"])
    assert resumed["primes"] == clean["primes"]  # the arbiter restored its key pair


def test_a_job_resumed_after_its_last_epoch_only_finishes(tmp_path, data):
    """Every party holds the epoch that stopped the run: only the end steps run again."""
    Xg, y, Xh = data
    cfg = small_config(epochs=2, validation_fraction=0.2)
    clean = _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=False))
    again = _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=True))
    assert again["epochs"] == 2
    _same(again["guest"], clean["guest"])
    _same(again["host"], clean["host"])
    _same_calibration(again["calibration"], clean["calibration"])


def test_a_run_without_resume_starts_afresh_and_clears_old_checkpoints_at_its_first(
        tmp_path, data):
    Xg, y, Xh = data
    _run(Xg, y, Xh, small_config(epochs=3), _stores(tmp_path, resume=False))
    stores = _stores(tmp_path, resume=False)
    assert all(s.positions_held() == [(3, 0), (2, 0)] for s in stores.values())  # nothing deleted yet
    # a file half-written when the old run was killed, and one of another party's
    stale = tmp_path / "guest" / ".guest.e4.ckpt.k3j2_x.tmp"
    other = tmp_path / "guest" / ".host1.e4.ckpt.k3j2_x.tmp"
    stale.write_bytes(b"half")
    other.write_bytes(b"not mine")
    # a squares file whose state file was never written (killed between the two writes)
    orphan = tmp_path / "guest" / "guest.e9.b3.squares"
    orphan.write_bytes(b"ciphertexts")
    _run(Xg, y, Xh, small_config(epochs=2), stores)
    assert not orphan.exists()
    # the new run's first checkpoint removed the old run's: its epochs do not mix in
    assert all(s.positions_held() == [(2, 0), (1, 0)] for s in stores.values())
    assert not stale.exists() and other.exists()


def test_a_checkpoint_of_other_data_is_refused_naming_the_difference(tmp_path, data):
    Xg, y, Xh = data
    _run(Xg, y, Xh, small_config(epochs=2), _stores(tmp_path, resume=False))
    changed = Xh.copy()
    changed[0, 0] += 1.0
    with pytest.raises(CheckpointError, match="other training data than host1"):
        _run(Xg, y, changed, small_config(epochs=2), _stores(tmp_path, resume=True))


def test_a_checkpoint_of_another_job_is_refused(tmp_path, data):
    Xg, y, Xh = data
    _run(Xg, y, Xh, small_config(epochs=2), _stores(tmp_path, resume=False))
    with pytest.raises(CheckpointError, match="belongs to job 'job-resume'"):
        _stores(tmp_path, resume=True, job="another-job")["guest"].newest(b"")


def test_the_arbiter_needs_the_passphrase_that_sealed_its_key(tmp_path, data):
    Xg, y, Xh = data
    _run(Xg, y, Xh, small_config(epochs=2), _stores(tmp_path, resume=False))
    (tmp_path / "guest/guest.e2.ckpt").unlink()  # resume from epoch 1: the arbiter unseals
    with pytest.raises(CheckpointError, match="does not open with this passphrase"):
        _run(Xg, y, Xh, small_config(epochs=2),
             _stores(tmp_path, resume=True, passphrase=b"not the passphrase at all"))


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, data, monkeypatch):
    """The write of epoch 2 fails (ENOSPC): the job stops naming it, epoch 1 stays usable."""
    Xg, y, Xh = data
    import vfl.checkpoint as ck

    real = ck._write_atomic
    calls = {"n": 0}

    def full_on_second_host_write(path, chunks):
        if path.name == "host1.e2.ckpt":
            calls["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, chunks)

    monkeypatch.setattr(ck, "_write_atomic", full_on_second_host_write)
    with pytest.raises(CheckpointError, match="could not write its checkpoint of epoch 2"):
        _run(Xg, y, Xh, small_config(epochs=3), _stores(tmp_path, resume=False))
    assert calls["n"] == 1
    store = _stores(tmp_path, resume=True)["host1"]
    assert store.positions_held() == [(1, 0)]
    assert store.load((1, 0)).epochs_done == 1
    assert not [p for p in (tmp_path / "host1").iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_checkpoint_file_is_refused_with_a_checkpoint_error(tmp_path, data):
    """Flipped bytes, cut files, appended bytes: the reader (the message codec, bounded and
    typed) refuses each with a CheckpointError naming the file, or reads a valid state."""
    Xg, y, Xh = data
    _run(Xg, y, Xh, small_config(epochs=1, validation_fraction=0.2),
         _stores(tmp_path, resume=False))
    path = tmp_path / "guest" / "guest.e1.ckpt"
    good = path.read_bytes()
    store = _stores(tmp_path, resume=True)["guest"]
    rng = np.random.default_rng(13)  # test mutations only, not key material
    refused = 0
    for i in range(150):
        b = bytearray(good)
        kind = i % 3
        if kind == 0:
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
                b[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del b[int(rng.integers(0, len(b))):]
        else:
            b += bytes(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8))
        path.write_bytes(bytes(b))
        try:
            store.load((1, 0))
        except CheckpointError as exc:
            refused += 1
            assert "guest" in str(exc)
    assert refused >= 100  # most damage is caught; a flip inside a float may still decode
    path.write_bytes(good)
    assert store.load((1, 0)).epochs_done == 1


def test_a_host_without_checkpoints_stops_a_resume_and_nothing_is_deleted(tmp_path, data):
    """The host lost its folder (or was started without --resume): the job would start over,
    so every party that holds checkpoints refuses, and every checkpoint stays."""
    Xg, y, Xh = data
    cfg = small_config(epochs=3, validation_fraction=0.2)
    _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=False))
    for f in (tmp_path / "host1").iterdir():
        f.unlink()
    with pytest.raises(CheckpointError, match="job starts over"):
        _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=True))
    stores = _stores(tmp_path, resume=True)
    assert stores["guest"].positions_held() == stores["arbiter"].positions_held() == [(3, 0),
                                                                                 (2, 0)]


def test_the_guest_refuses_a_resume_offer_it_cannot_serve(data):
    """A host offering an epoch the guest holds no checkpoint of (a folder restored from
    elsewhere, or a deviating host): refused before anything is loaded or deleted."""
    from vfl.exceptions import RemoteProtocolError
    from vfl.lr.guest import GuestParty
    from vfl.lr.messages import HostHello

    Xg, y, Xh = data
    guest = GuestParty("guest", Xg, y, small_config(epochs=6), ["host1"])
    guest.checkpoint_at, guest.checkpoints_held = (5, 0), [(5, 0), (4, 0)]
    assert guest.setup({"host1": HostHello(len(y), Xh.shape[1], 4)}).resume_epochs == 4
    assert guest.setup({"host1": HostHello(len(y), Xh.shape[1], 6)}).resume_epochs == 5
    with pytest.raises(RemoteProtocolError, match="host1 offers to resume from epoch 2"):
        guest.setup({"host1": HostHello(len(y), Xh.shape[1], 2)})


def test_a_sealed_arbiter_state_moved_to_another_epoch_is_refused(tmp_path, data):
    """The sealed state carries its epoch and decision: pasting epoch 3's into epoch 4's file
    (the header alone is not sealed) is caught when the arbiter opens it."""
    import dataclasses

    from vfl.codec import Envelope, decode_envelope, encode_envelope

    Xg, y, Xh = data
    cfg = small_config(epochs=4)
    _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=False))
    folder = tmp_path / "arbiter"
    e3 = decode_envelope((folder / "arbiter.e3.ckpt").read_bytes()).body
    env4 = decode_envelope((folder / "arbiter.e4.ckpt").read_bytes())
    swapped = dataclasses.replace(env4.body, sealed=e3.sealed)
    (folder / "arbiter.e4.ckpt").write_bytes(encode_envelope(
        Envelope(env4.job, env4.seq, env4.sender, env4.receiver, swapped)))
    with pytest.raises(CheckpointError, match="does not match its sealed state"):
        _run(Xg, y, Xh, cfg, _stores(tmp_path, resume=True))


def test_checkpoint_folders_and_names_are_checked(tmp_path):
    open_folder = tmp_path / "shared"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    with pytest.raises(Exception, match="chmod 700"):
        CheckpointStore(open_folder, party="guest", role="guest", job=JOB)
    with pytest.raises(Exception, match="cannot name checkpoint files"):
        CheckpointStore(tmp_path / "x", party="../guest", role="guest", job=JOB)


class _StopAfter(ProgressHook):
    """Stops the fit (as a crash would) once ``epochs`` epochs are done."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch(self, epoch: int, loss: float | None) -> None:
        if epoch + 1 == self.epochs:
            raise RuntimeError("the machine went down")


@pytest.mark.parametrize("every", [0, 2])
def test_a_one_machine_fit_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, every):
    from vfl.checkpoint import PASSPHRASE_ENV
    from vfl.lr.config import TrainConfig
    from vfl.pipeline import fit_files
    from vfl.synthetic import make_two_banks

    g, h = make_two_banks(700, 0.8, seed=5)
    g.to_csv(tmp_path / "a.csv", index=False)
    h.to_csv(tmp_path / "b.csv", index=False)
    config = TrainConfig(epochs=4, batch_size=128, key_bits=512, allow_insecure_key_size=True,
                         validation_fraction=0.0)
    kw = {"id_column": "customer_id", "label": "default", "config": config,
          "html_report": False}
    ck = tmp_path / "ck"
    with pytest.raises(ConfigError, match=PASSPHRASE_ENV):  # the arbiter's key must be sealed
        fit_files(tmp_path / "a.csv", [tmp_path / "b.csv"], out_dir=tmp_path / "m0",
                  checkpoints=ck, **kw)
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase for this test only")
    with pytest.raises(Exception, match="the machine went down|stopped after"):
        fit_files(tmp_path / "a.csv", [tmp_path / "b.csv"], out_dir=tmp_path / "m1",
                  checkpoints=ck, progress=_StopAt(2, 1) if every else _StopAfter(2),
                  checkpoint_every=every, **kw)
    held = sorted(p.name for p in ck.glob("*.ckpt"))
    if every:  # stopped after batch 2 of epoch 3: the checkpoint after its 2nd batch is there
        # (the host's too, unless the stop reached it before its answer from the arbiter; the
        # arbiter writes within epochs too, its shares moving every batch)
        assert {"arbiter.e2.ckpt", "arbiter.e2.b2.ckpt", "guest.e2.b2.ckpt", "guest.e2.ckpt",
                "host1.e2.ckpt"} <= set(held) <= {"arbiter.e2.ckpt", "arbiter.e2.b2.ckpt",
                                                 "guest.e2.b2.ckpt", "guest.e2.ckpt",
                                                 "host1.e2.b2.ckpt", "host1.e1.ckpt",
                                                 "host1.e2.ckpt"}, held
    else:
        assert held == ["arbiter.e1.ckpt", "arbiter.e2.ckpt", "guest.e1.ckpt", "guest.e2.ckpt",
                        "host1.e1.ckpt", "host1.e2.ckpt"], held
    resumed = fit_files(tmp_path / "a.csv", [tmp_path / "b.csv"], out_dir=tmp_path / "m1",
                        checkpoints=ck, resume=True, checkpoint_every=every, **kw)
    assert resumed.report["epochs_run"] == 4
    assert resumed.report["psi_reused"] is True  # the kept intersection: no PSI run again
    part = load_model_part(tmp_path / "m1" / "guest.json")
    clean = fit_files(tmp_path / "a.csv", [tmp_path / "b.csv"], out_dir=tmp_path / "m2",
                      coef_init=np.asarray(part.training["coef_init"]),
                      intercept_init=part.training["intercept_init"], **kw)
    assert clean.report["psi_reused"] is False
    _same(resumed.guest.coef_, clean.guest.coef_)
    assert abs(resumed.guest.intercept_ - clean.guest.intercept_) <= WEIGHTS_TOL
    _same(resumed.hosts[0].coef_, clean.hosts[0].coef_)


def test_vfl_fit_resume_needs_the_checkpoint_folder(tmp_path):
    from click.testing import CliRunner

    from vfl.cli import main

    (tmp_path / "a.csv").write_text("id,y,x\n1,0,0.5\n")
    (tmp_path / "b.csv").write_text("id,z\n1,0.1\n")
    result = CliRunner().invoke(main, ["fit", "--guest", str(tmp_path / "a.csv"), "--host",
                                       str(tmp_path / "b.csv"), "--id", "id", "--label", "y",
                                       "--out", str(tmp_path / "m"), "--resume"])
    assert result.exit_code == 2 and "--checkpoint-dir" in result.output, result.output
    result = CliRunner().invoke(main, ["fit", "--guest", str(tmp_path / "a.csv"), "--host",
                                       str(tmp_path / "b.csv"), "--id", "id", "--label", "y",
                                       "--out", str(tmp_path / "m"),
                                       "--checkpoint-every-batches", "10"])
    assert result.exit_code == 2 and "needs --checkpoint-dir" in result.output, result.output


class _StopAt(ProgressHook):
    """Fails the party's driver once batch ``batch`` (0-based) of ``epoch`` is done: a crash
    between two checkpoints within an epoch."""

    def __init__(self, epoch: int = -1, batch: int = -1) -> None:
        self.at = (epoch, batch)
        self.seen: list[tuple[int, int]] = []

    def on_resume(self, epochs_done: int, batches_done: int) -> None:
        self.seen.append((-epochs_done, -batches_done))  # where the run says it resumes

    def on_batch(self, epoch: int, batch: int, n_batches: int) -> None:
        self.seen.append((epoch, batch))
        if (epoch, batch) == self.at:
            raise RuntimeError(f"stopped after epoch {epoch} batch {batch}")


def _run_every(Xg, y, Xh, config, stores, *, every, stop=None, who="host1", start=None):
    """_run with checkpoints every ``every`` batches; ``stop``: (epoch, batch) at which
    party ``who`` fails; ``start``: the guest's secret start and validation rows to replay."""
    init, rows = start if start is not None else (None, None)
    stores["guest"].every_batches = every
    hook = {who: _StopAt(*stop)} if stop else {"guest": _StopAt()}
    out = _run(Xg, y, Xh, config, stores, hook, initial_coef=init, validation_rows=rows)
    out["batches"] = hook["guest"].seen if "guest" in hook else None
    return out


@pytest.mark.parametrize(("mode", "validation", "stop", "who"), [
    ("accurate", 0.2, (1, 1), "host1"),  # mid-epoch, the accurate mode's squares
    ("taylor", 0.0, (0, 0), "guest"),  # within the first epoch: the arbiter's key
])
def test_a_run_resumed_within_an_epoch_ends_with_the_uninterrupted_weights(
        tmp_path, data, mode, validation, stop, who):
    """Checkpoints every batch (TrainSetup.checkpoint_every): a party fails inside an epoch,
    every party resumes from the last batch all of them hold, and the run ends with the
    weights, losses and validation figures of the run that was never stopped."""
    Xg, y, Xh = data
    cfg = small_config(epochs=3, mode=mode, validation_fraction=validation, curvature_every=2)
    with pytest.raises(RuntimeError, match="stopped after"):
        _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "cut", resume=False), every=1, stop=stop,
                   who=who)
    stores = _stores(tmp_path / "cut", resume=True)
    held = {p: s.positions_held() for p, s in stores.items()}
    state = stores["guest"].load(held["guest"][0]).guest
    clean = _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "clean", resume=False), every=1,
                       start=(state.initial_coef, state.validation_rows.tolist()))
    # the clean run kept its two newest positions: the end of the last epoch and the batch
    # before it
    positions = _stores(tmp_path / "clean", resume=True)["host1"].positions_held()
    assert positions[0] == (3, 0) and positions[1][0] == 2 and positions[1][1] > 0

    # the failing party wrote the position after its batch; the other one that or the next
    at = min(held["guest"][0], held["host1"][0])
    assert at[0] == stop[0] and at[1] in (stop[1] + 1, stop[1] + 2), held
    assert at in held["guest"] and at in held["host1"], held
    # the arbiter's shares move every batch: it writes at the interval too, before the last
    # host hears of the batch, so it holds the position every party resumes from
    assert at in held["arbiter"], held
    resumed = _run_every(Xg, y, Xh, cfg, stores, every=1)
    assert resumed["epochs"] == 3
    # it says where it resumes, and the first batch run is the one after the checkpoint
    assert resumed["batches"][:2] == [(-at[0], -at[1]), at]
    _same(resumed["guest"], clean["guest"])
    _same(resumed["host"], clean["host"])
    _same_history(resumed, clean)


def test_the_interval_of_checkpoints_may_change_on_resume(tmp_path, data):
    """checkpoint_every is left out of the setup digest: a job checkpointed every epoch
    resumes under an interval of batches (and the other way round)."""
    Xg, y, Xh = data
    cfg = small_config(epochs=3)
    with pytest.raises(RuntimeError, match="stopped after"):
        _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "cut", resume=False), every=0,
                   stop=(1, 2), who="guest")
    state = _stores(tmp_path / "cut", resume=True)["guest"].load((1, 0)).guest
    clean = _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "clean", resume=False), every=0,
                       start=(state.initial_coef, state.validation_rows.tolist()))
    resumed = _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "cut", resume=True), every=2)
    _same(resumed["guest"], clean["guest"])
    _same(resumed["host"], clean["host"])


def test_a_start_over_refused_within_the_first_epoch_keeps_the_arbiters_key(tmp_path, data):
    """Stopped within epoch 1 (checkpoints every batch); the host is then started without
    --resume, so the job would start over and the guest refuses. The arbiter writes its key
    only once every party is past that check, so its key checkpoint survives, and the next
    run (every party with --resume) resumes within epoch 1 to the uninterrupted weights."""
    Xg, y, Xh = data
    cfg = small_config(epochs=2)
    with pytest.raises(RuntimeError, match="stopped after"):
        _run_every(Xg, y, Xh, cfg, _stores(tmp_path, resume=False), every=1, stop=(0, 1),
                   who="guest")
    # (the arbiter's shares move every batch, so besides its key it writes the batches too)
    kept = {f.name: f.read_bytes() for f in (tmp_path / "arbiter").glob("arbiter.e0*.ckpt")}
    assert kept, "the arbiter wrote no checkpoint within epoch 1"
    forgot = _stores(tmp_path, resume=True)
    forgot["host1"] = CheckpointStore(tmp_path / "host1", party="host1", role="host", job=JOB)
    with pytest.raises(CheckpointError, match="job starts over"):
        _run_every(Xg, y, Xh, cfg, forgot, every=1)
    # not replaced by a new key pair, nor deleted
    assert {f.name: f.read_bytes() for f in (tmp_path / "arbiter").glob("arbiter.e0*.ckpt")
            } == kept
    stores = _stores(tmp_path, resume=True)
    state = stores["guest"].load(stores["guest"].positions_held()[0]).guest
    resumed = _run_every(Xg, y, Xh, cfg, stores, every=1)
    marker = resumed["batches"][0]  # on_resume(0, j): within epoch 1, after batch j
    assert marker[0] == 0 and marker[1] < 0, marker
    clean = _run_every(Xg, y, Xh, cfg, _stores(tmp_path / "clean", resume=False), every=1,
                       start=(state.initial_coef, state.validation_rows.tolist()))
    _same(resumed["guest"], clean["guest"])
    _same(resumed["host"], clean["host"])
