"""Run guest, hosts and arbiter in threads over the in-memory transport."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vfl.lr import TrainConfig, run_arbiter, run_guest_training, run_host_training
from vfl.pipeline import run_threads
from vfl.transport import InMemoryNetwork


@dataclass
class TrioRun:
    guest: object
    hosts: list
    arbiter: object
    epochs: int
    network: InMemoryNetwork
    transcripts: dict = field(default_factory=dict)

    def reference(self, Xg, y, Xhs, config: TrainConfig):
        """The plaintext reference run from this run's secret start and validation rows."""
        from vfl.lr.reference import fit_reference

        return fit_reference(Xg, y, Xhs, config, initial_guest_coef=self.guest.initial_coef,
                             validation_rows=self.guest.validation_rows)


def run_trio(Xg, y, Xhs, config: TrainConfig, *, record=False, host_insecure=True,
             guest_kwargs=None, checkpoints=None, progress=None) -> TrioRun:
    """Train over the in-memory transport; ``guest_kwargs`` go to ``run_guest_training``
    (e.g. ``initial_coef`` and ``validation_rows`` to replay a run); ``checkpoints`` and
    ``progress``: per party name, its checkpoint store and progress hook."""
    names = [f"host{i + 1}" for i in range(len(Xhs))]
    net = InMemoryNetwork(["guest", *names, "arbiter"])
    transcripts = {p: net.endpoint(p).record_transcript() for p in net.parties} if record else {}
    stores, hooks = dict(checkpoints or {}), dict(progress or {})
    kwargs = {"checkpoints": stores.get("guest"), "progress": hooks.get("guest"),
              **(guest_kwargs or {})}
    targets = {
        "guest": lambda ch: run_guest_training(ch, "guest", Xg, y, config, hosts=names,
                                               arbiter="arbiter", **kwargs),
        "arbiter": lambda ch: run_arbiter(ch, guest="guest",
                                          allow_insecure_key_size=config.allow_insecure_key_size,
                                          checkpoints=stores.get("arbiter")),
    }
    def host_job(name, X):
        return lambda ch: run_host_training(ch, name, X, guest="guest", arbiter="arbiter",
                                            allow_insecure_key_size=host_insecure,
                                            checkpoints=stores.get(name),
                                            progress=hooks.get(name))

    for name, X in zip(names, Xhs, strict=True):
        targets[name] = host_job(name, X)
    res = run_threads(net, targets)
    guest, epochs = res["guest"]
    return TrioRun(guest, [res[n][0] for n in names], res["arbiter"], epochs, net, transcripts)


def small_config(**kw) -> TrainConfig:
    base = dict(key_bits=512, allow_insecure_key_size=True, epochs=3, batch_size=128, tol=0.0,
                validation_fraction=0.0, patience=0)
    base.update(kw)
    return TrainConfig(**base)


def standardize(X):
    return (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
