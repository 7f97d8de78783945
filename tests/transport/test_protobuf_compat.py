"""The generated protobuf stubs load and work on every protobuf runtime that pyproject allows.

The stubs come from one protoc (see vfl/transport/_proto/regenerate.sh), but they must run on
the runtime another package may have pinned (openmined-psi pulls protobuf 6.x, for example).
These tests run on whatever runtime is installed; .ci/run also runs them on the lowest allowed one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from vfl.transport._proto import transport_pb2 as pb
from vfl.transport._proto import transport_pb2_grpc as pb_grpc

PROTO_DIR = Path(pb.__file__).resolve().parent
ROOT = PROTO_DIR.parents[2]

# What the generated module may use of google.protobuf: what every runtime since 3.20 provides.
ALLOWED_IMPORTS = {
    "google.protobuf.descriptor",
    "google.protobuf.descriptor_pool",
    "google.protobuf.symbol_database",
    "google.protobuf.internal.builder",
}

# Frame(job="j1", sender="guest", receiver="host", seq=300, index=1, total=2, data=b"\x00\xff"),
# encoded by hand from transport.proto: (field << 3 | wire type), then length or varint.
FRAME_WIRE = (b"\x0a\x02j1" b"\x12\x05guest" b"\x1a\x04host" b"\x20\xac\x02" b"\x28\x01" b"\x30\x02"
              b"\x3a\x02\x00\xff")


def _sample_frame() -> pb.Frame:
    return pb.Frame(job="j1", sender="guest", receiver="host", seq=300, index=1, total=2,
                    data=b"\x00\xff")


def _imported_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_generated_module_has_no_runtime_version_pin():
    # protoc's gencode refuses any runtime older than itself; regenerate.sh takes that check out
    source = (PROTO_DIR / "transport_pb2.py").read_text()
    assert "ValidateProtobufRuntimeVersion" not in source
    assert "runtime_version" not in source
    imported = _imported_modules(source)
    assert imported - ALLOWED_IMPORTS == set(), (
        f"the generated module now needs {sorted(imported - ALLOWED_IMPORTS)} of the protobuf runtime: "
        "check the lowest protobuf in pyproject still has it (.ci/run tests that version)")


def test_frame_round_trips_with_the_documented_wire_bytes():
    frame = _sample_frame()
    assert frame.SerializeToString() == FRAME_WIRE
    back = pb.Frame.FromString(FRAME_WIRE)
    assert back == frame
    assert (back.job, back.sender, back.receiver, back.seq, back.index, back.total, back.data) == (
        "j1", "guest", "host", 300, 1, 2, b"\x00\xff")
    assert pb.DeliverReply.FromString(pb.DeliverReply(bytes=2**40).SerializeToString()).bytes == 2**40
    reply = pb.PingReply.FromString(pb.PingReply(party="host", job="j1").SerializeToString())
    assert (reply.party, reply.job) == ("host", "j1")


def test_service_descriptor_matches_the_grpc_stubs():
    service = pb.DESCRIPTOR.services_by_name["Party"]
    assert service.full_name == "vfl.v1.Party"
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
    assert methods == {"Deliver": ("vfl.v1.Frame", "vfl.v1.DeliverReply"),
                       "Ping": ("vfl.v1.PingRequest", "vfl.v1.PingReply")}
    assert callable(pb_grpc.PartyStub) and callable(pb_grpc.add_PartyServicer_to_server)


def test_typing_stub_lists_the_fields_of_every_message():
    # transport_pb2.pyi is what mypy sees; it must describe the messages the runtime builds
    tree = ast.parse((PROTO_DIR / "transport_pb2.pyi").read_text())
    declared: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                        and stmt.targets[0].id == "__slots__"):
                    declared[node.name] = ast.literal_eval(stmt.value)
    runtime = {name: tuple(f.name for f in desc.fields)
               for name, desc in pb.DESCRIPTOR.message_types_by_name.items()}
    assert declared == runtime


def _run_isolated(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **env})


def test_stubs_load_on_a_runtime_older_than_their_protoc():
    # Pretend the runtime is 5.26.0 (older than the 7.35.1 protoc that generated the stubs):
    # with protoc's check left in, this import raises VersionError.
    proc = _run_isolated("""
        try:
            from google.protobuf import runtime_version as rv
        except ImportError:  # runtimes before 5.27 have no check to fool
            rv = None
        else:
            rv.MAJOR, rv.MINOR, rv.PATCH = 5, 26, 0
        from vfl.transport._proto import transport_pb2 as pb
        frame = pb.Frame(job="j1", seq=300)
        assert pb.Frame.FromString(frame.SerializeToString()) == frame
        print("ok", rv is not None)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


def test_stubs_load_on_the_pure_python_backend():
    # the generated module has a branch that only the pure-Python backend runs
    proc = _run_isolated(f"""
        from google.protobuf.internal import api_implementation
        from vfl.transport._proto import transport_pb2 as pb
        frame = pb.Frame.FromString({FRAME_WIRE!r})
        assert frame.SerializeToString() == {FRAME_WIRE!r}, frame
        assert frame.seq == 300 and frame.data == b"\\x00\\xff", frame
        print(api_implementation.Type())
    """, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "python"

