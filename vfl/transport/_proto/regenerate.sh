#!/usr/bin/env bash
# Regenerate the committed gRPC stubs from protocols/proto (needs grpcio-tools).
# Usage: regenerate.sh [OUT_DIR]   (default: this folder)
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$root/vfl/transport/_proto}"
tmp="$(mktemp -d)"
python -m grpc_tools.protoc -I "$root/protocols/proto" \
  --python_out="$tmp" --grpc_python_out="$tmp" --pyi_out="$tmp" \
  "$root/protocols/proto/vfl/v1/transport.proto"
for f in transport_pb2.py transport_pb2.pyi transport_pb2_grpc.py; do
  # package-relative import, so the stubs live inside vfl/transport/_proto
  sed -e 's/^from vfl\.v1 import transport_pb2/from . import transport_pb2/' \
    "$tmp/vfl/v1/$f" > "$out/$f"
done
rm -rf "$tmp"
