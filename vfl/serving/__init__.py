"""Online scoring (``vfl serve``, ``protocols/specs/serving.md``).

* :mod:`vfl.serving.host`: a host's partial scores of single customers,
  looked up by ID from its feature table, with its rate limits, daily budget
  and audit log (pure logic, no network);
* :mod:`vfl.serving.grpc`: that scorer behind a gRPC method over mutual TLS,
  and the guest's client of it.
"""
