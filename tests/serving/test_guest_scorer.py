"""The guest's decision logic (vfl/serving/guest.py) against stand-in hosts: the fallbacks,
reason codes, and which host refusals no fallback hides."""

from __future__ import annotations

import numpy as np
import pytest

from vfl.serving.grpc import HostUnavailable
from vfl.serving.guest import Applicant, GuestScorer, HostBusy, HostDown, UnknownCustomer
from vfl.serving.host import HostModel, HostScorer, ServeLimits, ServingError
from vfl.serving.messages import PartialScoreRequest


class LocalHost:
    """The real host scorer, called directly (no network); ``fail`` raises instead."""

    host = "host1"

    def __init__(self, scorer: HostScorer, fail: Exception | None = None) -> None:
        self.scorer, self.fail, self.calls = scorer, fail, 0

    def partial_scores(self, model_id, customer_ids, scale=0.0):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.scorer.score("guest", PartialScoreRequest(model_id, customer_ids, scale))

    def known(self, reply):
        return np.unpackbits(np.frombuffer(reply.known, dtype=np.uint8),
                             count=reply.scores.shape[0]).astype(bool)


@pytest.fixture
def host(trained):
    return HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                      limits=ServeLimits(max_ids_per_request=10))


def _applicants(trained, n, unknown=0):
    g = trained.guest.select(trained.guest_part.features)
    shared = set(trained.host.ids)
    rows = [i for i, c in enumerate(g.ids) if c in shared][:n]
    out = [Applicant(g.ids[i], dict(zip(g.feature_names, g.X[i], strict=True))) for i in rows]
    return out + [Applicant(f"stranger-{k}", out[0].features) for k in range(unknown)]


def test_a_batch_is_asked_in_requests_the_host_accepts(trained, host):
    h = LocalHost(host)
    scorer = GuestScorer(trained.guest_part, [h], ids_per_host_request=10)
    out = scorer.decide(_applicants(trained, 25))
    assert h.calls == 3 and all(d.host_features_available for d in out)


def test_fallbacks(trained, host):
    apps = _applicants(trained, 3, unknown=1)
    average = GuestScorer(trained.guest_part, [LocalHost(host)]).decide(apps)
    assert [d.host_features_available for d in average] == [True, True, True, False]
    assert average[3].fallback == "host_average" and average[3].hosts_missing == ["host1"]
    with pytest.raises(UnknownCustomer, match="host1 does not know"):
        GuestScorer(trained.guest_part, [LocalHost(host)], fallback="error").decide(apps)
    down = LocalHost(host, HostUnavailable("host1 at 127.0.0.1:1 did not answer"))
    assert not any(d.host_features_available
                   for d in GuestScorer(trained.guest_part, [down]).decide(apps[:2]))
    with pytest.raises(HostDown, match="did not answer"):
        GuestScorer(trained.guest_part, [down], fallback="error").decide(apps[:2])
    busy = LocalHost(host, ServingError("rate_limited", "more than 200 requests per second"))
    with pytest.raises(HostBusy):
        GuestScorer(trained.guest_part, [busy], fallback="error").decide(apps[:2])


@pytest.mark.parametrize("code", ["unknown_model", "forbidden", "invalid"])
def test_a_configuration_refusal_is_never_hidden_by_the_fallback(trained, host, code):
    bad = LocalHost(host, ServingError(code, "refused"))
    with pytest.raises(ServingError):
        GuestScorer(trained.guest_part, [bad]).decide(_applicants(trained, 1))


def test_reason_codes_are_the_features_furthest_below_their_best_points(trained, host):
    scorer = GuestScorer(trained.guest_part, [LocalHost(host)])
    d = scorer.decide(_applicants(trained, 1))[0]
    best = {f.name: max(*f.points, f.missing_points) for f in scorer.table.features}
    shortfall = {n: best[n] - p for n, p in d.points.items()}
    want = sorted((n for n in shortfall if shortfall[n] > 0),
                  key=lambda n: (-shortfall[n], n))[:4]
    assert [r["feature"] for r in d.reason_codes] == want
    assert d.points_total == d.base_points + sum(d.points.values()) + d.host_points
    assert d.score == int(scorer.scorecard.decision_score(np.array([d.probability]))[0])


def test_a_host_that_shares_its_feature_points_has_them_shown(trained, host):
    """[serve] share_feature_points on the host: each known applicant's host points come
    per feature too, adding up to the host's total; by default only the total."""
    apps = _applicants(trained, 3, unknown=1)
    plain = GuestScorer(trained.guest_part, [LocalHost(host)]).decide(apps)
    assert all(d.host_feature_points == {} for d in plain)
    host.share_feature_points = True
    shared = GuestScorer(trained.guest_part, [LocalHost(host)]).decide(apps)
    for d in shared[:3]:
        fp = d.host_feature_points["host1"]
        assert list(fp) == list(trained.host_part.features)
        assert sum(fp.values()) == d.host_points
    assert shared[3].host_feature_points == {}  # unknown to the host: nothing to show


def test_the_guest_refuses_feature_points_that_do_not_add_up(trained, host):
    """A deviating host's per-feature points must add up to its total points."""
    import dataclasses

    from vfl.codec import Envelope, encode_envelope
    from vfl.exceptions import RemoteProtocolError
    from vfl.serving.grpc import HostClient

    host.share_feature_points = True
    reply = host.score("guest", PartialScoreRequest(trained.host_part.model_id,
                                                    trained.host.ids[:2], 28.85))
    bad = dataclasses.replace(reply, feature_points=reply.feature_points + 1)
    client = HostClient.__new__(HostClient)
    client.host, client.party, client.address = "host1", "guest", "x"
    client._call = lambda data, timeout: encode_envelope(Envelope("serve", 0, "host1", "guest",
                                                                  bad))
    client.timeout = 1
    with pytest.raises(RemoteProtocolError, match="do not match"):
        client.partial_scores(trained.host_part.model_id, trained.host.ids[:2], 28.85)
    client._call = lambda data, timeout: encode_envelope(Envelope("serve", 0, "host1", "guest",
                                                                  reply))
    assert client.partial_scores(trained.host_part.model_id, trained.host.ids[:2],
                                 28.85).feature_points.shape == (2, len(reply.feature_names))


@pytest.mark.parametrize("policy", ["refuse", "clip", "flag"])
def test_the_range_policy(trained, host, policy):
    """A value beyond the training range (widened by 10 % of its width): refused naming the
    feature and its range, or scored at the range's end and flagged, or flagged only."""
    from vfl.preprocess import OutOfRange

    app = _applicants(trained, 1)[0]
    rng = trained.guest_part.preprocessing["ranges"]
    j = trained.guest_part.features.index("age")
    lo, hi = rng["mins"][j], rng["maxs"][j]
    accepted_hi = hi + 0.1 * (hi - lo)
    odd = Applicant(app.customer_id, {**app.features, "age": accepted_hi * 3})
    edge = Applicant(app.customer_id, {**app.features, "age": accepted_hi})
    scorer = GuestScorer(trained.guest_part, [LocalHost(host)], range_policy=policy)
    at_edge = scorer.decide([edge])[0]
    assert at_edge.out_of_range == []
    if policy == "refuse":
        with pytest.raises(OutOfRange, match=rf"age = .* outside the range .*{lo:.6g} to "
                                             rf"{hi:.6g}"):
            scorer.decide([odd])
        return
    d = scorer.decide([odd])[0]
    assert d.out_of_range == ["age"]
    if policy == "clip":
        assert d.probability == pytest.approx(at_edge.probability, abs=1e-12)
    else:
        assert d.probability != pytest.approx(at_edge.probability, abs=1e-6)


def test_probability_and_score_agree_on_10000_random_applicants(trained):
    """Issue 25: one decision. The probability is primary; the score is its image under the
    points-to-odds mapping (Scorecard.decision_score), for every accepted applicant:
    random values anywhere in the accepted ranges, the ranges' ends, missing values,
    customers the host does not know (its average), and values clipped by policy 'clip'."""
    from vfl.jobs import part_ranges
    from vfl.scorecard import Scorecard

    rng = np.random.default_rng(25)
    names = trained.guest_part.features
    lo, hi = part_ranges(trained.guest_part).accepted_ranges()
    known = list(trained.host.ids)
    n = 10_000
    X = rng.uniform(lo, hi, size=(n, len(names)))
    X[:50] = lo  # edge: every feature at the low end of its accepted range
    X[50:100] = hi  # edge: the high end
    X[100:600][rng.random((500, len(names))) < 0.3] = np.nan  # edge: missing values
    wide = X.copy()
    wide[600:700] = hi * 10 + 1  # edge: far out of range (policy clip only)
    ids = [known[i % len(known)] for i in range(n)]
    ids[700:800] = [f"stranger-{i}" for i in range(100)]  # edge: unknown to the host
    card = Scorecard(600, 50, 20)
    host = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                      limits=ServeLimits(max_ids_per_request=500, requests_per_second=1e6,
                                         burst=10**6))
    for policy, values in (("refuse", X), ("clip", wide)):
        scorer = GuestScorer(trained.guest_part, [LocalHost(host)], scorecard=card,
                             range_policy=policy, ids_per_host_request=500)
        apps = [Applicant(c, dict(zip(names, row.tolist(), strict=True)))
                for c, row in zip(ids, values, strict=True)]
        out = []
        for i in range(0, n, 500):
            out += scorer.decide(apps[i:i + 500])
        p = np.array([d.probability for d in out])
        s = np.array([d.score for d in out])
        assert np.array_equal(s, card.decision_score(p))
        order = np.argsort(p)
        assert np.all(np.diff(s[order]) <= 0)  # a higher probability never scores higher
        assert sum(not d.host_features_available for d in out) == 100
        if policy == "clip":
            assert all(d.out_of_range for d in out[600:700])
        # the points tables' total explains the score within the rounding and binning gap
        gap = np.abs(np.array([d.points_total for d in out]) - s)
        assert np.median(gap) < 15, np.median(gap)
