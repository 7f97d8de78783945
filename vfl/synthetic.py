"""A realistic synthetic two-bank credit data set for the demo.

Bank A (the guest) holds card data and the default label; bank B (the host)
holds deposit and loan data. Both banks share part of their customers. The
default probability depends on both banks' features, so the joint model beats
bank A's own. Values are raw (incomes in currency units, counts, ratios) with
a few missing entries, as real extracts have.

The generator uses numpy's PCG64 for *data* only; nothing here is secret.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["make_two_banks", "host_dominant"]


def make_two_banks(n_rows: int = 20000, overlap: float = 0.75,
                   seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``(guest_df, host_df)``, each with about ``n_rows`` rows.

    Parameters
    ----------
    n_rows : int
        Rows per bank.
    overlap : float
        Share of each bank's customers that the other bank also has.
    seed : int

    Returns
    -------
    guest_df : DataFrame with ``customer_id``, ``default`` and 7 features
    host_df : DataFrame with ``customer_id`` and 7 other features
    """
    if n_rows < 100:
        raise ValueError("n_rows must be at least 100")
    if not 0.05 <= overlap <= 1.0:
        raise ValueError("overlap must be in [0.05, 1]")
    rng = np.random.default_rng(seed)
    shared = int(round(n_rows * overlap))
    only = n_rows - shared
    population = shared + 2 * only
    ids = np.array([f"CUST-{i:08d}" for i in rng.choice(10**8, population, replace=False)])

    # latent traits of each customer
    wealth = rng.normal(0, 1, population)
    discipline = rng.normal(0, 1, population)
    stress = rng.normal(0, 1, population)
    age = np.clip(rng.normal(41, 12, population), 19, 85).round()

    income = np.exp(10.6 + 0.45 * wealth + 0.1 * rng.normal(size=population)).round(-2)
    limit = (income * np.exp(-1.3 + 0.3 * rng.normal(size=population))).round(-2)
    utilization = np.clip(0.35 - 0.12 * discipline + 0.02 * stress
                          + 0.12 * rng.normal(size=population), 0, 1.3).round(3)
    late = rng.poisson(np.exp(-0.8 - 0.9 * discipline + 0.05 * stress))
    months_on_book = np.clip(rng.gamma(3, 20, population), 1, 400).round()
    cards = 1 + rng.poisson(1.2 + 0.3 * wealth.clip(0), population)

    savings = np.exp(8.5 + 0.9 * wealth + 0.4 * discipline + 0.5 * rng.normal(size=population))
    deposits = (income / 12 * np.exp(0.15 * rng.normal(size=population))).round(-1)
    overdraft = rng.poisson(np.exp(0.2 - 0.6 * discipline + 0.7 * stress))
    loans = rng.poisson(np.exp(-0.3 + 0.4 * stress))
    mortgage = (rng.random(population) < 1 / (1 + np.exp(-(0.5 * wealth + (age - 40) / 15)))
                ).astype(int)
    dti = np.clip(0.30 + 0.12 * stress - 0.05 * wealth + 0.08 * rng.normal(size=population),
                  0, 1.5).round(3)
    inquiries = rng.poisson(np.exp(-0.5 + 0.6 * stress - 0.2 * discipline))

    logit = (-2.0 + 0.9 * stress - 0.6 * discipline - 0.25 * wealth - 0.01 * (age - 41)
             + 0.4 * rng.normal(size=population))
    default = (rng.random(population) < 1 / (1 + np.exp(-logit))).astype(int)

    order = rng.permutation(population)
    guest_idx = order[: shared + only]
    host_idx = np.concatenate([order[:shared], order[shared + only:]])
    guest_idx = rng.permutation(guest_idx)
    host_idx = rng.permutation(host_idx)

    guest = pd.DataFrame({
        "customer_id": ids[guest_idx],
        "default": default[guest_idx],
        "age": age[guest_idx],
        "annual_income": income[guest_idx],
        "credit_limit": limit[guest_idx],
        "utilization": utilization[guest_idx],
        "late_payments_12m": late[guest_idx],
        "months_on_book": months_on_book[guest_idx],
        "num_cards": cards[guest_idx],
    })
    host = pd.DataFrame({
        "customer_id": ids[host_idx],
        "savings_balance": savings[host_idx].round(2),
        "monthly_deposits": deposits[host_idx],
        "overdraft_days_6m": overdraft[host_idx],
        "loan_count": loans[host_idx],
        "has_mortgage": mortgage[host_idx],
        "debt_to_income": dti[host_idx],
        "inquiries_6m": inquiries[host_idx],
    })
    # realistic gaps: some incomes and balances are unknown
    guest.loc[rng.random(len(guest)) < 0.03, "annual_income"] = np.nan
    host.loc[rng.random(len(host)) < 0.02, "savings_balance"] = np.nan
    return guest, host


def host_dominant(n_rows: int = 30000, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plain logistic model where the host's score dominates: ``(X_guest, y, X_host)``.

    Aligned standard-normal blocks (4 guest, 6 host columns); the true logit
    is ``-1.5 + X_g (0.3, -0.2, 0.1, 0) + X_h (1.2, -0.9, 0.7, 0.5, -0.4, 0)``,
    so the host's part has about 3.6 times the guest's spread. The case where
    an expansion around the guest's own score is hardest (issue 11).
    """
    rng = np.random.default_rng(seed)
    Xg = rng.normal(size=(n_rows, 4))
    Xh = rng.normal(size=(n_rows, 6))
    logit = (-1.5 + Xg @ np.array([0.3, -0.2, 0.1, 0.0])
             + Xh @ np.array([1.2, -0.9, 0.7, 0.5, -0.4, 0.0]))
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return Xg, y, Xh
