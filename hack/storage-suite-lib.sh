# Kubernetes' external-storage suite for this driver: the e2e.test binary (the storage
# tests alone: hack/go/storagesuite), agnhost (a Go program its pods run) and the ginkgo
# CLI (parallel runs), all from the module of every Go program (hack/go-lib.sh), so the
# CLI is the ginkgo version e2e.test links. Sourced by hack/kind-lib.sh, never executed.

# The agnhost image the suite's pods use (test/utils/image/manifest.go of $K8S_VERSION).
AGNHOST_IMAGE="${AGNHOST_IMAGE:-registry.k8s.io/e2e-test-images/agnhost:2.66.1}"

build_storage_suite() {
    go_programs ginkgo agnhost
    go_test_binary e2e.test ./storagesuite
}

# The agnhost image: busybox (a shell and the usual commands: the suite runs scripts in
# agnhost containers too) with the program at /agnhost, its entrypoint, `pause` by default.
agnhost_image_archive() {
    "$ROOT/hack/images" binary --busybox --cmd pause "$AGNHOST_IMAGE" "$GOBIN/agnhost" /agnhost
}
