"""The guest's side of online scoring: one applicant (or a batch) to a credit decision.

For each applicant the guest computes its own partial score from the
applicant's features (the part's WOE encoding, imputation and scaling, then
its weights and intercept: exactly what ``vfl predict`` does for a row),
asks every host for its partial score of the customer ID
(:class:`~vfl.serving.grpc.HostClient`), adds them, applies the part's Platt
calibration and the logistic function. The scorecard score is the guest's
points table score plus every host's integer points at the guest's scale
(as in ``vfl predict --scorecard``). Reason codes are the guest's own
features whose points fall furthest below the best points of that feature.

When a host does not know the customer, or does not answer, ``fallback``
decides: ``"host_average"`` scores the applicant with that host's
contribution set to 0, the average of its partial score over the training
rows (its columns are standardised on them), and flags the result;
``"error"`` refuses the applicant.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from vfl.exceptions import ConfigError, RemoteProtocolError, VFLError
from vfl.jobs import encode_for_part, part_ranges
from vfl.lr.estimator import GuestLogisticRegression
from vfl.model import ModelPart
from vfl.preprocess import RANGE_MARGIN, RANGE_POLICIES, RangePolicy
from vfl.scorecard import PointsTable, Scorecard, part_calibration, part_points_table
from vfl.serving.host import ServingError
from vfl.serving.messages import PartialScoreReply

__all__ = ["GuestScorer", "Applicant", "Decision", "HostDown", "HostBusy", "UnknownCustomer",
           "Fallback",
           "REASON_CODES"]

#: Reason codes returned per applicant (adverse-action notices usually give up to four).
REASON_CODES = 4

Fallback = Literal["host_average", "error"]


class HostLike(Protocol):
    """What the guest needs of a host (:class:`vfl.serving.grpc.HostClient`)."""

    host: str

    def partial_scores(self, model_id: str, customer_ids: list[str],
                       scale: float = 0.0) -> PartialScoreReply: ...

    def known(self, reply: PartialScoreReply) -> np.ndarray: ...


class HostDown(VFLError):
    """A host did not answer (and the fallback is ``"error"``)."""


class HostBusy(HostDown):
    """A host refused for its rate limit or daily budget (and the fallback is ``"error"``)."""


class UnknownCustomer(VFLError):
    """A host does not know the customer (and the fallback is ``"error"``)."""


@dataclass(frozen=True)
class Applicant:
    """One applicant: the customer ID the banks share, and the guest's own features (NaN:
    missing; imputed as in training)."""

    customer_id: str
    features: Mapping[str, float]


@dataclass
class Decision:
    """The answer for one applicant."""

    customer_id: str
    probability: float
    #: the probability's score (:meth:`Scorecard.decision_score`): the two always agree
    score: int
    points: dict[str, int]
    base_points: int
    host_points: int
    reason_codes: list[dict[str, Any]]
    host_features_available: bool
    fallback: str | None = None
    hosts_missing: list[str] = field(default_factory=list)
    #: per host that shares them ([serve] share_feature_points): its points per feature
    host_feature_points: dict[str, dict[str, int]] = field(default_factory=dict)
    #: features outside their training range (range policy "clip": scored clipped;
    #: "flag": scored as given)
    out_of_range: list[str] = field(default_factory=list)
    #: the points tables' total: base points, the guest's points and every host's (what
    #: the deployable tables give; within the rounding and binning gap of ``score``)
    points_total: int = 0


class GuestScorer:
    """Scores applicants with the guest's model part and its hosts.

    Parameters
    ----------
    part : ModelPart
        The guest's part (with its score bins, for the points table).
    hosts : sequence of HostLike
        One client per host of the model, in the model's host order.
    scorecard : Scorecard
        pdo, base score and odds of the points.
    fallback : {"host_average", "error"}
    ids_per_host_request : int
        A batch is asked of each host in requests of at most this many IDs
        (at most the host's ``max_ids_per_request``).
    """

    def __init__(self, part: ModelPart, hosts: Sequence[HostLike], *,
                 scorecard: Scorecard | None = None, fallback: Fallback = "host_average",
                 reasons: int = REASON_CODES, ids_per_host_request: int = 100,
                 failures: dict[str, int] | None = None, range_policy: RangePolicy = "refuse",
                 range_margin: float = RANGE_MARGIN) -> None:
        if part.role != "guest":
            raise ConfigError(f"The guest serves its own guest part; {part.party}'s part is a "
                              f"{part.role}'s.")
        if fallback not in ("host_average", "error"):
            raise ConfigError(f"fallback must be 'host_average' or 'error', not {fallback!r}.")
        expected = list(part.peers.get("hosts", [])) if isinstance(part.peers, dict) else []
        names = [h.host for h in hosts]
        if expected and sorted(expected) != sorted(names):
            raise ConfigError(f"The model was trained with host(s) {', '.join(expected)}; the "
                              f"scoring service is configured with {', '.join(names) or 'none'}.")
        if range_policy not in RANGE_POLICIES:
            raise ConfigError(f"range_policy must be one of {', '.join(RANGE_POLICIES)}, not "
                              f"{range_policy!r}.")
        if not (math.isfinite(range_margin) and 0.0 <= range_margin <= 10.0):
            raise ConfigError("range_margin must be in [0, 10].")
        self.ranges = part_ranges(part)
        if self.ranges is None and range_policy != "flag":
            raise ConfigError(f"Model part {part.model_id} keeps no training ranges (trained "
                              "before vfl kept them): retrain it, or set [serve] range_policy "
                              "= \"flag\" to score without the check.")
        self.range_policy: RangePolicy = range_policy
        self.range_margin = range_margin
        self.part = part
        self.model_id = part.model_id
        self.features = list(part.features)
        self.hosts = list(hosts)
        self.fallback: Fallback = fallback
        self.reasons = reasons
        if ids_per_host_request < 1:
            raise ConfigError("ids_per_host_request must be at least 1.")
        self.chunk = ids_per_host_request
        self.estimator = GuestLogisticRegression.from_part(part)
        self.calibration = part_calibration(part)
        self.scorecard = scorecard or Scorecard()
        self.table: PointsTable = part_points_table(part, self.scorecard)
        assert self.table.scale is not None
        self.scale = float(self.table.scale)
        self._best = np.asarray([max(*f.points, f.missing_points) for f in self.table.features],
                                dtype=np.int64)
        self._table_index = [self.features.index(n) for n in self.table.names]
        #: host calls that failed, per host (shared across reloads when given)
        self.host_failures: dict[str, int] = failures if failures is not None else {}
        for n in names:
            self.host_failures.setdefault(n, 0)
        self._lock = threading.Lock()

    def matrix(self, applicants: Sequence[Applicant]) -> np.ndarray:
        """The applicants' features in the part's column order (validated by the API)."""
        X = np.empty((len(applicants), len(self.features)), dtype=np.float64)
        for i, a in enumerate(applicants):
            for j, name in enumerate(self.features):
                v = a.features[name]
                X[i, j] = math.nan if v is None else float(v)
        return X

    def _ask(self, host: HostLike, ids: list[str]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, int]]]:
        """A host's scores, points, known flags and (if shared) points per feature for
        ``ids`` (unknown everywhere if it is down)."""
        down: VFLError
        try:
            parts = [host.partial_scores(self.model_id, ids[i:i + self.chunk], self.scale)
                     for i in range(0, len(ids), self.chunk)]
            per_feature: list[dict[str, int]] = []
            for p in parts:
                if p.feature_names:
                    per_feature += [dict(zip(p.feature_names, map(int, row), strict=True))
                                    for row in p.feature_points]
                else:
                    per_feature += [{} for _ in range(p.scores.shape[0])]
            return (np.concatenate([p.scores for p in parts]),
                    np.concatenate([p.points for p in parts]).astype(np.int64),
                    np.concatenate([host.known(p) for p in parts]), per_feature)
        except ServingError as exc:
            if exc.code in ("invalid", "forbidden", "unknown_model"):
                raise  # a configuration error: no fallback hides it
            down = exc
        except RemoteProtocolError:
            with self._lock:
                self.host_failures[host.host] += 1
            raise  # a malformed answer (another model, shape, range): never hidden either
        except VFLError as exc:
            down = exc
        with self._lock:
            self.host_failures[host.host] += 1
        if self.fallback == "error":
            busy = isinstance(down, ServingError) and down.code in ("rate_limited",
                                                                   "budget_exhausted")
            raise (HostBusy if busy else HostDown)(
                f"{host.host} did not score the applicant(s): {down}") from None
        n = len(ids)
        return np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), [{}] * n

    def decide(self, applicants: Sequence[Applicant]) -> list[Decision]:
        """A decision per applicant, in order (one request per host for the batch)."""
        if not applicants:
            return []
        X = self.matrix(applicants)
        flags: list[list[str]] = [[] for _ in applicants]
        if self.ranges is not None:  # refuse: OutOfRange names the feature and its range
            X, flags = self.ranges.check_ranges(X, self.features, self.range_policy,
                                                self.range_margin)
        ids = [a.customer_id for a in applicants]
        own = np.asarray(self.estimator.partial_score(encode_for_part(self.part, X)),
                         dtype=np.float64)
        total = own.copy()
        host_points = np.zeros(len(ids), dtype=np.int64)
        missing: list[list[str]] = [[] for _ in ids]
        shared: list[dict[str, dict[str, int]]] = [{} for _ in ids]
        for host in self.hosts:
            scores, points, known, host_fp = self._ask(host, ids)
            for r, fp in enumerate(host_fp):
                if fp and known[r]:
                    shared[r][host.host] = fp
            total += np.where(known, scores, 0.0)
            host_points += np.where(known, points, 0)
            for r in np.flatnonzero(~known).tolist():
                missing[r].append(host.host)
        if self.fallback == "error":
            unknown = [ids[i] for i, m in enumerate(missing) if m]
            if unknown:
                raise UnknownCustomer(f"{', '.join(missing[ids.index(unknown[0])])} does not "
                                      "know the customer" + ("s" if len(unknown) > 1 else ""))
        slope, intercept = self.calibration
        s = slope * total + intercept
        proba = 1.0 / (1.0 + np.exp(-np.clip(s, -700.0, 700.0)))
        scores = self.scorecard.decision_score(proba)
        per_feature = self.table.points_per_feature(X[:, self._table_index])
        base = int(self.table.base_points or 0)
        guest_score = per_feature.sum(axis=1) + np.int64(base)
        shortfall = self._best[None, :] - per_feature
        out = []
        for i, cid in enumerate(ids):
            order = sorted(range(len(self.table.names)), key=lambda j: (-shortfall[i, j],
                                                                        self.table.names[j]))
            reasons = [{"feature": self.table.names[j], "points_below_best": int(shortfall[i, j])}
                       for j in order[:self.reasons] if shortfall[i, j] > 0]
            out.append(Decision(
                customer_id=cid, probability=float(proba[i]), score=int(scores[i]),
                points_total=int(guest_score[i] + host_points[i]),
                points={n: int(per_feature[i, j]) for j, n in enumerate(self.table.names)},
                base_points=base, host_points=int(host_points[i]), reason_codes=reasons,
                host_features_available=not missing[i],
                fallback=None if not missing[i] else "host_average",
                hosts_missing=missing[i], host_feature_points=shared[i],
                out_of_range=flags[i]))
        return out
