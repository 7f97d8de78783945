"""Plaintext reference run of the exact algorithm the encrypted protocol runs.

Same quantisation of features (``2**-feature_frac_bits``) and partial scores
(``2**-score_frac_bits``), same batches, same gradient and loss of the job's
mode (Taylor, or accurate with the same quantised curvature factors and the
same refreshed clipped squares), same optimiser: only the encryption is left
out. Encrypted training must match it
to floating-point rounding; tests check this. It is also the fast way to
tune hyper-parameters on data that may be pooled (e.g. synthetic data).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vfl.crypto.encoding import dequantize, quantize
from vfl.lr._party import QuantizedMatrix
from vfl.lr.config import (
    CURVATURE_CLIP,
    CURVATURE_FRAC_BITS,
    LOSS_GRID_BITS,
    WEIGHT_BITS,
    TrainConfig,
    epoch_batches,
    row_weights,
    squares_due,
    tol_applies,
    validation_split,
    weight_frac_bits,
)
from vfl.lr.guest import initial_guest_coef as initial_guest_coef_fn
from vfl.lr.host import clipped_squares
from vfl.lr.optim import Optimizer
from vfl.types import FloatArray

__all__ = ["ReferenceResult", "fit_reference"]


@dataclass
class ReferenceResult:
    """Weights per party (the guest's intercept last), loss per epoch."""

    guest_coef: FloatArray
    host_coefs: list[FloatArray]
    loss_history: list[float]
    epochs_run: int


#: ``on_epoch(epoch, guest_coef, host_coefs)`` after each epoch; True stops the run (e.g.
#: validation-based early stopping done by the caller).
EpochHook = Callable[[int, FloatArray, list[FloatArray]], bool]


def fit_reference(X_guest: FloatArray, y: FloatArray, X_hosts: list[FloatArray],
                  config: TrainConfig, *, initial_guest_coef: FloatArray | None = None,
                  validation_rows: list[int] | None = None,
                  on_epoch: EpochHook | None = None) -> ReferenceResult:
    """Train hetero LR in the clear on already-aligned, preprocessed blocks.

    ``initial_guest_coef``: the guest's start (intercept last); default a fresh
    secret random start as the guest draws it. ``validation_rows``: the
    held-out rows; default a fresh draw with ``validation_fraction``. To
    replay an encrypted run, pass the guest's ``initial_coef`` and
    ``validation_rows``.
    """
    cfg = config
    if cfg.protocol == "shared":
        return _fit_shared(X_guest, y, X_hosts, cfg, initial_guest_coef=initial_guest_coef,
                           validation_rows=validation_rows, on_epoch=on_epoch)
    F, G = cfg.score_frac_bits, cfg.feature_frac_bits
    Xg = QuantizedMatrix.build(X_guest, G).values
    Xh = [QuantizedMatrix.build(X, G).values for X in X_hosts]
    y_pm = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    n, kg = Xg.shape
    n_w = kg + (1 if cfg.fit_intercept else 0)
    wg = np.zeros(n_w)
    val = (sorted(int(r) for r in validation_rows) if validation_rows is not None
           else validation_split(y, cfg.validation_fraction))
    train = np.setdiff1d(np.arange(n), np.asarray(val, dtype=np.int64))
    if initial_guest_coef is not None:
        wg = np.asarray(initial_guest_coef, dtype=np.float64).copy()
    else:
        wg = initial_guest_coef_fn(Xg[train], y_pm[train], fit_intercept=cfg.fit_intercept)
    wh = [np.zeros(X.shape[1]) for X in Xh]
    opt_g = Optimizer(cfg.optimizer, cfg.learning_rate, cfg.decay, cfg.penalty, cfg.alpha, n_w,
                      kg if cfg.fit_intercept else None)
    opt_h = [Optimizer(cfg.optimizer, cfg.learning_rate, cfg.decay, cfg.penalty, cfg.alpha,
                       X.shape[1]) for X in Xh]
    history: list[float] = []
    epochs_run = 0
    n_train = n - len(val)
    W = row_weights((np.asarray(y) > 0.5).astype(np.int64), cfg, train)
    accurate = cfg.mode == "accurate"
    E = CURVATURE_FRAC_BITS
    squares = np.zeros(n, dtype=np.int64)  # accurate mode: the guest's stored squares
    for epoch in range(cfg.epochs):
        loss8 = 0.0
        loss_int = 0  # accurate mode: exact total at scale 2^(F+E)
        for rows in epoch_batches(n, val, cfg, epoch):
            b = len(rows)
            g = Xg[rows] @ wg[:kg] + (wg[kg] if cfg.fit_intercept else 0.0)
            if accurate:
                dw, loss_b = _accurate_batch(cfg, rows, g, y_pm, Xh, wh, squares, epoch, W)
                loss_int += loss_b
            else:
                dw, loss_b8 = _taylor_batch(cfg, rows, g, y_pm, Xh, wh, W)
                loss8 += loss_b8
            grad_g = Xg[rows].T @ dw / (4.0 * b)
            if cfg.fit_intercept:
                grad_g = np.append(grad_g, np.sum(dw) / (4.0 * b))
            grads_h = [X[rows].T @ dw / (4.0 * b) for X in Xh]
            wg = opt_g.step(wg, grad_g, epoch)
            wh = [o.step(w, gr, epoch) for o, w, gr in zip(opt_h, wh, grads_h, strict=True)]
        if accurate:
            den = n_train << (F + E)
            loss = (((loss_int << LOSS_GRID_BITS) + den // 2) // den) / 2.0**LOSS_GRID_BITS
            prev = history[-1] if history else None
            history.append(loss)
            epochs_run = epoch + 1
            if (cfg.tol > 0 and prev is not None and abs(prev - loss) < cfg.tol
                    and tol_applies(cfg, epoch)):
                break
            if on_epoch is not None and on_epoch(epoch, wg, wh):
                break
            continue
        # the arbiter reports the mean loss rounded to 2^-LOSS_GRID_BITS
        loss = round(loss8 / (8.0 * n_train) * 2.0**LOSS_GRID_BITS) / 2.0**LOSS_GRID_BITS
        prev = history[-1] if history else None
        history.append(loss)
        epochs_run = epoch + 1
        if cfg.tol > 0 and prev is not None and abs(prev - loss) < cfg.tol:
            break
        if on_epoch is not None and on_epoch(epoch, wg, wh):
            break
    return ReferenceResult(wg, wh, history, epochs_run)


def _taylor_batch(cfg: TrainConfig, rows: list[int], g: FloatArray, y_pm: FloatArray,
                  Xh: list[FloatArray], wh: list[FloatArray],
                  W: object) -> tuple[FloatArray, float]:
    """Taylor mode: the residuals ``4d`` (class-weighted) and ``8 x`` the batch's loss."""
    F, G = cfg.score_frac_bits, cfg.feature_frac_bits
    b = len(rows)
    Hk = [quantize(X[rows] @ w, F) for X, w in zip(Xh, wh, strict=True)]
    p = g - 2.0 * y_pm[rows]
    P = quantize(p, F)
    H = np.sum(Hk, axis=0) if Hk else np.zeros(b, np.int64)
    d4 = dequantize(H + P, F)
    # loss terms, as the guest assembles them under encryption
    plain = float(np.sum(8.0 * math.log(2.0) - 4.0 * y_pm[rows] * g + g * g))
    loss8 = round(plain * 2.0 ** (2 * F)) / 2.0 ** (2 * F)
    qp = quantize(p, G)
    loss8 += 2.0 * _idot(qp, H) / 2.0 ** (F + G)
    earlier = np.zeros(b, np.int64)
    for k, Hc in enumerate(Hk):
        loss8 += _idot(Hc, Hc) / 2.0 ** (2 * F)
        if k > 0:
            qh = quantize(Xh[k][rows] @ wh[k], G)
            loss8 += 2.0 * _idot(qh, earlier) / 2.0 ** (F + G)
        earlier = earlier + Hc
    # class weights scale each row's residual
    dw = d4 if W is None else d4 * W[rows] / float(1 << WEIGHT_BITS)  # type: ignore[index]
    return dw, loss8


def _accurate_batch(cfg: TrainConfig, rows: list[int], g: FloatArray, y_pm: FloatArray,
                    Xh: list[FloatArray], wh: list[FloatArray], squares: np.ndarray,
                    epoch: int, W: object) -> tuple[FloatArray, int]:
    """Accurate mode: the residuals ``4d`` and the batch's loss at scale ``2^(F+E)``.

    Integers exactly as the guest forms them under encryption:
    ``4d = c1 H + c2 Q + P`` with ``c1 = Q_E(4σ'(g))``, ``c2 = Q_E(2σ''(g))``,
    ``P = Q_(F+E)(4(σ(g) - y))``; ``Q`` the squares stored at the last epoch
    were due for it (0 before its first, and in epoch 0).
    """
    F, E = cfg.score_frac_bits, CURVATURE_FRAC_BITS
    H = [0] * len(rows)
    for X, wk in zip(Xh, wh, strict=True):
        H = [a + int(v) for a, v in zip(H, quantize(X[rows] @ wk, F).tolist(), strict=True)]
    due = [r for r, ok in zip(rows, squares_due(cfg, epoch, rows), strict=True)  # type: ignore[call-overload]
           if ok]
    if due:
        squares[due] = np.sum([clipped_squares(X[due], wk, F)
                               for X, wk in zip(Xh, wh, strict=True)], axis=0)
    Q = squares[rows].tolist()  # 0 for a row before its first squares
    sig = 1.0 / (1.0 + np.exp(-g))
    y01 = (y_pm[rows] + 1.0) / 2.0
    c1 = quantize(4.0 * sig * (1.0 - sig), E).tolist()
    c2 = quantize(2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig), E).tolist()
    P = quantize(4.0 * (sig - y01), F + E).tolist()
    w: list[int] = [1] * len(rows) if W is None else W[rows].tolist()  # type: ignore[index]
    d4 = [wi * (a * h + c * q + p)
          for wi, a, h, c, q, p in zip(w, c1, H, c2, Q, P, strict=True)]
    scale = 2.0 ** (F + E + weight_frac_bits(cfg))
    dw = np.array([float(v) for v in d4]) / scale
    loss = round(float(np.sum(np.logaddexp(0.0, g) - y01 * g)) * 2.0 ** (F + E))
    loss += _idot(quantize(sig - y01, E), np.array(H, dtype=object))
    loss += _idot(quantize(0.5 * sig * (1.0 - sig), E), np.array(Q, dtype=object))
    return dw, int(loss)


def _idot(a: np.ndarray, b: np.ndarray) -> int:
    """Exact integer dot product of two int64 vectors."""
    return sum(int(x) * int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))


def _fit_shared(X_guest: FloatArray, y: FloatArray, X_hosts: list[FloatArray],
                cfg: TrainConfig, *, initial_guest_coef: FloatArray | None,
                validation_rows: list[int] | None,
                on_epoch: EpochHook | None = None) -> ReferenceResult:
    """Protocol ``shared`` in the clear (``hetero_lr.md``, "Secret-shared training").

    The weights are what the two shares add up to; the encrypted run rounds
    each share separately (``2^-F`` per share and step), far below the 1e-6
    the tests allow. Per batch, Taylor mode: ``4d = s - 2y``; accurate mode:
    ``4d = 4(σ(g~) - y) + c1 (s - g~) + c2 q`` around the guest's score ``g~``
    with its weights at the start of the epoch, ``c1 = Q_16(4σ'(g~))``,
    ``c2 = Q_16(2σ''(g~))``, ``q`` the row's stored ``clip(s - g~, ±3)^2`` (0 until
    its first; new squares of the rows due are taken after the batch's
    residual and serve from the row's next batch on). Taylor mode stores
    ``clip(s, ±3)^2`` for its loss only. The optimiser is linear in the
    gradient (``sgd``, ``momentum`` with factor 9/10), plus the L2 term.
    """
    from vfl.lr._shared import expansion_point
    from vfl.lr.config import MOMENTUM, shared_squares_due

    F, G, E = cfg.score_frac_bits, cfg.feature_frac_bits, CURVATURE_FRAC_BITS
    Xg = QuantizedMatrix.build(X_guest, G).values
    Xh = [QuantizedMatrix.build(X, G).values for X in X_hosts]
    y_pm = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    y01 = (y_pm + 1.0) / 2.0
    n, kg = Xg.shape
    val = (sorted(int(r) for r in validation_rows) if validation_rows is not None
           else validation_split(y, cfg.validation_fraction))
    train = np.setdiff1d(np.arange(n), np.asarray(val, dtype=np.int64))
    if initial_guest_coef is not None:
        wg = np.asarray(initial_guest_coef, dtype=np.float64).copy()
    else:
        wg = initial_guest_coef_fn(Xg[train], y_pm[train], fit_intercept=cfg.fit_intercept)
    # the guest's start is its own share: quantised at 2^-F like every share
    wg = np.round(wg * 2.0**F) / 2.0**F
    wh = [np.zeros(X.shape[1]) for X in Xh]
    fi = cfg.fit_intercept
    mg, mh = np.zeros_like(wg), [np.zeros_like(w) for w in wh]
    mask_g = np.ones_like(wg)
    if fi:
        mask_g[kg] = 0.0
    beta = MOMENTUM[0] / MOMENTUM[1] if cfg.optimizer == "momentum" else 0.0
    accurate = cfg.mode == "accurate"
    W = row_weights((np.asarray(y) > 0.5).astype(np.int64), cfg, train)
    q = np.zeros(n)
    have = np.zeros(n, dtype=bool)
    n_train = n - len(val)
    history: list[float] = []
    epochs_run = 0

    def guest_score(w: FloatArray, rows: np.ndarray) -> FloatArray:
        out: FloatArray = Xg[rows] @ w[:kg] + (w[kg] if fi else 0.0)
        return out

    # accurate mode: the guest expands around its own model, fitted alone before training
    w_start = wg.copy()
    if accurate:
        point = expansion_point(Xg[train], y01[train],
                                None if W is None else W[train],  # type: ignore[index]
                                fit_intercept=fi, frac_bits=F)
        w_start = np.array(point, dtype=np.float64) / 2.0**F
    for epoch in range(cfg.epochs):
        lr = cfg.learning_rate / (1.0 + cfg.decay * epoch)
        loss = 0.0
        for rows in epoch_batches(n, val, cfg, epoch):
            r = np.asarray(rows, dtype=np.int64)
            b = len(rows)
            s = guest_score(wg, r) + sum((X[r] @ w for X, w in zip(Xh, wh, strict=True)),
                                         np.zeros(b))
            if accurate:
                gt = guest_score(w_start, r)
                sig = 1.0 / (1.0 + np.exp(-gt))
                x = s - gt
                c1 = quantize(4.0 * sig * (1.0 - sig), E) / 2.0**E
                c2 = quantize(2.0 * sig * (1.0 - sig) * (1.0 - 2.0 * sig), E) / 2.0**E
                d4 = 4.0 * (sig - y01[r]) + c1 * x + c2 * q[r] * have[r]
                # the linear and square terms with the guest's quantised factors
                loss += float(np.sum(np.logaddexp(0.0, gt) - y01[r] * gt
                                     + quantize(sig - y01[r], E) / 2.0**E * x
                                     + quantize(0.5 * sig * (1.0 - sig) * have[r], E) / 2.0**E
                                     * q[r]))
                fresh = x
            else:
                d4 = s - 2.0 * y_pm[r]
                loss += float(np.sum(math.log(2.0) - 0.5 * y_pm[r] * s + q[r] * have[r] / 8.0))
                fresh = s
            due = np.asarray(shared_squares_due(cfg, epoch, rows), dtype=bool)
            q[r[due]] = np.clip(fresh[due], -CURVATURE_CLIP, CURVATURE_CLIP) ** 2
            have[r[due]] = True
            if W is not None:
                d4 = d4 * W[r] / float(1 << WEIGHT_BITS)  # type: ignore[index]
            grad_g = Xg[r].T @ d4 / (4.0 * b)
            if fi:
                grad_g = np.append(grad_g, np.sum(d4) / (4.0 * b))
            grads_h = [X[r].T @ d4 / (4.0 * b) for X in Xh]
            l2 = cfg.alpha if cfg.penalty == "l2" else 0.0
            mg = beta * mg + grad_g + l2 * wg * mask_g
            mh = [beta * m + gr + l2 * w for m, gr, w in zip(mh, grads_h, wh, strict=True)]
            wg = wg - lr * mg
            wh = [w - lr * m for w, m in zip(wh, mh, strict=True)]
        mean = round(loss / n_train * 2.0**LOSS_GRID_BITS) / 2.0**LOSS_GRID_BITS
        prev = history[-1] if history else None
        history.append(mean)
        epochs_run = epoch + 1
        if (cfg.tol > 0 and prev is not None and abs(prev - mean) < cfg.tol
                and tol_applies(cfg, epoch)):
            break
        if on_epoch is not None and on_epoch(epoch, wg, wh):
            break
    return ReferenceResult(wg, wh, history, epochs_run)
