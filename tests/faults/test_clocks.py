"""Issue 13: clock skew between the parties is irrelevant to a job.

No message carries a time, and every wait, timeout, grace and deadline of vfl is measured on
the monotonic clock (gRPC's own call deadlines are relative timeouts on the wire). This test
pins the few places that read the wall clock at all, so that a new one (a timestamp in a
message, a deadline on ``time.time()``) fails here and must be argued for:

* certificates: issuing them, checking a party's own and a pinned peer's validity (a clock
  outside a certificate's validity must fail; certificates start 5 minutes early, so a
  skew of less than that never matters to certificates issued by ``vfl certs``);
* the creation time written into a model part (informational);
* the demo's job id.

A run with skewed clocks needs a whole-process fake clock: shifting only Python's
``time.time`` breaks gRPC (its Python layer turns a timeout into an absolute time that its C
core reads against the real clock), and libfaketime hangs timed waits on this machine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vfl

#: (module, enclosing function) → why it reads the wall clock
ALLOWED = {
    ("certs.py", "make_ca"): "certificate validity window",
    ("certs.py", "issue_party_cert"): "certificate validity window",
    ("certs.py", "issue_compute_cert"): "certificate validity window",
    ("certs.py", "_check_validity"): "is a certificate valid now",
    ("transport/grpc.py", "_pinned_leaf"): "is the pinned certificate valid now",
    ("model.py", "ModelPart"): "creation time of a model part (informational)",
    ("demo.py", "write_demo_job"): "the demo's job id",
    ("serving/host.py", "HostScorer"): "a host's daily budget (its UTC day) and audit-log "
                                       "timestamps: local records, never sent",
    ("serving/auth.py", "ClientRegistry"): "API clients' daily quotas (the UTC day), Retry-After "
                                           "until midnight, audit-trail timestamps: local",
    ("progress.py", "LineProgress"): "timestamps of progress lines in a log: local, never sent",
}

_WALL = {("time", "time"), ("time", "time_ns"), ("datetime", "now"), ("datetime", "utcnow"),
         ("date", "today"), ("dt.datetime", "now")}


def _reads(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function or class, line) of every wall-clock read in ``tree``."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                              | ast.ClassDef) and scope == "<module>"
                     else scope)
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                owner = ast.unparse(child.func.value)
                if (owner, child.func.attr) in _WALL:
                    found.append((scope, child.lineno))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_only_the_known_places_read_the_wall_clock():
    root = Path(vfl.__file__).parent
    seen = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for scope, line in _reads(ast.parse(path.read_text(), filename=rel)):
            seen[(rel, scope)] = line
    unexpected = {k: v for k, v in seen.items() if k not in ALLOWED}
    assert not unexpected, (
        "new wall-clock reads (a timestamp on the wire or a deadline on time.time() would "
        f"make clock skew matter; use time.monotonic()): {unexpected}")
    # the allow-list is not stale either: each entry still reads the clock
    assert set(ALLOWED) <= set(seen), set(ALLOWED) - set(seen)


def test_the_scan_finds_a_wall_clock_deadline():
    bad = ast.parse("import time\ndef wait():\n    end = time.time() + 5\n")
    assert _reads(bad) == [("wait", 3)]
