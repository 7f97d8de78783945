"""A model report people can look at: one self-contained HTML page plus PNGs.

``vfl report --model DIR`` (and ``vfl fit`` by default) reads what the guest
holds — ``report.json``, the model part it names and ``train_scores.csv``
(id, label, joint probability of the evaluation rows; file names in
:mod:`vfl.outputs`), optionally an IV table and a file of new scores —
and draws ROC, KS, score distributions, loss per epoch, lift and gain,
calibration, IV and the guest's own coefficients. Only guest-side
information appears: host weights and host feature values never reach the
guest.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from vfl.exceptions import DataError  # noqa: E402
from vfl.metrics import (  # noqa: E402
    calibration_table,
    decile_table,
    evaluate,
    stability_index,
)
from vfl.model import atomic_write_text  # noqa: E402
from vfl.outputs import TRAIN_SCORES, read_guest_outputs  # noqa: E402
from vfl.scorecard import Scorecard  # noqa: E402
from vfl.tableio import read_frame

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2330;background:#fff}h1{font-size:1.6rem}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f6fa}td:first-child,th:first-child{text-align:left}.grid{display:grid;
grid-template-columns:1fr 1fr;gap:1rem}figure{margin:0}img{width:100%;border:1px solid #eee}
.note{color:#667;font-size:.9rem}
"""


def _png(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def _table(rows: list[dict[str, Any]], cols: list[str], fmt: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else format(r[c], fmt.get(c, '')))}</td>"
                         for c in cols)
        + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(model_dir: str | Path, out_dir: str | Path, *, scores: str | Path | None = None,
                 iv: str | Path | None = None, scorecard: Scorecard | None = None) -> Path:
    """Write ``index.html`` and the PNGs into ``out_dir``; returns the HTML path."""
    model_dir, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = read_guest_outputs(model_dir)
    report, part = found.report, found.part
    v = report.get("validation")
    if found.train_scores is None and not v:
        raise DataError(f"{model_dir} has no {TRAIN_SCORES} and no validation figures: the job "
                        "evaluated no rows (validation_fraction 0 and no training-row scoring), "
                        "so there is nothing to chart.")
    sc = scorecard or Scorecard()
    images: dict[str, str] = {}

    loss = report.get("loss_history") or []
    val = report.get("validation_history") or []
    fig, ax = plt.subplots(figsize=(5, 4))
    mode = (report.get("config") or {}).get("mode", "taylor")
    what = ("second-order expansion around the guest's score" if mode == "accurate"
            else "Taylor expansion around 0")
    ax.plot(range(1, len(loss) + 1), loss, marker="o", label=f"training loss ({what})")
    if val:
        ax.plot(range(1, len(val) + 1), [v["loss"] for v in val], marker="s",
                label="validation log-loss")
        ax2 = ax.twinx()
        ax2.plot(range(1, len(val) + 1), [v["auc"] for v in val], color="crimson", marker="^",
                 label="validation AUC")
        ax2.set_ylabel("validation AUC")
        if report.get("best_epoch") is not None:
            ax.axvline(report["best_epoch"] + 1, color="grey", ls=":", label="kept epoch")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss and validation per epoch")
    handles, labels = ax.get_legend_handles_labels()
    if val:
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, -0.14))
    images["loss"] = _png(fig, out / "loss.png")

    cal = (v or {}).get("calibration")
    if cal:
        bands = cal["bands"]
        fig, ax = plt.subplots(figsize=(5, 4))
        obs = [b["observed_rate"] for b in bands]
        ax.plot([b["mean_pd_before"] for b in bands], obs, marker="o", label="before calibration")
        ax.plot([b["mean_pd_after"] for b in bands], obs, marker="s", label="after (Platt)")
        top = max(max(obs), max(b["mean_pd_before"] for b in bands),
                  max(b["mean_pd_after"] for b in bands))
        ax.plot([0, top], [0, top], "--", color="grey", lw=1)
        ax.set(xlabel="mean predicted default probability", ylabel="observed default rate",
               title="Reliability, validation rows (out of sample)")
        ax.legend()
        images["reliability"] = _png(fig, out / "reliability.png")
    deciles: list[dict[str, Any]] = []
    calib: list[dict[str, Any]] = []
    m: dict[str, float] = {}
    score = np.zeros(0)
    if found.train_scores is not None:
        train = pd.read_csv(found.train_scores)
        y = train["label"].to_numpy(int)
        p = train["probability"].to_numpy(float)
        score = sc.from_probability(p)
        m = evaluate(y, p)
        fpr, tpr, _ = roc_curve(y, p)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(fpr, tpr, label=f"joint model (AUC {m['auc']:.3f})")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
        ax.legend(loc="lower right")
        images["roc"] = _png(fig, out / "roc.png")

        grid = np.sort(score)
        bad = np.searchsorted(np.sort(score[y == 1]), grid, side="right") / max((y == 1).sum(), 1)
        good = np.searchsorted(np.sort(score[y == 0]), grid, side="right") / max((y == 0).sum(), 1)
        k = int(np.argmax(np.abs(bad - good)))
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(grid, bad, label="defaults")
        ax.plot(grid, good, label="non-defaults")
        ax.vlines(grid[k], good[k], bad[k], color="crimson", label=f"KS {abs(bad[k] - good[k]):.3f}")
        ax.set(xlabel="score (points)", ylabel="cumulative share", title="KS curve")
        ax.legend()
        images["ks"] = _png(fig, out / "ks.png")

        fig, ax = plt.subplots(figsize=(5, 4))
        bins = np.linspace(np.percentile(score, 0.5), np.percentile(score, 99.5), 40).tolist()
        ax.hist(score[y == 0], bins=bins, alpha=.6, density=True, label="non-defaults")
        ax.hist(score[y == 1], bins=bins, alpha=.6, density=True, label="defaults")
        ax.set(xlabel="score (points)", ylabel="density", title="Score distribution")
        ax.legend()
        images["score_distribution"] = _png(fig, out / "score_distribution.png")

        deciles = decile_table(y, p)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.bar([r["decile"] for r in deciles], [r["lift"] for r in deciles], color="#7a9cc6",
               label="lift")
        ax2 = ax.twinx()
        ax2.plot([r["decile"] for r in deciles], [r["cumulative_gain"] for r in deciles],
                 color="crimson", marker="o", label="cumulative gain")
        ax.set(xlabel="decile (1 = riskiest)", ylabel="lift", title="Lift and gain")
        ax2.set_ylabel("cumulative gain")
        images["lift_gain"] = _png(fig, out / "lift_gain.png")

        calib = calibration_table(y, p)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([r["mean_predicted"] for r in calib], [r["observed_rate"] for r in calib],
                marker="o", label="deciles")
        top = max(max(r["mean_predicted"] for r in calib), max(r["observed_rate"] for r in calib))
        ax.plot([0, top], [0, top], "--", color="grey", lw=1)
        ax.set(xlabel="mean predicted default probability", ylabel="observed default rate",
               title="Calibration")
        images["calibration"] = _png(fig, out / "calibration.png")

    fig, ax = plt.subplots(figsize=(5, max(3, 0.3 * len(part.features))))
    order = np.argsort(np.abs(part.coef))
    ax.barh([part.features[i] for i in order], [part.coef[i] for i in order], color="#5b8c5a")
    ax.set(xlabel="weight (standardised column)", title=f"{part.party}'s own coefficients")
    images["coefficients"] = _png(fig, out / "coefficients.png")

    iv_rows: list[dict[str, Any]] = []
    iv_file = Path(iv) if iv else found.iv_table
    if iv_file is not None and iv_file.is_file():
        iv_rows = json.loads(iv_file.read_text())
        top_iv = iv_rows[:25]
        fig, ax = plt.subplots(figsize=(5, max(3, 0.3 * len(top_iv))))
        ax.barh([f"{r['feature']}" for r in top_iv][::-1], [r["iv"] for r in top_iv][::-1],
                color="#c6937a")
        ax.set(xlabel="information value", title="Information value")
        images["iv"] = _png(fig, out / "iv.png")

    stability = None
    if scores and score.size:
        new = read_frame(scores)
        if "probability" not in new:
            raise DataError(f"{scores} has no 'probability' column.")
        scored = new["probability"].dropna().to_numpy()  # rows not at every bank: no score
        stability = stability_index(score, sc.from_probability(scored))

    figs = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,{v}"></figure>'
                   for k, v in images.items())
    metrics_rows: list[dict[str, Any]] = []
    if v:
        metrics_rows += [
            {"metric": f"validation AUC ({v['rows']:,} held-out rows, epoch {v['epoch']})",
             "value": v["auc"]},
            {"metric": "validation KS", "value": v["ks"]},
            {"metric": "validation log-loss" + (" (calibrated)" if cal else ""),
             "value": v["log_loss"]}]
        if v.get("brier") is not None:
            metrics_rows.append({"metric": "validation Brier score" + (" (calibrated)" if cal
                                                                        else ""),
                                 "value": v["brier"]})
    if m:
        where = report.get("evaluated_on", "training rows")
        metrics_rows += [{"metric": f"{k} ({where}, in-sample)", "value": val_} for k, val_ in (
            ("AUC", m["auc"]), ("Gini", m["gini"]), ("KS", m["ks"]),
            ("KS peaks at probability", m["ks_threshold"]), ("accuracy at 0.5", m["accuracy"]))]
    base = report.get("baseline") or {}
    yardsticks = []
    if v or m:
        yardsticks.append({"model": "joint federated model"
                           + (" (validation rows)" if v else " (training rows)"),
                           "AUC": (v or m)["auc"], "KS": (v or m)["ks"]})
    if base.get("guest_only_auc") is not None:
        yardsticks.append({"model": "guest-only model (training rows)",
                           "AUC": base["guest_only_auc"], "KS": base.get("guest_only_ks")})
    if base.get("centralized_auc") is not None:
        yardsticks.append({"model": "centralised sklearn on pooled data (training rows)",
                           "AUC": base["centralized_auc"], "KS": base.get("centralized_ks")})
    calibration_html = ""
    if cal:
        names = ["brier", "log_loss", "calibration_in_the_large", "calibration_slope"]
        cal_rows = [{"figure": n.replace("_", " "), "before": cal["before"][n],
                     "after (cross-fitted)": cal["after"][n]} for n in names]
        band_rows = [{**b_, "bad rate": b_["observed_rate"]} for b_ in cal["bands"]]
        calibration_html = (
            f"<h2>Calibration (validation rows, out of sample)</h2><p class=\"note\">Platt "
            f"scaling p = sigmoid({cal['slope']:.4f}·s + {cal['intercept']:.4f}) of the joint "
            "score s, fitted by the arbiter on the validation rows' shuffled joint scores and "
            "applied at scoring. Ideal: calibration-in-the-large 0 (mean PD minus observed "
            "rate), slope 1.</p>"
            + _table(cal_rows, ["figure", "before", "after (cross-fitted)"],
                     {"before": ".4f", "after (cross-fitted)": ".4f"})
            + "<h2>Bad rate and count by score band (validation rows)</h2>"
            + _table(band_rows, ["band", "rows", "defaults", "bad rate", "mean_pd_before",
                                 "mean_pd_after"],
                     {"bad rate": ".3f", "mean_pd_before": ".3f", "mean_pd_after": ".3f"})
            + "<p class=\"note\">Band 1 holds the lowest joint scores (safest).</p>")
    points_html = ""
    points_csv = model_dir / f"{part.party}_points.csv"
    if points_csv.is_file():
        pts = pd.read_csv(points_csv, keep_default_na=False)
        points_html = (f"<h2>{html.escape(part.party)}'s scorecard points</h2>"
                       + _table(pts.to_dict("records"), list(pts.columns), {}))
    if stability is not None:
        metrics_rows.append({"metric": "stability index (training vs scored)", "value": stability})
    facts = (f"model {html.escape(str(report.get('model_id')))} · intersection "
             f"{report.get('n_intersection', '?'):,} customers · {report.get('epochs_run')} epochs · "
             f"{report.get('n_hosts')} host(s) · evaluated on {report.get('evaluated_on', 'training rows')}")
    leak = report.get("leakage_check")
    leak_html = ""
    if leak:
        flagged = leak.get("suspicious") or []
        verdict = ("none found" if not flagged else "SUSPICIOUS (trained with --allow-suspicious): "
                   + ", ".join(f"{s['party']}:{s['feature']}" for s in flagged))
        leak_html = (f"<h2>Target-leakage check</h2><p class=\"note\">"
                     f"{html.escape('; '.join(leak.get('checked', [])))} against univariate AUC "
                     f"&ge; {leak.get('auc_threshold')} and IV &ge; {leak.get('iv_threshold')}: "
                     f"{html.escape(verdict)}.</p>")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>vfl model report</title><style>{_CSS}</style></head><body>
<h1>Joint credit-risk model: report</h1><p class="note">{facts}</p>
<h2>Performance</h2>{_table(metrics_rows, ["metric", "value"], {"value": ".4f"})}
<h2>Joint model against the yardsticks</h2>{_table(yardsticks, ["model", "AUC", "KS"],
 {"AUC": ".4f", "KS": ".4f"})}
{calibration_html}
<h2>Charts</h2><div class="grid">{figs}</div>
{"<h2>Lift and gain by decile (" + html.escape(str(report.get("evaluated_on"))) + ", in-sample)</h2>"
 + _table(deciles, ["decile", "count", "events", "event_rate", "lift", "cumulative_gain"],
          {"event_rate": ".3f", "lift": ".2f", "cumulative_gain": ".3f"}) if deciles else ""}
{"<h2>Calibration by decile (in-sample)</h2>" + _table(calib, ["decile", "count",
 "mean_predicted", "observed_rate"], {"mean_predicted": ".3f", "observed_rate": ".3f"})
 if calib else ""}
{points_html}
{"<h2>Information value</h2>" + _table(iv_rows, ["party", "feature", "iv"], {"iv": ".4f"}) if iv_rows else ""}
{leak_html}
<p class="note">Scorecard: base score {sc.base_score:g} at odds {sc.base_odds:g}:1,
{sc.pdo:g} points to double the odds. Only the guest's own information is shown; host weights
and values stay with the hosts.</p></body></html>"""
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
