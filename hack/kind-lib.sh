# The kind cluster of deploy/kind/cluster.yaml, on Docker or on Podman: the one cluster of
# the project's scripts and tests. Sourced by hack/kind-up, hack/kind-down, hack/kind-engine
# and hack/storage-suite (after hack/lib.sh), never executed.
#
# Docker (where an engine answers): kind as its documentation has it, with kind's published
# node image, and the driver image built by `docker build`. Podman (no Docker engine, as on
# a machine without a registry): a Podman of our own (its configuration, storage and state
# under $KIND_PODMAN and $KIND_RUN, nothing of the host's Podman touched), the node image
# built here (hack/images build kind-node) and every image the cluster runs loaded into the
# nodes from archives. What Podman and its network stack add to the host is recorded first
# and removed by hack/kind-down.
#
#   KIND_PROVIDER   docker or podman (default: docker when an engine answers, else podman)
#   KIND_DATA       the host directory of the nodes' data roots (deploy/kind/cluster.yaml)
#   KIND_STORAGE_SUITE=1  (Podman) also load the images Kubernetes' storage suite runs
#
# The versions of Kubernetes and the sidecars are hack/lib.sh's; every Go program is built
# into $GOBIN from one module (hack/go-lib.sh).

# Every Go program the cluster and its tests run: Kubernetes' (kubectl for the scripts and
# tests; the rest go into the node image) with etcd and CoreDNS, the CSI sidecars deploy/
# names, crictl, and agnhost (the storage suite's image). One `go build`.
CLUSTER_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
    kubeadm etcd coredns csi-provisioner csi-snapshotter snapshot-controller csi-resizer crictl
    agnhost)

# e2e.test and ginkgo (Kubernetes' storage suite), from the same module.
source "$ROOT/hack/storage-suite-lib.sh"

# Sidecar images under the names deploy/ uses: name|binary.
SIDECAR_IMAGES=(
    "registry.k8s.io/sig-storage/csi-provisioner:$PROVISIONER_VERSION|csi-provisioner"
    "registry.k8s.io/sig-storage/csi-snapshotter:$SNAPSHOTTER_VERSION|csi-snapshotter"
    "registry.k8s.io/sig-storage/snapshot-controller:$SNAPSHOTTER_VERSION|snapshot-controller"
    "registry.k8s.io/sig-storage/csi-resizer:$RESIZER_VERSION|csi-resizer"
)

# The sidecars' images, from the programs in $GOBIN.
sidecar_image_archives() {
    local entry name
    for entry in "${SIDECAR_IMAGES[@]}"; do
        name="${entry#*|}"
        "$ROOT/hack/images" binary "${entry%%|*}" "$GOBIN/$name" "/$name"
    done
}

# host_reading DIR PATH...: the host's firewall, nft tables and sysctls as they are now, and
# which of PATHs exist, into DIR (what a teardown compares with and restores to).
host_reading() {
    local dir="$1" path
    shift
    mkdir -p "$dir"
    iptables-save > "$dir/iptables"
    ip6tables-save > "$dir/ip6tables" 2>/dev/null || true
    nft list tables > "$dir/nft-tables" 2>/dev/null || true
    sysctl -a 2>/dev/null | LC_ALL=C sort > "$dir/sysctl"
    for path in "$@"; do
        if [ -e "$path" ]; then echo "$path"; fi
    done > "$dir/existing-paths"
}

KIND_DATA=/var/tmp/localvol-csi-kind
KIND_CONFIG="$ROOT/deploy/kind/cluster.yaml"
KIND_PODMAN="${KIND_PODMAN:-/var/cache/localvol-csi/kind-podman}"
KIND_RUN="${KIND_RUN:-/run/localvol-kind}"
KIND_BASELINE="$KIND_RUN/baseline"
KIND_CONTEXT="kind-$KIND_CLUSTER"
# The sysctls Podman's network stack writes (forwarding on), restored in this order: the
# first two make the kernel rewrite every interface's forwarding too.
KIND_SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding 'net.ipv4.conf.*.forwarding'
    'net.ipv6.conf.*.forwarding' 'net.ipv4.conf.*.accept_redirects'
    'net.ipv6.conf.*.accept_redirects')

kind_provider() {
    if [ -n "${KIND_PROVIDER:-}" ]; then
        case "$KIND_PROVIDER" in docker | podman) echo "$KIND_PROVIDER" ;;
            *) die "KIND_PROVIDER is docker or podman, not $KIND_PROVIDER" ;; esac
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        echo docker
    else
        echo podman
    fi
}

# kind: $KIND_VERSION in $GOBIN (built from the module proxy when Go is here), else the
# user's own on PATH.
ensure_kind() {
    if [ "$("$GOBIN/kind" version 2>/dev/null | awk '{print $2}')" != "$KIND_VERSION" ]; then
        if ! command -v go >/dev/null; then
            command -v kind >/dev/null ||
                die "kind is not installed and there is no Go to build it: see https://kind.sigs.k8s.io/docs/user/quick-start/"
            return 0
        fi
        log "building kind $KIND_VERSION into $GOBIN"
        (cd / && go install "sigs.k8s.io/kind@$KIND_VERSION")
    fi
    export PATH="$GOBIN:$PATH"
}

# The environment of our own Podman: its configuration files, and kind told to use it.
podman_env() {
    local conf="$KIND_RUN/podman"
    mkdir -p "$conf" "$KIND_PODMAN"
    # Limits within the host's hard limits (conmon's nproc limit here is 32768; Podman
    # would otherwise ask for more, and runc fails to set it).
    cat > "$conf/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$KIND_RUN/podman/events.log"
runtime = "runc"
# Locks in files under tmp_dir, not in the host's shared memory segment that every other
# rootful Podman here uses (/dev/shm/libpod_lock): the two never take each other's locks.
# libpod's database stays where the storage root implies (no static_dir): the cleanup that
# conmon runs when a container exits is told only the root, and, finding no database there,
# fails, so Podman waits out conmon's timeout (20 s) on every container that stops.
lock_type = "file"
tmp_dir = "$KIND_RUN/podman/tmp"
volume_path = "$KIND_PODMAN/volumes"

[network]
network_backend = "netavark"
network_config_dir = "$KIND_PODMAN/networks"
EOF
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
        "$KIND_PODMAN/storage" "$KIND_RUN/podman/storage" > "$conf/storage.conf"
    # No registry: every image comes from an archive.
    echo 'unqualified-search-registries = []' > "$conf/registries.conf"
    export CONTAINERS_CONF="$conf/containers.conf" CONTAINERS_STORAGE_CONF="$conf/storage.conf" \
        CONTAINERS_REGISTRIES_CONF="$conf/registries.conf" KIND_EXPERIMENTAL_PROVIDER=podman
}

# Host paths our Podman and its network stack may make, whatever our configuration says:
# rootful netavark keeps its IPAM database and aardvark's files in /run/containers/networks,
# a fixed path. A path inside another is listed on its own: where another Podman made
# /run/containers before the cluster, that stays, and the networks directory the cluster
# added goes.
PODMAN_HOST_PATHS=(/lib/modules /run/netns /run/containers /run/containers/networks)

# What the host looks like before our Podman touches it: taken once per cluster.
record_kind_baseline() {
    [ -f "$KIND_BASELINE/.done" ] && return 0
    host_reading "$KIND_BASELINE" "${PODMAN_HOST_PATHS[@]}" /sys/fs/cgroup/*/libpod_parent
    touch "$KIND_BASELINE/.done"
}

existed_before() { grep -qxF "$1" "$KIND_BASELINE/existing-paths" 2>/dev/null; }

# remove_added_paths PATH...: each path that is there now and was not in the baseline goes,
# the deepest first; /run/netns after the namespaces mounted under it, /lib/modules only
# while empty (the host may fill it meanwhile).
remove_added_paths() {
    local path
    for path in $(printf '%s\n' "$@" | LC_ALL=C sort -r); do
        { [ -e "$path" ] && ! existed_before "$path"; } || continue
        case "$path" in
            /run/netns) "$VENV/bin/python" "$ROOT/hack/cluster-host" umount-under /run/netns
                rm -rf --one-file-system /run/netns ;;
            /lib/modules) rmdir /lib/modules 2>/dev/null || true ;;
            *) rm -rf --one-file-system "$path" ;;
        esac
    done
}

# The host paths deploy/kind/cluster.yaml mounts as data roots, made before the nodes start
# (Podman does not make a missing source).
kind_data_roots() {
    awk '$1 == "-" && $2 == "hostPath:" && index($3, "'"$KIND_DATA"'/") == 1 { print $3 }' \
        "$KIND_CONFIG"
}

# The node image of this project (Podman), loaded into our Podman when its archive changed.
load_node_image() {
    local archive ref key
    archive="$("$ROOT/hack/images" build kind-node)"
    { read -r key; read -r ref; } < "$archive.inputs"
    if [ "$(cat "$KIND_PODMAN/node-image.key" 2>/dev/null)" != "$key" ] ||
        ! podman image exists "$ref"; then
        log "loading $ref into Podman"
        podman load -q -i "$archive" >&2
        echo "$key" > "$KIND_PODMAN/node-image.key"
    fi
    echo "$ref"
}

# What deploy/overlays/kind and the examples run, into every node: the driver, the sidecars
# and busybox (the node image has the pause image already); with KIND_STORAGE_SUITE=1 also
# the images the storage suite's pods name (hack/images' default set, agnhost). Podman's equivalent of `kind
# load image-archive`: each node's containerd, reached through the node's root from here,
# imports what it does not hold yet (the same inputs are not imported twice), all nodes at
# once.
load_cluster_images() {
    local archives node addresses=()
    archives="$("$ROOT/hack/images" build $(node_image_names) && sidecar_image_archives)"
    if [ "${KIND_STORAGE_SUITE:-}" = 1 ]; then archives+=" $(agnhost_image_archive)"; fi
    for node in $(kind get nodes --name "$KIND_CLUSTER"); do
        addresses+=(--address "/proc/$(podman inspect --format '{{.State.Pid}}' "$node")/root/run/containerd/containerd.sock")
    done
    "$ROOT/hack/images" import "${addresses[@]}" $archives >&2
}

# The images of hack/images loaded into the nodes (all of its default set for the storage
# suite; hack/images with no name builds that set).
node_image_names() {
    if [ "${KIND_STORAGE_SUITE:-}" != 1 ]; then echo localvol-csi busybox; fi
}

kind_cluster_exists() {
    kind get clusters 2>/dev/null | grep -qxF "$KIND_CLUSTER"
}

# Podman and what it runs the nodes with (Debian's packages), installed when missing.
ensure_podman() {
    local missing=() tool
    for tool in podman conmon runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    for tool in netavark aardvark-dns; do [ -x "/usr/lib/podman/$tool" ] || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "podman is not installed (Debian packages: ${missing[*]}): kind runs the nodes as Podman containers where no Docker engine answers"
    install_packages "${missing[@]}"
}

kind_up() {
    local provider image=()
    provider="$(kind_provider)"
    if [ "$provider" = docker ]; then
        need_docker
    else
        ensure_podman
        [ "$(id -u)" -eq 0 ] || die "kind on Podman needs root here (rootful Podman: the nodes mount /dev and loop devices)"
    fi
    ensure_kind
    if command -v go >/dev/null; then go_programs kubectl; else need_kubectl; fi
    if [ "$provider" = podman ]; then
        podman_env
        # Before the first Podman command: even `podman load` makes /run/containers.
        record_kind_baseline
        timed "kind: node image" build_node_image
        image=(--image "$KIND_NODE_REF")
        [ -d /lib/modules ] || mkdir -p /lib/modules
        local root
        for root in $(kind_data_roots); do mkdir -p "$root"; done
    fi
    if kind_cluster_exists; then
        log "kind cluster $KIND_CLUSTER exists"
    else
        log "creating kind cluster $KIND_CLUSTER ($provider)"
        timed "kind: create cluster" kind create cluster --name "$KIND_CLUSTER" \
            --config "$KIND_CONFIG" "${image[@]}" --wait 180s
    fi
    kind_kubectl wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
    if [ "$provider" = docker ]; then
        log "building $IMAGE"
        docker build -t "$IMAGE" "$ROOT"
        kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
    else
        timed "kind: load images" load_cluster_images
    fi
    log "kind cluster $KIND_CLUSTER up: kubectl context $KIND_CONTEXT (hack/kind-install next)"
}

# Jobs in the background, each with its log: started by `background NAME COMMAND...`,
# awaited by `await NAME WHAT` (its log shown and the script stopped if it failed).
declare -gA BACKGROUND_PIDS=() BACKGROUND_LOGS=()
background() {
    local name="$1"
    shift
    BACKGROUND_LOGS[$name]="$(mktemp "${TMPDIR:-/tmp}/localvol-$name.XXXXXX")"
    "$@" >"${BACKGROUND_LOGS[$name]}" 2>&1 &
    BACKGROUND_PIDS[$name]=$!
}

await() {
    local name="$1" what="$2" log="${BACKGROUND_LOGS[$1]:-}"
    [ -n "$log" ] || return 0
    if ! wait "${BACKGROUND_PIDS[$name]}"; then
        cat "$log" >&2
        rm -f "$log"
        die "$what failed"
    fi
    rm -f "$log"
    unset "BACKGROUND_PIDS[$name]" "BACKGROUND_LOGS[$name]"
}

# kind_build_start [GO_PROGRAM...]: what kind_build needs that wants no venv, started in the
# background (once): the Go module of every program resolved and downloaded, then the
# cluster's Go programs (and the extra ones named) built; kind built beside. hack/test starts
# it before it makes the venv: the downloads of both overlap, and the compiler starts when
# the module is ready. (The images wait for the venv: the driver's wheel is built with it.)
kind_build_start() {
    [ -n "${BACKGROUND_PIDS[go-build]:-}" ] && return 0
    background go-build go_module_and_programs "$@"
    background kind-build ensure_kind
}

go_module_and_programs() {
    local suite=()
    [ "${KIND_STORAGE_SUITE:-}" = 1 ] && suite=(ginkgo)
    timed "build: Go module (resolved, downloaded)" ensure_go_module &&
        timed "build: Go programs" go_programs "$@" "${CLUSTER_PROGRAMS[@]}" "${suite[@]}"
}

# The Debian-based images the nodes load and the node image's Debian layers.
images_before_the_node_image() {
    "$ROOT/hack/images" build $(node_image_names) >/dev/null &&
        "$ROOT/hack/images" layers kind-node
}

# kind_build [GO_PROGRAM...]: everything a Podman cluster of ours starts from (with
# KIND_STORAGE_SUITE=1 also the storage suite's), built where stale, nothing started and
# nothing of the host or of Podman touched: kind, the cluster's Go programs (and the extra
# ones named) in one build, the images the nodes load, the node image and the Go programs'
# images; what is mostly network beside the Go build (and kind_build_start's part before
# it, where hack/test starts that early). kind-up runs it before it
# loads the node image; hack/test runs it before the tiers, so on a cold machine the build
# has both cores.
kind_build() {
    kind_build_start "$@"
    # The Debian-based images and the node image's Debian layers, beside the Go build.
    background images-build images_before_the_node_image
    await go-build "building the Go programs"
    await kind-build "building kind"
    ensure_kind  # built by now: only puts it on PATH
    if [ "${KIND_STORAGE_SUITE:-}" = 1 ]; then
        timed "build: storage suite (e2e.test)" go_test_binary e2e.test ./storagesuite
    fi
    await images-build "building the images"
    timed "build: node image (control plane images, node)" "$ROOT/hack/images" build kind-node >/dev/null
    timed "build: sidecar images" sidecar_image_archives >/dev/null
    if [ "${KIND_STORAGE_SUITE:-}" = 1 ]; then
        timed "build: agnhost image" agnhost_image_archive >/dev/null
    fi
}

# The node image, built and loaded into our Podman; its reference in KIND_NODE_REF.
KIND_NODE_REF=""
build_node_image() {
    kind_build
    KIND_NODE_REF="$(load_node_image)"
}

kind_kubectl() {
    kubectl --context "$KIND_CONTEXT" "$@"
}

# Delete the cluster and remove what it left: the nodes' loop devices and data roots, and
# (Podman) our Podman's containers, volumes and network and what they added to the host.
kind_down() {
    local provider
    provider="$(kind_provider)"
    ensure_kind
    [ "$provider" = docker ] || podman_env
    if kind_cluster_exists; then
        kind delete cluster --name "$KIND_CLUSTER"
    fi
    ensure_venv
    local host=("$VENV/bin/python" "$ROOT/hack/cluster-host")
    if [ -d "$KIND_DATA" ]; then
        # The volumes' loop devices first (found by their images' inodes), then whatever is
        # mounted there on the host (a data root that is a disk of its own).
        "${host[@]}" detach-loops "$KIND_DATA"
        "${host[@]}" umount-under "$KIND_DATA"
        log "removing $KIND_DATA"
        rm -rf --one-file-system "$KIND_DATA"
    fi
    [ "$provider" = podman ] && podman_host_down
    log "kind cluster $KIND_CLUSTER down"
}

# Our Podman's containers, volumes and networks, then what its network stack added to the
# host, back to the baseline.
podman_host_down() {
    podman rm --all --force --volumes >/dev/null 2>&1 || true
    podman volume prune --force >/dev/null 2>&1 || true
    local network bridges=()
    for network in $(podman network ls --format '{{.Name}}' 2>/dev/null); do
        [ "$network" = podman ] && continue
        bridges+=("$(podman network inspect "$network" --format '{{.NetworkInterface}}')")
        podman network rm --force "$network" >/dev/null
    done
    local host=("$VENV/bin/python" "$ROOT/hack/cluster-host")
    if [ -f "$KIND_BASELINE/.done" ]; then
        # Only what Podman's network stack added: a cluster beside this one keeps its chains.
        "${host[@]}" iptables-restore "$KIND_BASELINE/iptables" --only NETAVARK
        "${host[@]}" drop-new-tables "$KIND_BASELINE/nft-tables"
        "${host[@]}" sysctl-restore "$KIND_BASELINE/sysctl" "${KIND_SYSCTLS[@]}"
        local bridge
        for bridge in "${bridges[@]}"; do
            [ -n "$bridge" ] && ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
        done
        remove_added_paths "${PODMAN_HOST_PATHS[@]}"
        existed_before /sys/fs/cgroup/memory/libpod_parent || "${host[@]}" rmdir-cgroups libpod_parent
        if ! "${host[@]}" sysctl-diff "$KIND_BASELINE/sysctl" >&2; then
            log "warning: the sysctls above differ from before the cluster"
        fi
    fi
    rm -rf --one-file-system "$KIND_RUN"
}
