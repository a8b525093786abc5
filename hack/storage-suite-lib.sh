# Kubernetes' external-storage suite for this driver: the e2e.test binary, agnhost (a Go
# program its pods run) and the ginkgo CLI (parallel runs), all from the same wrapper module
# as the cluster's Kubernetes (build_kubernetes in hack/cluster-lib.sh). Sourced by
# hack/cluster-lib.sh, never executed. Each build is cached behind a stamp, like the others.

SUITE_BIN="$CLUSTER_CACHE/k8s-$K8S_VERSION/suite"
K8S_WRAPPER="$CLUSTER_CACHE/k8s-$K8S_VERSION"
# The agnhost image the suite's pods use (test/utils/image/manifest.go of $K8S_VERSION).
AGNHOST_IMAGE="${AGNHOST_IMAGE:-registry.k8s.io/e2e-test-images/agnhost:2.66.1}"

# The version every Kubernetes program reports (a module build has no git tree to stamp it).
k8s_version_ldflags() {
    local minor="${K8S_VERSION#v1.}" pkg ldflags=""
    minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$ldflags"
}

# The wrapper module also names the suite's packages (a file of its own: build_kubernetes
# rewrites tools.go), so `go mod tidy` keeps their dependencies.
suite_wrapper_module() {
    [ -f "$K8S_WRAPPER/go.mod" ] || build_kubernetes
    local tools="$K8S_WRAPPER/tools_suite.go"
    if [ ! -f "$tools" ]; then
        cat > "$tools.tmp" <<'EOF'
//go:build tools

package tools

// The external-storage suite and the program its pods run.
import (
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
EOF
        mv "$tools.tmp" "$tools"
        rm -f "$K8S_WRAPPER/.suite-tidy"
    fi
    if [ ! -f "$K8S_WRAPPER/.suite-tidy" ] || [ "$K8S_WRAPPER/go.mod" -nt "$K8S_WRAPPER/.suite-tidy" ]; then
        log "adding the storage suite's packages to the Kubernetes wrapper module"
        (cd "$K8S_WRAPPER" && go mod tidy -e > "$K8S_WRAPPER/tidy-suite.log" 2>&1) ||
            die "go mod tidy of $K8S_WRAPPER failed (see $K8S_WRAPPER/tidy-suite.log)"
        touch "$K8S_WRAPPER/.suite-tidy"
    fi
}

# suite_build NAME COMMAND...: COMMAND (run in the wrapper module) writes $SUITE_BIN/NAME.new,
# which then replaces NAME; skipped while NAME's stamp exists.
suite_build() {
    local name="$1" stamp="$SUITE_BIN/.$1-$K8S_VERSION-1"
    shift
    [ -f "$stamp" ] && [ -x "$SUITE_BIN/$name" ] && return 0
    command -v go >/dev/null || die "go is needed to build $name"
    suite_wrapper_module
    mkdir -p "$SUITE_BIN"
    local start=$SECONDS
    log "building $name ($K8S_VERSION)"
    (cd "$K8S_WRAPPER" && CGO_ENABLED=0 "$@") || die "building $name failed"
    mv "$SUITE_BIN/$name.new" "$SUITE_BIN/$name"
    touch "$stamp"
    log "built $name in $((SECONDS - start))s"
}

# agnhost: the image's entrypoint, static (the image is busybox plus this program).
build_agnhost() {
    suite_build agnhost go build -trimpath -ldflags "$(k8s_version_ldflags)" \
        -o "$SUITE_BIN/agnhost.new" k8s.io/kubernetes/test/images/agnhost
}

# e2e.test: the test/e2e package as a test binary (about 2 minutes on a warm Go cache).
build_e2e_test() {
    suite_build e2e.test go test -c -trimpath -ldflags "$(k8s_version_ldflags)" \
        -o "$SUITE_BIN/e2e.test.new" k8s.io/kubernetes/test/e2e
}

# The ginkgo CLI at the version Kubernetes' go.mod requires (its -p runs the suite's specs
# in parallel processes).
build_ginkgo() {
    local dir version
    dir="$(go_module_dir "k8s.io/kubernetes@$K8S_VERSION")"
    version="$(awk '$1 == "github.com/onsi/ginkgo/v2" { print $2; exit }' "$dir/go.mod")"
    [ -n "$version" ] || die "no github.com/onsi/ginkgo/v2 in $dir/go.mod"
    GINKGO="$(go_tool ginkgo github.com/onsi/ginkgo/v2/ginkgo "$version")"
    [ -n "$GINKGO" ] || die "ginkgo $version could not be built"
}

build_storage_suite() {
    build_kubernetes
    build_agnhost
    build_e2e_test
    build_ginkgo
}

# The agnhost image: busybox (a shell and the usual commands: the suite runs scripts in
# agnhost containers too) with the program at /agnhost, its entrypoint, `pause` by default.
agnhost_image_archive() {
    "$ROOT/hack/images" binary --busybox --cmd pause "$AGNHOST_IMAGE" "$SUITE_BIN/agnhost" /agnhost
}
