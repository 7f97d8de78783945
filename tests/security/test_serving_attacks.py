"""Attacks on a host's scoring service (protocols/specs/serving.md): the guest's requests,
mutated field by field within what the codec accepts, against the real gRPC server with
mutual TLS. Every mutation is answered or refused with a status that names the cause
(invalid, unknown model, limits); none crashes the handler (UNKNOWN/INTERNAL), and the
service answers an honest request afterwards."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfl.codec import Envelope, encode_envelope
from vfl.demo import free_ports
from vfl.serving.grpc import ScoringServer
from vfl.serving.host import HostModel, HostScorer, ServeLimits
from vfl.serving.messages import PartialScoreRequest

from ..serving.conftest import pki, trained  # noqa: F401 - fixtures
from ..transport.conftest import tls
from .wire_strategies import mutation_of

ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED}


@pytest.fixture(scope="module")
def server_and_call(trained, pki):  # noqa: F811 - the fixtures imported above
    scorer = HostScorer([HostModel(trained.host_part, trained.host)], guest="guest",
                        limits=ServeLimits(requests_per_second=1e6, burst=10**6,
                                           daily_id_budget=10**9))
    (port,) = free_ports(1)
    server = ScoringServer(scorer, party="host1", listen=f"127.0.0.1:{port}",
                           tls=tls(pki, "host1"))
    ca, cert, key = tls(pki, "guest").read()
    ch = grpc.secure_channel(f"127.0.0.1:{server.port}", grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert),
        options=[("grpc.ssl_target_name_override", "host1")])
    yield server, ch.unary_unary("/vfl.v1.Scoring/PartialScore"), trained
    ch.close()
    server.stop()


def _status(call, body) -> grpc.StatusCode:
    try:
        call(encode_envelope(Envelope("serve", 0, "guest", "host1", body)), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_are_answered_or_refused_never_crash(server_and_call, data):
    server, call, model = server_and_call
    honest = PartialScoreRequest(model.host_part.model_id, model.host.ids[:3], 28.85)
    mutation = data.draw(mutation_of(honest))
    try:
        body = mutation.apply(honest)
    except Exception:  # noqa: BLE001 - a mutation the codec cannot even express
        return
    code = _status(call, body)
    assert code in ANSWERS, (mutation.describe(), code)
    assert _status(call, honest) == grpc.StatusCode.OK
