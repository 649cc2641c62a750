"""Generated protobuf/gRPC stubs for the wfe.persistence.v1 contract (see protos/)."""
