# Every Go program the tests and the test cluster run, built from one Go module of our own
# that requires each program's module at the version hack/lib.sh pins. One dependency graph
# for all of them: the packages they share (client-go, the API types, gRPC, protobuf...) are
# compiled once, and the Go build cache serves every later build of any subset, where one
# module per program compiled its own copy of each. Sourced by hack/lib.sh, never executed.
#
#   $GO_MODULE   the module (go.mod, go.sum, tools.go, and hack/go/*/ as packages of its
#                own), made again only when its key (the pins, those sources, this file's
#                recipe, Go's version) changes
#   $GOBIN       the programs, each beside a stamp holding the key it was built with

GO_MODULE="${GO_MODULE:-/var/cache/localvol-csi/go-module}"

# While we build, the compiler collects its garbage a quarter as often as by default: a
# build from an empty cache is a fifth quicker (client-go's clientset on this 2-core
# machine: 157 s at the default, 123 s), for a few hundred MB more per compile at a time.
# What is built is the same byte for byte, so no build key names it.
GO_BUILD_GOGC="${GO_BUILD_GOGC:-400}"

# NAME|PACKAGE: each program, built into $GOBIN/NAME. A package ./NAME is hack/go/NAME, a
# main of ours around another module: etcd and CoreDNS for the kind node image (the
# Kubernetes programs already link etcd's client and CoreDNS's Corefile parser, so in this
# graph both compile little of their own: from a module each, 1:13 and 2:08 on this
# machine; here 0:14 and 0:11). The storage suite's e2e.test is a test binary
# (go_test_binary) of hack/go/storagesuite.
GO_PROGRAMS=(
    "csi-sanity|github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
    "kustomize|sigs.k8s.io/kustomize/kustomize/v5"
    "helm|helm.sh/helm/v4/cmd/helm"
    "kube-apiserver|k8s.io/kubernetes/cmd/kube-apiserver"
    "kube-controller-manager|k8s.io/kubernetes/cmd/kube-controller-manager"
    "kube-scheduler|k8s.io/kubernetes/cmd/kube-scheduler"
    "kubelet|k8s.io/kubernetes/cmd/kubelet"
    "kube-proxy|k8s.io/kubernetes/cmd/kube-proxy"
    "kubectl|k8s.io/kubernetes/cmd/kubectl"
    "kubeadm|k8s.io/kubernetes/cmd/kubeadm"
    "agnhost|k8s.io/kubernetes/test/images/agnhost"
    "csi-provisioner|github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
    "csi-snapshotter|github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter"
    "snapshot-controller|github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
    "csi-resizer|github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer"
    "crictl|sigs.k8s.io/cri-tools/cmd/crictl"
    "ginkgo|github.com/onsi/ginkgo/v2/ginkgo"
    "etcd|./etcd"
    "coredns|./coredns"
)

# MODULE VERSION, one a line: what the module requires. The snapshotter's source tree
# replaces its client module with ./client; as a dependency that replace does not apply, so
# the client module of the same release is required instead. The ginkgo CLI comes at the
# version the graph selects, which is the one e2e.test links: the two must agree. etcd's
# server is the release of the client the graph selects (ensure_go_module checks), so the
# server and the modules it shares with that client are one release.
go_requirements() {
    cat <<REQ
k8s.io/kubernetes $K8S_VERSION
github.com/kubernetes-csi/csi-test/v5 $CSI_SANITY_VERSION
sigs.k8s.io/kustomize/kustomize/v5 $KUSTOMIZE_VERSION
helm.sh/helm/v4 $HELM_VERSION
github.com/kubernetes-csi/external-provisioner/v6 $PROVISIONER_VERSION
github.com/kubernetes-csi/external-snapshotter/v8 $SNAPSHOTTER_VERSION
github.com/kubernetes-csi/external-snapshotter/client/v8 $SNAPSHOTTER_VERSION
github.com/kubernetes-csi/external-resizer/v2 $RESIZER_VERSION
sigs.k8s.io/cri-tools $CRICTL_VERSION
go.etcd.io/etcd/server/v3 $ETCD_VERSION
github.com/coredns/coredns $COREDNS_VERSION
REQ
}

go_module_key() {
    {
        go_requirements
        echo "$K8S_STAGING_VERSION"
        printf '%s\n' "${GO_PROGRAMS[@]}"
        declare -f write_go_module go_ldflags k8s_version_ldflags
        cat "$ROOT"/hack/go/*/*.go
        GOTOOLCHAIN=local go version
    } | sha256sum | cut -c1-16
}

# go_module_dir MODULE@VERSION: the module's directory in the module cache (downloaded).
go_module_dir() {
    (cd / && go mod download -json "$1") |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))'
}

# write_go_module DIR: go.mod (the requirements; Kubernetes' staging modules pinned, since
# its own go.mod replaces them with directories of its source tree), tools.go (every
# program of another module, so `go mod tidy` keeps what they import) and our packages
# (hack/go/*/).
write_go_module() {
    local dir="$1" k8s
    k8s="$(go_module_dir "k8s.io/kubernetes@$K8S_VERSION")"
    {
        printf 'module localvol.dev/programs\n\ngo 1.26\n\n'
        go_requirements | awk '{print "require " $1 " " $2}'
        echo
        grep -oE '^\s+k8s\.io/[a-z0-9-]+ => \./staging' "$k8s/go.mod" |
            awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
    } > "$dir/go.mod"
    {
        printf '//go:build tools\n\n// Package tools names the programs this module builds.\npackage tools\n\nimport (\n'
        local entry
        for entry in "${GO_PROGRAMS[@]}"; do
            [[ "${entry#*|}" == ./* ]] || printf '\t_ "%s"\n' "${entry#*|}"
        done
        printf ')\n'
    } > "$dir/tools.go"
    cp -r "$ROOT"/hack/go/*/ "$dir/"
}

# The module, made (or made again) when its key changed.
ensure_go_module() {
    command -v go >/dev/null || die "go is needed to build the Go programs the tests run"
    local key
    key="$(go_module_key)"
    [ "$(cat "$GO_MODULE/.key" 2>/dev/null)" = "$key" ] && return 0
    log "resolving the Go module of every program ($GO_MODULE)"
    rm -rf "$GO_MODULE.new"
    mkdir -p "$GO_MODULE.new"
    write_go_module "$GO_MODULE.new"
    (cd "$GO_MODULE.new" && go mod tidy > tidy.log 2>&1) ||
        die "go mod tidy of $GO_MODULE.new failed (see $GO_MODULE.new/tidy.log)"
    local client
    client="$(cd "$GO_MODULE.new" && go list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)"
    [ "$client" = "$ETCD_VERSION" ] ||
        die "the programs link etcd's client $client; hack/lib.sh's ETCD_VERSION ($ETCD_VERSION) must be that release"
    echo "$key" > "$GO_MODULE.new/.key"
    rm -rf "$GO_MODULE"
    mv "$GO_MODULE.new" "$GO_MODULE"
    # What the builds before this module kept beside it: modules of their own.
    rm -rf "$(dirname "$GO_MODULE")"/k8s-v1.* "$(dirname "$GO_MODULE")"/{sidecars,go-etcd,go-coredns}
}

# The linker's flags for every program: no symbol table or debug information (smaller, and
# linked faster), and the version every Kubernetes program reports (a module build has no
# git tree to stamp it). With -trimpath, no path of this machine is kept either.
go_ldflags() {
    echo "-s -w $(k8s_version_ldflags)"
}

k8s_version_ldflags() {
    local minor="${K8S_VERSION#v1.}" pkg ldflags=""
    minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "${ldflags# }"
}

# go_program_package NAME: the package of NAME's row in GO_PROGRAMS.
go_program_package() {
    local entry
    for entry in "${GO_PROGRAMS[@]}"; do
        [ "${entry%%|*}" = "$1" ] && { echo "${entry#*|}"; return 0; }
    done
    die "no Go program $1 in GO_PROGRAMS (hack/go-lib.sh)"
}

# go_built NAME KEY: $GOBIN/NAME exists and was built from the module of KEY.
go_built() {
    [ -x "$GOBIN/$1" ] && [ "$(cat "$GOBIN/.$1-version" 2>/dev/null)" = "$2" ]
}

# go_programs NAME...: build the named programs that are missing or were built from another
# key, all in one `go build` (its packages compile in parallel, shared ones once).
go_programs() {
    ensure_go_module
    local key name packages=() names=()
    key="$(cat "$GO_MODULE/.key")"
    for name in "$@"; do
        go_built "$name" "$key" && continue
        names+=("$name")
        packages+=("$(go_program_package "$name")")
    done
    [ ${#names[@]} -eq 0 ] && return 0
    log "building ${names[*]}"
    mkdir -p "$GOBIN"
    # go build writes each program beside its final name and renames it into place: a
    # running one keeps the file it started from.
    (cd "$GO_MODULE" && CGO_ENABLED=0 GOGC="$GO_BUILD_GOGC" go build -trimpath -ldflags "$(go_ldflags)" -o "$GOBIN/" "${packages[@]}") ||
        die "building ${names[*]} failed"
    for name in "${names[@]}"; do echo "$key" > "$GOBIN/.$name-version"; done
}

# go_test_binary NAME PACKAGE: a test binary of a package of the module into $GOBIN/NAME.
go_test_binary() {
    local name="$1" package="$2" key
    ensure_go_module
    key="$(cat "$GO_MODULE/.key")"
    go_built "$name" "$key" && return 0
    log "building $name"
    mkdir -p "$GOBIN"
    (cd "$GO_MODULE" && CGO_ENABLED=0 GOGC="$GO_BUILD_GOGC" go test -c -trimpath -ldflags "$(go_ldflags)" \
        -o "$GOBIN/$name.new" "$package") || die "building $name failed"
    mv "$GOBIN/$name.new" "$GOBIN/$name"
    echo "$key" > "$GOBIN/.$name-version"
}
