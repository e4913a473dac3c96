"""gRPC transport: servicers, interceptors, the server and gRPC core's process-wide knobs (core)."""
