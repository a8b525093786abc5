"""Python stubs generated from proto/csi.proto by grpcio-tools (see hack/gen-proto)."""
