# The single-node test cluster: Kubernetes built from the Go module proxy, etcd, containerd,
# runc and the CNI plugins from Debian, every component a host process. Sourced by
# hack/cluster-up and hack/cluster-down (after hack/lib.sh), never executed.
#
# Where things live:
#   $CLUSTER_CACHE   builds and images, kept across clusters (outside the clone)
#   $CLUSTER_DIR     one cluster's state: PKI, configs, etcd, containerd, logs, baseline
#   $CLUSTER_RUN     sockets, PID files, the kubelet's mount namespace
# Everything the cluster adds to the host (processes, mounts, loop devices, the bridge,
# iptables chains, cgroups, files) is removed again by cluster_down; the host's sysctls are
# never written.

# The versions of Kubernetes and the sidecars are hack/lib.sh's; every Go program is built
# into $GOBIN from one module (hack/go-lib.sh).

CLUSTER_CACHE="${CLUSTER_CACHE:-/var/cache/localvol-csi}"
CLUSTER_DIR="${CLUSTER_DIR:-/var/lib/localvol-cluster}"
CLUSTER_RUN="${CLUSTER_RUN:-/run/localvol-cluster}"
K8S_BIN="$GOBIN"

NODE_NAME="${NODE_NAME:-localvol-node}"
# The node's address lives on a bridge of our own (never loopback: pods must reach it);
# pods sit on the same bridge and route through the node, so nothing is forwarded.
BRIDGE="${CLUSTER_BRIDGE:-lvcl0}"
NODE_IP="${NODE_IP:-10.213.0.1}"
NODE_CIDR="${NODE_CIDR:-10.213.0.0/24}"
SERVICE_CIDR="${SERVICE_CIDR:-10.215.0.0/24}"
API_SERVICE_IP="${API_SERVICE_IP:-10.215.0.1}"
ETCD_PORT="${ETCD_PORT:-23790}"

KUBECONFIG_ADMIN="$CLUSTER_DIR/kubeconfig"
CONTAINERD_SOCK="$CLUSTER_RUN/containerd/containerd.sock"
KUBELET_NS="$CLUSTER_RUN/ns/kubelet-mnt"
# Host paths mounted with Bidirectional propagation (the kubelet's, the data root of
# deploy/overlays/cluster): they must be shared mounts.
SHARED_DIRS=(/var/lib/kubelet "$CLUSTER_DIR/data")
# What the kubelet would otherwise write into the host's /proc/sys (its expected values).
KUBELET_SYSCTLS=("vm/overcommit_memory=1" "kernel/panic=10" "kernel/panic_on_oops=1"
    "vm/panic_on_oom=0" "kernel/keys/root_maxkeys=1000000" "kernel/keys/root_maxbytes=25000000")
CGROUP_NAME=localvol-cluster
PROCESSES=(etcd kube-apiserver containerd kubelet kube-proxy kube-controller-manager kube-scheduler)

kctl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
crictl_() { "$GOBIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s "$@"; }

need_root() { [ "$(id -u)" -eq 0 ] || die "the test cluster needs root (loop devices, mounts, containerd)"; }

# One cluster script at a time: two racing starts would make two CAs or two apiservers.
CLUSTER_LOCK_FD=
cluster_lock() {
    [ -n "$CLUSTER_LOCK_FD" ] && return 0
    mkdir -p "$CLUSTER_CACHE"
    exec {CLUSTER_LOCK_FD}>"$CLUSTER_CACHE/cluster-scripts.lock"
    flock -w 900 "$CLUSTER_LOCK_FD" || die "another cluster script holds $CLUSTER_CACHE/cluster-scripts.lock"
}

ensure_cluster_packages() {
    local missing=() tool package
    for pair in etcd:etcd-server containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
        iptables:iptables nft:nftables conntrack:conntrack openssl:openssl nsenter:util-linux ip:iproute2; do
        tool="${pair%%:*}" package="${pair#*:}"
        if [[ $tool == /* ]]; then [ -e "$tool" ]; else command -v "$tool" >/dev/null; fi || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing cluster packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No service is started by these packages here (no init system runs them); the
    # cluster starts its own instances with its own configuration.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- builds -------------------------------------------------------------------------------

# Every program the cluster runs: Kubernetes' (kubectl for the scripts and tests), the CSI
# sidecars deploy/ names, crictl, and agnhost (the storage suite's image). One `go build`.
CLUSTER_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
    csi-provisioner csi-snapshotter snapshot-controller csi-resizer crictl agnhost)

build_cluster_programs() {
    go_programs "${CLUSTER_PROGRAMS[@]}"
}

# e2e.test and ginkgo (Kubernetes' storage suite), from the same module.
source "$ROOT/hack/storage-suite-lib.sh"

# --- the host as it was -------------------------------------------------------------------

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

# Taken once per cluster, before anything is changed; cluster_down compares and restores.
record_baseline() {
    local base="$CLUSTER_DIR/baseline"
    [ -f "$base/.done" ] && return 0
    host_reading "$base" /var/lib/kubelet /var/lib/localvol-csi /var/lib/cni /etc/cni /run/netns
    touch "$base/.done"
}

# --- processes ----------------------------------------------------------------------------

pid_of() { cat "$CLUSTER_RUN/pids/$1" 2>/dev/null; }

running() {
    local pid
    pid="$(pid_of "$1")" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# start_proc NAME COMMAND...: run COMMAND detached, its output in logs/NAME.log.
start_proc() {
    local name="$1"
    shift
    running "$name" && return 0
    mkdir -p "$CLUSTER_RUN/pids" "$CLUSTER_DIR/logs"
    # The cluster lock's descriptor stays here: a daemon holding it would hold the lock.
    setsid "$@" >>"$CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null {CLUSTER_LOCK_FD}>&- &
    echo $! > "$CLUSTER_RUN/pids/$name"
}

stop_proc() {
    local name="$1" pid
    pid="$(pid_of "$name")" || return 0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$CLUSTER_RUN/pids/$name"
}

# wait_for WHAT SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
    local what="$1" seconds="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${seconds}s waiting for $what (logs: $CLUSTER_DIR/logs)"
        sleep 0.5
    done
}

# --- network ------------------------------------------------------------------------------

setup_network() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$NODE_IP/${NODE_CIDR#*/}" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    mkdir -p "$CLUSTER_DIR/cni/net.d" "$CLUSTER_DIR/cni/ipam"
    # Pods join the node's bridge and route through the node's address: traffic to the
    # apiserver (after kube-proxy's DNAT) is delivered locally, nothing is forwarded, and
    # the bridge plugin is not asked to be a gateway (which would enable IP forwarding).
    cat > "$CLUSTER_DIR/cni/net.d/10-localvol.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "localvol-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_DIR/cni/ipam",
        "ranges": [[{"subnet": "$NODE_CIDR", "rangeStart": "${NODE_IP%.*}.16", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$NODE_IP"}]
      }
    },
    {"type": "loopback"}
  ]
}
CONF
}

# --- PKI ----------------------------------------------------------------------------------

# cert NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA.
cert() {
    local name="$1" subject="$2" sans="${3:-}" pki="$CLUSTER_DIR/pki"
    [ -f "$pki/$name.crt" ] && return 0
    local ext="$pki/$name.ext"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -n "$sans" ] && echo "subjectAltName=$sans"
    } > "$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subject" \
        -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$ext"
}

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
    local name="$1" file="$CLUSTER_DIR/$1.kubeconfig" pki="$CLUSTER_DIR/pki"
    [ "$name" = admin ] && file="$KUBECONFIG_ADMIN"
    [ -f "$file" ] && return 0
    local k=("$K8S_BIN/kubectl" --kubeconfig "$file")
    "${k[@]}" config set-cluster localvol --server "https://$NODE_IP:6443" \
        --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
    "${k[@]}" config set-credentials "$name" --client-certificate "$pki/$name.crt" \
        --client-key "$pki/$name.key" --embed-certs >/dev/null
    "${k[@]}" config set-context localvol --cluster localvol --user "$name" >/dev/null
    "${k[@]}" config use-context localvol >/dev/null
}

setup_pki() {
    local pki="$CLUSTER_DIR/pki"
    mkdir -p "$pki"
    chmod 700 "$pki"
    if [ ! -f "$pki/ca.crt" ]; then
        openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -days 30 \
            -subj "/CN=localvol-cluster-ca" -out "$pki/ca.crt" 2>/dev/null
        openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
        openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    fi
    cert apiserver "/CN=kube-apiserver" \
        "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert admin "/O=system:masters/CN=localvol-admin"
    cert controller-manager "/CN=system:kube-controller-manager"
    cert scheduler "/CN=system:kube-scheduler"
    cert kube-proxy "/CN=system:kube-proxy"
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
    for name in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$name"; done
}

# --- control plane ------------------------------------------------------------------------

start_etcd() {
    start_proc etcd etcd --name localvol --data-dir "$CLUSTER_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-cluster "localvol=http://127.0.0.1:$((ETCD_PORT + 1))"
    wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
    local pki="$CLUSTER_DIR/pki"
    start_proc kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --client-ca-file "$pki/ca.crt" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$pki/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$pki/sa.pub" \
        --service-account-signing-key-file "$pki/sa.key" \
        --feature-gates CSIVolumeHealth=true \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --allow-privileged=true --profiling=false
    wait_for kube-apiserver 120 kctl get --raw /readyz
}

start_controllers() {
    local pki="$CLUSTER_DIR/pki"
    start_proc kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR"
    start_proc kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false
}

# --- node ---------------------------------------------------------------------------------

start_containerd() {
    mkdir -p "$CLUSTER_DIR/containerd" "$CLUSTER_RUN/containerd"
    cat > "$CLUSTER_DIR/containerd.toml" <<CONF
version = 2
root = "$CLUSTER_DIR/containerd/root"
state = "$CLUSTER_RUN/containerd/state"

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CLUSTER_DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
  # This machine forbids negative oom_score_adj values.
  restrict_oom_score_adj = true
  # Network namespaces under the state directory, not in the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
CONF
    start_proc containerd containerd --config "$CLUSTER_DIR/containerd.toml"
    wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
}

# Every host directory that a pod mounts with Bidirectional propagation must be a shared
# mount; / is private here, so each becomes a shared bind mount of itself.
share_dirs() {
    for dir in "${SHARED_DIRS[@]}"; do
        mkdir -p "$dir"
        if ! findmnt -n -o TARGET --mountpoint "$dir" >/dev/null; then
            mount --bind "$dir" "$dir"
        fi
        mount --make-rshared "$dir"
    done
}

# The kubelet runs in a mount namespace of its own, kept in a file so a restarted kubelet
# comes back into the same one (it finds the loop devices it made for raw block volumes by
# path). Its view of /proc/sys holds the values it insists on, so it never writes the
# host's. Made before containerd starts containers, so no container mount is copied in.
setup_kubelet_namespace() {
    [ -e "$KUBELET_NS" ] && nsenter --mount="$KUBELET_NS" true 2>/dev/null && return 0
    local nsdir="${KUBELET_NS%/*}" fakes="$CLUSTER_RUN/sysctl"
    mkdir -p "$nsdir" "$fakes"
    # A namespace file may only be bound onto a private mount.
    findmnt -n --mountpoint "$nsdir" >/dev/null || mount --bind "$nsdir" "$nsdir"
    mount --make-private "$nsdir"
    touch "$KUBELET_NS"
    unshare --mount="$KUBELET_NS" --propagation unchanged true
    local entry key value
    for entry in "${KUBELET_SYSCTLS[@]}"; do
        key="${entry%%=*}" value="${entry#*=}"
        echo "$value" > "$fakes/${key//\//.}"
        nsenter --mount="$KUBELET_NS" mount --bind "$fakes/${key//\//.}" "/proc/sys/$key"
    done
}

setup_cgroups() {
    local controller
    for controller in /sys/fs/cgroup/*/; do
        [ -d "$controller" ] || continue
        case "$controller" in */unified/) continue ;; esac
        mkdir -p "$controller$CGROUP_NAME"
        if [ -f "$controller/cpuset.cpus" ]; then
            cat "$controller/cpuset.cpus" > "$controller$CGROUP_NAME/cpuset.cpus"
            cat "$controller/cpuset.mems" > "$controller$CGROUP_NAME/cpuset.mems"
        fi
    done
}

start_kubelet() {
    local pki="$CLUSTER_DIR/pki"
    cat > "$CLUSTER_DIR/kubelet.yaml" <<CONF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_NAME
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
# Refuse rather than modify kernel settings (the namespace shows the expected values).
protectKernelDefaults: true
failSwapOn: false
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# The host's disk is shared: evict only when it is really full.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
# CSI volume health (alpha, KEP-1432): NodeGetVolumeHealth into pod.status.volumeHealth; the
# API server keeps that field only with the same gate on.
featureGates: {CSIVolumeHealth: true}
CONF
    start_proc kubelet nsenter --mount="$KUBELET_NS" "$K8S_BIN/kubelet" \
        --config "$CLUSTER_DIR/kubelet.yaml" --kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
    wait_for "node $NODE_NAME Ready" 180 \
        bash -c "'$K8S_BIN/kubectl' --kubeconfig '$KUBECONFIG_ADMIN' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}

start_kube_proxy() {
    cat > "$CLUSTER_DIR/kube-proxy.yaml" <<CONF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_CIDR"]
# Zero means "leave the host's value": kube-proxy writes no sysctl.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
CONF
    start_proc kube-proxy "$K8S_BIN/kube-proxy" --config "$CLUSTER_DIR/kube-proxy.yaml"
}

# --- whole cluster ------------------------------------------------------------------------

cluster_up() {
    need_root
    cluster_lock
    timed "set-up: cluster packages" ensure_cluster_packages
    # The Debian-based images (debootstrap, apt: mostly waiting on the network) are made
    # while the Go programs compile; then the images of those programs.
    local images_log="$CLUSTER_CACHE/images-build.log" images_pid
    mkdir -p "$CLUSTER_CACHE"
    timed "build: images (Debian-based, beside the Go build)" "$ROOT/hack/images" build \
        >/dev/null 2>"$images_log" &
    images_pid=$!
    timed "build: Go programs of the cluster" build_cluster_programs
    wait "$images_pid" || { cat "$images_log" >&2; die "building the images failed"; }
    timed "build: images of the Go programs" build_cluster_images
    timed "cluster: start" start_cluster
    log "cluster up: export KUBECONFIG=$KUBECONFIG_ADMIN; kubectl is $K8S_BIN/kubectl"
}

# The node and its control plane, from the programs and images built.
start_cluster() {
    mkdir -p "$CLUSTER_DIR" "$CLUSTER_RUN"
    record_baseline
    setup_network
    setup_pki
    share_dirs
    setup_kubelet_namespace
    setup_cgroups
    start_etcd
    start_apiserver
    start_containerd
    import_cluster_images
    start_controllers
    start_kubelet
    start_kube_proxy
}

# Stop what cluster_up started and remove what it added; safe to run at any point.
cluster_down() {
    need_root
    cluster_lock
    ensure_venv
    local host=("$ROOT/hack/cluster-host")
    stop_proc kubelet
    # Pods through the runtime, so each sandbox's network is torn down by its CNI plugins.
    if running containerd && [ -x "$GOBIN/crictl" ]; then
        crictl_ rmp --all --force >/dev/null 2>&1 || true
    fi
    stop_proc kube-proxy
    [ -x "$K8S_BIN/kube-proxy" ] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    stop_proc containerd
    kill_shims
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_proc "$name"; done
    local dirs=(/var/lib/kubelet "$CLUSTER_DIR" "$CLUSTER_RUN")
    if [ -e "$KUBELET_NS" ] && nsenter --mount="$KUBELET_NS" true 2>/dev/null; then
        nsenter --mount="$KUBELET_NS" "$VENV/bin/python" "${host[@]}" umount-under "${dirs[@]}" /proc/sys
    fi
    "$VENV/bin/python" "${host[@]}" umount-under "${dirs[@]}"
    [ -d "$CLUSTER_DIR" ] && "$VENV/bin/python" "${host[@]}" detach-loops "$CLUSTER_DIR"
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    if [ -f "$CLUSTER_DIR/baseline/iptables" ]; then
        "$VENV/bin/python" "${host[@]}" iptables-restore "$CLUSTER_DIR/baseline/iptables"
        "$VENV/bin/python" "${host[@]}" drop-new-tables "$CLUSTER_DIR/baseline/nft-tables"
    fi
    "$VENV/bin/python" "${host[@]}" rmdir-cgroups "$CGROUP_NAME"
    local existing="$CLUSTER_DIR/baseline/existing-paths"
    for path in /var/lib/kubelet /var/lib/cni; do
        if [ -e "$path" ] && ! grep -qxF "$path" "$existing" 2>/dev/null; then rm -rf --one-file-system "$path"; fi
    done
    if [ -f "$CLUSTER_DIR/baseline/sysctl" ] && ! "$VENV/bin/python" "${host[@]}" sysctl-diff "$CLUSTER_DIR/baseline/sysctl" >&2; then
        log "warning: the sysctls above differ from before the cluster"
    fi
    rm -rf --one-file-system "$CLUSTER_DIR" "$CLUSTER_RUN"
    log "cluster down"
}

# containerd's shims outlive it by design; ours name our containerd's socket.
kill_shims() {
    local pid
    for pid in $(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# --- images and deploy/ -------------------------------------------------------------------

# Sidecar images under the names deploy/ uses: name|binary.
SIDECAR_IMAGES=(
    "registry.k8s.io/sig-storage/csi-provisioner:$PROVISIONER_VERSION|csi-provisioner"
    "registry.k8s.io/sig-storage/csi-snapshotter:$SNAPSHOTTER_VERSION|csi-snapshotter"
    "registry.k8s.io/sig-storage/snapshot-controller:$SNAPSHOTTER_VERSION|snapshot-controller"
    "registry.k8s.io/sig-storage/csi-resizer:$RESIZER_VERSION|csi-resizer"
)

# Every image the cluster runs, as archives (hack/images keeps them current).
cluster_image_archives() {
    "$ROOT/hack/images" build
    sidecar_image_archives
    agnhost_image_archive
}

# The sidecars' images, from the programs in $GOBIN.
sidecar_image_archives() {
    local entry name
    for entry in "${SIDECAR_IMAGES[@]}"; do
        name="${entry#*|}"
        "$ROOT/hack/images" binary "${entry%%|*}" "$GOBIN/$name" "/$name"
    done
}

build_cluster_images() { cluster_image_archives >/dev/null; }

import_cluster_images() {
    local archives
    mapfile -t archives < <(cluster_image_archives)
    "$ROOT/hack/images" import --address "$CONTAINERD_SOCK" "${archives[@]}" >/dev/null
}

# deploy/ as it is, through the cluster overlay; waits until the driver serves.
cluster_deploy() {
    export KUBECONFIG="$KUBECONFIG_ADMIN" PATH="$K8S_BIN:$PATH"
    "$ROOT/hack/install-snapshot-crds" >/dev/null
    log "applying deploy/overlays/cluster"
    kctl apply -k "$ROOT/deploy/overlays/cluster" >/dev/null
    kctl -n localvol-csi rollout status daemonset/localvol-csi-node --timeout=300s
    kctl -n localvol-csi rollout status deployment/snapshot-controller --timeout=300s
    wait_for "the driver on $NODE_NAME's CSINode" 120 \
        bash -c "'$K8S_BIN/kubectl' --kubeconfig '$KUBECONFIG_ADMIN' get csinode '$NODE_NAME' -o jsonpath='{.spec.drivers[*].name}' | grep -qw localvol.csi.dev"
}

# What a power cut does to the node, then its boot: every pod and container gone, every
# mount and loop device gone, the kubelet's namespace made afresh; then containerd and
# the kubelet start again and bring back the pods the API still assigns to the node.
# The control plane (etcd, apiserver, controllers) runs on, as if elsewhere.
node_reboot() {
    need_root
    cluster_lock
    ensure_venv
    log "node reboot: stopping the kubelet and every pod"
    stop_proc kubelet
    crictl_ rmp --all --force >/dev/null 2>&1 || true
    stop_proc containerd
    kill_shims
    local host=("$ROOT/hack/cluster-host")
    "$VENV/bin/python" "${host[@]}" umount-under /var/lib/kubelet "$CLUSTER_DIR" "$CLUSTER_RUN"
    "$VENV/bin/python" "${host[@]}" detach-loops "$CLUSTER_DIR"
    rm -rf --one-file-system "$CLUSTER_RUN/containerd" "$CLUSTER_RUN/ns" "$CLUSTER_RUN/sysctl"
    log "node reboot: booting"
    share_dirs
    setup_kubelet_namespace
    start_containerd
    start_kubelet
}
