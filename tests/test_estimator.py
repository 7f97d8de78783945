"""The scikit-learn-flavoured API."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.base import clone

from vfl import (
    Arbiter,
    ConfigError,
    GuestLogisticRegression,
    HostLogisticRegression,
    InMemoryNetwork,
    NotFittedError,
)


def test_params_and_clone():
    est = GuestLogisticRegression(epochs=3, optimizer="sgd")
    assert est.get_params()["epochs"] == 3
    assert clone(est).get_params() == est.get_params()


def test_from_config_pairs_every_field_and_checks_it_once(monkeypatch):
    """One table pairs TrainConfig fields and parameters; the guest path checks a config once.

    The config is checked when made from the user's input; the estimator
    built from it reuses it, while a changed parameter makes (and checks) a
    new one. Receivers check it again as the codec rebuilds it (tests/security).
    """
    from vfl.lr.config import TrainConfig
    from vfl.lr.estimator import CONFIG_PARAMS

    cfg = TrainConfig(epochs=4, seed=9, score_frac_bits=30, class_weight="balanced",
                      validation_fraction=0.0)
    est = GuestLogisticRegression.from_config(cfg, n_jobs=1)
    assert est.get_params()["random_state"] == 9 and est.get_params()["n_jobs"] == 1
    assert set(CONFIG_PARAMS) == set(cfg.__dataclass_fields__)
    assert set(CONFIG_PARAMS.values()) <= set(est.get_params())
    checks = []
    monkeypatch.setattr(TrainConfig, "validate", lambda self: checks.append(self) or self)
    assert est._config() is cfg and checks == []
    est.set_params(epochs=5)
    assert est._config().epochs == 5 and len(checks) == 1
    assert clone(GuestLogisticRegression.from_config(cfg))._config() == cfg
    with pytest.raises(ConfigError, match="random_state"):
        GuestLogisticRegression.from_config(cfg, random_state=1)


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        GuestLogisticRegression().partial_score(np.zeros((2, 2)))


def test_bad_parameter_message():
    net = InMemoryNetwork(["guest", "host", "arbiter"])
    with pytest.raises(ConfigError, match="'learning_rate' parameter must be a float in the range"):
        GuestLogisticRegression(learning_rate=-0.1).fit(
            np.zeros((100, 2)), np.r_[np.zeros(50), np.ones(50)],
            channel=net.endpoint("guest"), hosts=["host"])


def test_fit_predict_and_parts_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    Xg = rng.normal(5, 3, size=(400, 2))  # raw, unscaled
    Xh = rng.normal(-2, 10, size=(400, 3))
    Xh[rng.random(400) < 0.05, 1] = np.nan  # missing values are imputed locally
    y = ((Xg[:, 0] - 5) / 3 + (np.nan_to_num(Xh[:, 0]) + 2) / 10 + rng.normal(size=400) > 0).astype(int)
    net = InMemoryNetwork(["guest", "host", "arbiter"])
    host = HostLogisticRegression(allow_insecure_key_size=True)
    arb = Arbiter(allow_insecure_key_size=True)

    def host_job():
        host.fit(Xh, channel=net.endpoint("host"))
        host.serve_scores(Xh, channel=net.endpoint("host"))

    threads = [threading.Thread(target=host_job),
               threading.Thread(target=arb.run, kwargs={"channel": net.endpoint("arbiter")})]
    for t in threads:
        t.start()
    guest = GuestLogisticRegression(epochs=8, batch_size=128, key_bits=512,
                                    allow_insecure_key_size=True, tol=0, patience=0)
    guest.fit(Xg, y, channel=net.endpoint("guest"), hosts=["host"])
    proba = guest.predict_proba(Xg, channel=net.endpoint("guest"))
    for t in threads:
        t.join()
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(1), 1)
    joint = guest.partial_score(Xg) + host.partial_score(Xh)
    # the Platt calibration fitted on the validation rows is applied at scoring
    cal = guest.calibration_
    assert cal is not None and cal["slope"] > 0
    np.testing.assert_allclose(proba[:, 1],
                               1 / (1 + np.exp(-(cal["slope"] * joint + cal["intercept"]))))
    assert guest.n_iter_ == 8 and len(arb.loss_history_) == 8
    assert guest.coef_.shape == (2,) and host.coef_.shape == (3,)
    assert guest.coef_[0] > 0.1 and host.coef_[0] > 0.1  # both informative features learned
    # model parts round-trip
    g2 = GuestLogisticRegression.from_part(guest.to_part("guest", ["a", "b"], {}))
    h2 = HostLogisticRegression.from_part(host.to_part("host", ["c", "d", "e"], {}))
    np.testing.assert_allclose(g2.partial_score(Xg), guest.partial_score(Xg))
    assert g2.calibration_ == {k: cal[k] for k in ("method", "slope", "intercept")}
    np.testing.assert_allclose(h2.partial_score(Xh), host.partial_score(Xh))
    assert g2.model_id_ == h2.model_id_ == guest.model_id_
