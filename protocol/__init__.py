"""The wire protocol both ends share: the generated protobuf/gRPC modules (gen) and the tensor codec."""
