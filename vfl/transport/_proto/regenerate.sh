#!/usr/bin/env bash
# Regenerate the committed gRPC stubs from protocols/proto.
# Usage: regenerate.sh [OUT_DIR]   (default: this folder)
#
# How the stubs are made, and why:
# * protoc is the one inside grpcio-tools, pinned in pyproject's [test]/[dev] extras
#   (grpcio-tools==1.85.1, protobuf gencode 7.35.1). tests/transport/test_grpc_security.py
#   reruns this script and fails when the committed files differ from its output.
# * The imports are rewritten to be package-relative, so the stubs live inside vfl/transport/_proto.
# * The gencode's runtime-version check is removed. protoc 27+ (protobuf 5.27+) starts every
#   *_pb2.py with `_runtime_version.ValidateProtobufRuntimeVersion(<gencode version>)`, which
#   raises VersionError on any runtime older than the protoc that generated it (runtimes 5.27 to
#   6.31 also reject, or warn about, gencode of another major). With it, vfl ran only on protobuf
#   >= 7.35.1, and a package that pins protobuf < 7 installed next to it (openmined-psi pulls 6.30)
#   made every party exit. Without the check the module only uses what every runtime since 3.20
#   has: it adds the serialized FileDescriptorProto to the default pool and builds the classes with
#   google.protobuf.internal.builder (3.19 lacks builder). Verified on 3.20.3 (pure Python), 4.21,
#   4.25, 5.26, 5.29, 6.30, 6.33, 7.34 and 7.36; pyproject allows protobuf >= 4.21.12 (upb wheels), < 8.
#   .ci/run runs the transport, networked and codec tests on the lowest version pyproject allows,
#   and tests/transport/test_protobuf_compat.py checks, on whatever runtime is installed, that the
#   stubs load (upb and pure-Python backends, and under a runtime that claims to be older than this
#   protoc) and that the module imports nothing else from protobuf.
#   An older protoc whose gencode has no check (grpcio-tools 1.64.3, protoc 26) is no alternative:
#   it requires protobuf >= 5.26.1, < 6, so the regeneration test could not run next to protobuf 7,
#   and it has no wheels for Python 3.13.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$root/vfl/transport/_proto}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m grpc_tools.protoc -I "$root/protocols/proto" \
  --python_out="$tmp" --grpc_python_out="$tmp" --pyi_out="$tmp" \
  "$root/protocols/proto/vfl/v1/transport.proto"
for f in transport_pb2.py transport_pb2.pyi transport_pb2_grpc.py; do
  # package-relative import, so the stubs live inside vfl/transport/_proto
  sed -e 's/^from vfl\.v1 import transport_pb2/from . import transport_pb2/' \
    -e '/^from google\.protobuf import runtime_version as _runtime_version$/d' \
    -e '/^_runtime_version\.ValidateProtobufRuntimeVersion($/,/^)$/c\
# (runtime-version check removed by vfl/transport/_proto/regenerate.sh: see there)' \
    "$tmp/vfl/v1/$f" > "$tmp/$f"
done
# A protoc that writes the check differently must not slip through with it.
if grep -n "runtime_version" "$tmp/transport_pb2.py"; then
  echo "regenerate.sh: could not remove the runtime-version check (protoc output changed?)" >&2
  exit 1
fi
for f in transport_pb2.py transport_pb2.pyi transport_pb2_grpc.py; do
  cp "$tmp/$f" "$out/$f"
done
