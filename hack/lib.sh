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

ensure_csi_sanity() {
    if [ -x "$GOBIN/csi-sanity" ] && [ "$(cat "$GOBIN/.csi-sanity-version" 2>/dev/null)" = "$CSI_SANITY_VERSION" ]; then
        export CSI_SANITY="$GOBIN/csi-sanity"
        return 0
    fi
    command -v go >/dev/null || { log "go is not installed; csi-sanity cannot be built"; return 0; }
    log "building csi-sanity $CSI_SANITY_VERSION into $GOBIN"
    mkdir -p "$GOBIN"
    go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
    echo "$CSI_SANITY_VERSION" > "$GOBIN/.csi-sanity-version"
    export CSI_SANITY="$GOBIN/csi-sanity"
}
