# Shared set-up for hack/ scripts: host packages, a virtualenv, Go tools.
# Sourced, not executed. Everything here is idempotent and quick when already done.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
# Go programs are built once per machine, outside the clone (hack/go-lib.sh).
export GOBIN="${GOBIN:-/var/cache/localvol-csi/go-bin}"
export GOFLAGS="${GOFLAGS:--modcacherw}"

# --- pinned versions of what is built from the Go module proxy (hack/go-lib.sh) ----------
CSI_SANITY_VERSION="${CSI_SANITY_VERSION:-v5.6.0}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
# The Helm CLI the chart tests run, and the Prometheus Operator whose CRDs (in its module,
# example/prometheus-operator-crd) check deploy/monitoring.
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
# The test cluster's Kubernetes (its staging modules at the matching v0 version) and the CSI
# sidecars deploy/ names; the snapshotter's also gives the snapshot CRDs.
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
K8S_STAGING_VERSION="${K8S_STAGING_VERSION:-v0.37.2}"
PROVISIONER_VERSION="${PROVISIONER_VERSION:-v6.4.0}"
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.7.0}"
RESIZER_VERSION="${RESIZER_VERSION:-v2.3.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}"
# The kind node image's etcd and CoreDNS (hack/kind-image-lib.sh), built in the module of every
# Go program (hack/go-lib.sh). CoreDNS at the version kubeadm of $K8S_VERSION names; etcd at
# the release of etcd's client that module links (ensure_go_module checks), a patch release
# of the one kubeadm names (the image build checks the minor) under the tag kubeadm looks for.
ETCD_VERSION="${ETCD_VERSION:-v3.7.2}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.6}"

log() { printf '==> %s\n' "$*" >&2; }

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# timed WHAT COMMAND...: run COMMAND (a function or a program) and, when LOCALVOL_TIMINGS
# names a file, append its start, end and WHAT there (hack/timings prints them). A failing
# COMMAND fails as it would untimed.
timed() {
    local what="$1" start
    shift
    start="$EPOCHREALTIME"
    "$@"
    [ -z "${LOCALVOL_TIMINGS:-}" ] ||
        printf '%s\t%s\t%s\n' "$start" "$EPOCHREALTIME" "$what" >> "$LOCALVOL_TIMINGS"
}

# install_packages PACKAGE...: apt-get install what is given (root only; others are told).
install_packages() {
    [ $# -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing host packages ($*); run as root to install them"
        return 0
    fi
    command -v apt-get >/dev/null || die "missing host packages ($*) and no apt-get to install them"
    log "installing host packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# The packages of the host programs the driver runs that are missing here: the one list,
# csi/host/tools.py, read as a file (no venv is needed yet).
missing_driver_packages() {
    python3 - "$ROOT/csi/host/tools.py" <<'PY'
import shutil, sys
tools: dict = {}
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), tools)
print(" ".join(sorted({p for t, p in tools["HOST_TOOLS"].items() if not shutil.which(t)})))
PY
}

# ensure_host_packages [TOOL:PACKAGE...]: what running the driver needs from the host, and
# the packages of the given tools that are missing, in one apt-get run.
ensure_host_packages() {
    local missing pair
    read -ra missing <<< "$(missing_driver_packages)"
    for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
    install_packages "${missing[@]}"
}

# What the tests need besides: the Docker volume plugin's (Podman and its Docker-compatible
# API, runc), hack/bench compare's (strace counts system calls) and the guest tier's (a
# User-Mode Linux kernel with project quotas, tests/guest; setpriv drops a pod writer's
# capabilities there).
ensure_test_packages() {
    ensure_host_packages strace:strace podman:podman runc:runc linux.uml:user-mode-linux \
        setpriv:util-linux
}

# ensure_wheelhouse [EXTRA]: prints a directory outside the clone holding a wheel of every
# dependency of the package (with EXTRA's) and of its build, made once per pyproject.toml
# and Python: a clean clone's venv then installs from local wheels in seconds, where
# resolving, downloading and unpacking from the index took a minute.
WHEELHOUSE_ROOT="${WHEELHOUSE_ROOT:-/var/cache/localvol-csi/wheels}"
ensure_wheelhouse() {
    local extra="${1:-}" key dir
    key="$( { python3 -c 'import sys; print(sys.version)'; cat "$ROOT/pyproject.toml"; } |
        sha256sum | cut -c1-16)"
    dir="$WHEELHOUSE_ROOT/${extra:-runtime}-$key"
    if [ ! -f "$dir/.complete" ]; then
        log "collecting wheels into $dir"
        # One wheelhouse per EXTRA: an older pyproject.toml's goes.
        rm -rf "$WHEELHOUSE_ROOT/${extra:-runtime}-"* && mkdir -p "$dir"
        local -a build
        mapfile -t build < <(python3 -c 'import sys, tomllib
print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"], sep="\n")' \
            "$ROOT/pyproject.toml")
        "$VENV/bin/pip" wheel -q --disable-pip-version-check -w "$dir" \
            "$ROOT${extra:+[$extra]}" "${build[@]}" >&2
        rm -f "$dir"/localvol_csi-*.whl
        touch "$dir/.complete"
    fi
    printf '%s\n' "$dir"
}

# ensure_venv [EXTRA]: the package installed (editable) into $VENV, with the optional
# dependencies EXTRA of pyproject.toml ("test": the tests' and the hack scripts'); without
# EXTRA only what the driver imports. Redone when pyproject.toml is newer than its stamp.
ensure_venv() {
    local extra="${1:-}" stamp="$VENV/.installed${1:+-$1}"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    # The test extra includes the runtime: its stamp does for both.
    if [ -z "$extra" ] && [ -f "$VENV/.installed-test" ] && [ "$VENV/.installed-test" -nt "$ROOT/pyproject.toml" ]; then
        stamp="$VENV/.installed-test"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        log "installing the package${extra:+ and its $extra dependencies} into $VENV"
        local wheels
        wheels="$(ensure_wheelhouse "$extra")"
        # From the wheelhouse only; no bytecode compiled now: what is imported is compiled
        # when it first is.
        "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile \
            --no-index --find-links "$wheels" -e "$ROOT${extra:+[$extra]}"
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# The Go programs the tests run beside the cluster's (hack/go-lib.sh builds them).
GO_TOOLS=(csi-sanity kustomize helm)

ensure_go_tools() {
    if ! command -v go >/dev/null; then
        log "go is not installed: csi-sanity, kustomize and helm cannot be built (their tests skip, or fail under CI=true)"
        return 0
    fi
    go_programs "${GO_TOOLS[@]}"
    export CSI_SANITY="$GOBIN/csi-sanity" KUSTOMIZE="$GOBIN/kustomize" HELM="$GOBIN/helm"
}

# --- Kubernetes tooling -------------------------------------------------------------------
KIND_CLUSTER="${KIND_CLUSTER:-localvol}"
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

# The snapshot CRDs are upstream's API definitions: fetched from the Go module proxy at
# install time, never copied into this repository. Prints the CRD directory.
snapshot_crd_dir() {
    command -v go >/dev/null || die "go is needed to fetch the snapshot CRDs (module github.com/kubernetes-csi/external-snapshotter/client/v8)"
    local dir
    dir="$(cd /tmp && go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    [ -d "$dir/config/crd" ] || die "no config/crd in $dir"
    echo "$dir/config/crd"
}

source "$ROOT/hack/go-lib.sh"
