"""Generated gRPC stubs (do not edit; see regenerate.sh)."""
