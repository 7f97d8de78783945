"""Messages of online scoring (``protocols/specs/serving.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.codec import message

__all__ = ["PartialScoreRequest", "PartialScoreReply"]


@message("serve.PartialScoreRequest/1")
@dataclass(frozen=True, slots=True)
class PartialScoreRequest:
    """Guest → host: score these customers with model ``model_id``.

    ``scale``: the scorecard points per unit of partial logit the guest
    wants the host's points at (0: no points). An empty ``customer_ids`` asks
    only whether the host serves ``model_id`` (a hot reload's check).
    """

    model_id: str
    customer_ids: list[str]
    scale: float = 0.0


@message("serve.PartialScoreReply/1")
@dataclass(frozen=True, slots=True)
class PartialScoreReply:
    """Host → guest: per requested customer, whether the host knows it, its partial score
    ``x_h . w_h`` and (if asked) its integer points, per feature too if the host allows it;
    0 for an unknown customer."""

    model_id: str
    known: bytes  # one bit per requested customer (numpy packbits, big-endian)
    scores: np.ndarray  # float64
    points: np.ndarray  # int64 (empty when no points were asked)
    # only if the host shares them ([serve] share_feature_points) and points were asked:
    # its feature names and each customer's points per feature, int64 (customers, features)
    feature_names: list[str]
    feature_points: np.ndarray
