"""Python stubs generated from proto/csi.proto and proto/pluginregistration.proto by
grpcio-tools (see hack/gen-proto)."""
