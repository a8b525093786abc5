# Shared set-up for hack/ scripts: host packages, a virtualenv, Go tools.
# Sourced, not executed. Everything here is idempotent and quick when already done.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CSI_SANITY_VERSION="${CSI_SANITY_VERSION:-v5.6.0}"
# Go tools are built once per machine, outside the clone.
export GOBIN="${GOBIN:-/var/cache/localvol-csi/go-bin}"
export GOFLAGS="${GOFLAGS:--modcacherw}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_host_packages() {
    local missing=()
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
    command -v losetup >/dev/null || missing+=(mount)
    command -v blkid >/dev/null || missing+=(util-linux)
    command -v strace >/dev/null || missing+=(strace)  # hack/bench compare counts syscalls
    # The Docker volume plugin's tests: Podman (and its Docker-compatible API), runc.
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing host packages (${missing[*]}); run as root to install them"
        return 0
    fi
    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_venv() {
    local stamp="$VENV/.installed"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        log "installing the package and its test dependencies"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e "$ROOT[test]"
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# go_tool NAME PACKAGE VERSION: build NAME once per version into $GOBIN; prints its path
# (nothing when Go is missing: the tests that need the tool then fail under CI=true).
go_tool() {
    local name="$1" package="$2" version="$3"
    if [ ! -x "$GOBIN/$name" ] || [ "$(cat "$GOBIN/.$name-version" 2>/dev/null)" != "$version" ]; then
        command -v go >/dev/null || { log "go is not installed; $name cannot be built"; return 0; }
        log "building $name $version into $GOBIN"
        mkdir -p "$GOBIN"
        go install "$package@$version" >&2
        echo "$version" > "$GOBIN/.$name-version"
    fi
    echo "$GOBIN/$name"
}

ensure_csi_sanity() {
    CSI_SANITY="$(go_tool csi-sanity github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity "$CSI_SANITY_VERSION")"
    export CSI_SANITY
}

# --- Kubernetes tooling -------------------------------------------------------------------
KIND_CLUSTER="${KIND_CLUSTER:-localvol}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.7.0}"
# The Helm CLI the chart tests run, and the Prometheus Operator whose CRDs (in its module,
# example/prometheus-operator-crd) check deploy/monitoring.
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
IMAGE="${IMAGE:-localvol-csi:dev}"

need_docker() {
    command -v docker >/dev/null || die "docker is not installed: kind runs Kubernetes nodes as docker containers (https://docs.docker.com/engine/install/)"
    docker info >/dev/null 2>&1 || die "docker is installed but no Docker engine answers (is the daemon running, and may this user use it?)"
}

need_kind() {
    if ! command -v kind >/dev/null; then
        command -v go >/dev/null || die "kind is not installed and there is no Go to build it: see https://kind.sigs.k8s.io/docs/user/quick-start/"
        log "installing kind $KIND_VERSION into $GOBIN"
        go install "sigs.k8s.io/kind@$KIND_VERSION"
        export PATH="$GOBIN:$PATH"
    fi
}

need_kubectl() {
    command -v kubectl >/dev/null || die "kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/"
}

ensure_kustomize() {
    KUSTOMIZE="$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")"
    export KUSTOMIZE
}

ensure_helm() {
    HELM="$(go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION")"
    export HELM
}

# The snapshot CRDs are upstream's API definitions: fetched from the Go module proxy at
# install time, never copied into this repository. Prints the CRD directory.
snapshot_crd_dir() {
    command -v go >/dev/null || die "go is needed to fetch the snapshot CRDs (module github.com/kubernetes-csi/external-snapshotter/client/v8)"
    local dir
    dir="$(cd /tmp && go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    [ -d "$dir/config/crd" ] || die "no config/crd in $dir"
    echo "$dir/config/crd"
}
