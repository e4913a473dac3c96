"""gRPC transport: generated protocol code (_gen), servicers and the server."""
