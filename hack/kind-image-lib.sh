# The kind node image, made here without a registry: what `kind build node-image` would make
# from kind's base image and the release's images, assembled from Debian's packages and the
# Kubernetes programs hack/go-lib.sh builds. Sourced by hack/images (its recipes and
# helpers), never executed; `hack/images build kind-node` builds it.
#
# The image holds: Debian with systemd, containerd, runc and the CNI plugins
# (deploy/kind/node-image/packages.txt); kubelet, kubeadm, kubectl and crictl; the files of
# deploy/kind/node-image (its entrypoint, the units, containerd's configuration, the manifests
# kind applies); and, in its containerd, every image kubeadm names for $K8S_VERSION plus the
# node network agent's, so a cluster starts with nothing pulled.

KIND_NODE_FILES="$ROOT/deploy/kind/node-image"
# The programs of the node itself; the control plane's are in images of their own.
KIND_NODE_PROGRAMS=(kubelet kubeadm kubectl crictl)
KIND_CONTROL_PLANE_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

# Not in hack/images' default set: built when named (hack/kind-up does).
KIND_IMAGES=(
    "kind-node  localhost/localvol-csi/kind-node:$K8S_VERSION  kind_node"
)

# Every Go program the node image holds, built when missing or stale (progress on stderr).
kind_programs() {
    go_programs "${KIND_NODE_PROGRAMS[@]}" "${KIND_CONTROL_PLANE_PROGRAMS[@]}" etcd coredns >&2
}

# The node network agent's image, as deploy/kind/node-image/network.yaml names it.
node_network_ref() {
    awk '$1 == "image:" { print $2; exit }' "$KIND_NODE_FILES/network.yaml"
}

# minor_of VERSION: major.minor of v3.7.2 or 3.7.0-0.
minor_of() {
    cut -d. -f1,2 <<< "${1#v}"
}

archive_of_ref() {
    echo "$IMAGES_DIR/$(tr '/:@' '___' <<< "$1").tar"
}

# component_image REF RECIPE [VAR=VALUE...]: the archive of one image the node's containerd
# holds, built in a subshell (build_image's globals stay the node image's); prints its path.
component_image() {
    local ref="$1" recipe="$2"
    shift 2
    (
        for assignment in "$@"; do declare "$assignment"; done
        BINARY_CMD=()
        build_image "$ref" "$ref" "$recipe" "$(archive_of_ref "$ref")"
    )
}

# The archives of every image the node's containerd holds: what `kubeadm config images list`
# names for $K8S_VERSION (each checked against the version built for it) and the node network
# agent. Prints their paths.
kind_component_archives() {
    local ref name tag images
    images="$("$GOBIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")" ||
        die "kubeadm config images list failed"
    for ref in $images; do
        name="${ref##*/}" tag="${ref##*:}"
        name="${name%%:*}"
        case "$name" in
            kube-apiserver | kube-controller-manager | kube-scheduler)
                component_image "$ref" binary "BINARY_SRC=$GOBIN/$name" \
                    "BINARY_PATH=/usr/local/bin/$name" ;;
            kube-proxy)
                component_image "$ref" kube_proxy ;;
            etcd)
                [ "$(minor_of "$tag")" = "$(minor_of "$ETCD_VERSION")" ] ||
                    die "kubeadm names $ref; hack/lib.sh builds etcd $ETCD_VERSION"
                component_image "$ref" binary "BINARY_SRC=$GOBIN/etcd" \
                    BINARY_PATH=/usr/local/bin/etcd ;;
            coredns)
                [ "$tag" = "$COREDNS_VERSION" ] ||
                    die "kubeadm names $ref; hack/lib.sh builds CoreDNS $COREDNS_VERSION"
                component_image "$ref" binary "BINARY_SRC=$GOBIN/coredns" BINARY_PATH=/coredns ;;
            pause)
                [ "$(normalize_ref "$ref")" = "$(normalize_ref "$(image_row pause | awk '{print $2}')")" ] ||
                    die "kubeadm names $ref; hack/images builds $(image_row pause)"
                build_named pause ;;
            *)
                die "kubeadm names $ref, for which the kind node image has no recipe" ;;
        esac
    done
    component_image "$(node_network_ref)" busybox_binary "BINARY_SRC=$GOBIN/kubectl" \
        BINARY_PATH=/usr/local/bin/kubectl
}

# --- kube_proxy: kube-proxy on Debian, with the iptables, nft and conntrack it calls --------
KUBE_PROXY_PACKAGES=(iptables nftables conntrack)

recipe_kube_proxy_config() {
    IMAGE_ENTRYPOINT=(/usr/local/bin/kube-proxy)
}

recipe_kube_proxy_inputs() {
    declare -f recipe_kube_proxy_layers debootstrap_tarball debian_layer in_rootfs slim_rootfs
    echo "$DEBIAN_SUITE $DEBIAN_ARCH $(debian_mirror) $(debian_security_mirror)"
    printf '%s\n' "${KUBE_PROXY_PACKAGES[@]}"
    sha256sum < "$GOBIN/kube-proxy"
}

recipe_kube_proxy_layers() {
    local work="$1"
    need_root "the kube-proxy image (debootstrap, chroot)"
    mkdir -p "$work/bin/usr/local/bin"
    install -m 755 "$GOBIN/kube-proxy" "$work/bin/usr/local/bin/kube-proxy"
    layer_tar "$work/bin" "$work/kube-proxy.tar" --owner=0 --group=0 usr/local/bin/kube-proxy
    IMAGE_LAYERS=("$(debian_layer kube-proxy "${KUBE_PROXY_PACKAGES[@]}")" "$work/kube-proxy.tar")
}

# --- kind_node: the node image ------------------------------------------------------------
kind_node_packages() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$KIND_NODE_FILES/packages.txt"
}

recipe_kind_node_config() {
    IMAGE_ENTRYPOINT=(/usr/local/bin/entrypoint /sbin/init)
    IMAGE_ENV=("PATH=$DEFAULT_PATH" container=docker)
    # systemd's signal to halt.
    IMAGE_STOPSIGNAL=SIGRTMIN+3
}

recipe_kind_node_inputs() {
    declare -f recipe_kind_node_layers kind_node_debian_layer kind_node_system kind_node_images \
        debootstrap_tarball \
        debian_layer in_rootfs slim_rootfs kind_component_archives component_image
    echo "$DEBIAN_SUITE $DEBIAN_ARCH $(debian_mirror) $(debian_security_mirror) $K8S_VERSION"
    kind_node_packages
    kind_programs
    (cd "$GOBIN" && sha256sum "${KIND_NODE_PROGRAMS[@]}")
    (cd "$KIND_NODE_FILES" && find . -type f | LC_ALL=C sort | xargs -d '\n' sha256sum)
    local archives archive
    archives="$(kind_component_archives)"
    for archive in $archives; do head -n1 "$archive.inputs"; done
}

# The node's own Debian layer; prints its tarball.
kind_node_debian_layer() {
    local packages
    mapfile -t packages < <(kind_node_packages)
    debian_layer kind-node "${packages[@]}"
}

# What the node image is made on that is mostly network (hack/images layers kind-node): its
# Debian layer and kube-proxy's.
recipe_kind_node_debian() {
    kind_node_debian_layer > /dev/null
    debian_layer kube-proxy "${KUBE_PROXY_PACKAGES[@]}" > /dev/null
}

recipe_kind_node_layers() {
    local work="$1" r="$1/rootfs"
    need_root "the kind node image (debootstrap, chroot)"
    mkdir -p "$r"
    tar -C "$r" --numeric-owner -xf "$(kind_node_debian_layer)"
    kind_node_system "$r"
    kind_node_images "$r"
    log "packing the node's root filesystem"
    layer_tar "$r" "$work/node.tar" .
    IMAGE_LAYERS=("$work/node.tar")
}

# kind_node_system ROOTFS: the programs, files and systemd units of the node.
kind_node_system() {
    local r="$1" f="$KIND_NODE_FILES" program unit
    for program in kubelet kubeadm kubectl; do install -m 755 "$GOBIN/$program" "$r/usr/bin/"; done
    install -m 755 "$GOBIN/crictl" "$r/usr/local/bin/crictl"
    install -m 755 "$f/entrypoint" "$r/usr/local/bin/entrypoint"
    install -D -m 644 "$f/containerd.toml" "$r/etc/containerd/config.toml"
    install -m 644 "$f/crictl.yaml" "$r/etc/crictl.yaml"
    install -m 644 "$f/containerd.service" "$f/kubelet.service" "$f/kubelet.slice" \
        "$r/etc/systemd/system/"
    install -D -m 644 -t "$r/etc/systemd/system/kubelet.service.d" "$f"/kubelet.service.d/*.conf
    install -D -m 644 "$f/network.yaml" "$r/kind/manifests/default-cni.yaml"
    install -m 644 "$f/storage.yaml" "$r/kind/manifests/default-storage.yaml"
    echo "$K8S_VERSION" > "$r/kind/version"
    mkdir -p "$r/etc/kubernetes/manifests"
    # The node's own machine ID is made at each start (the entrypoint).
    : > "$r/etc/machine-id"
    # Nothing starts but what the node needs: no unit the packages enabled, no timers (fstrim
    # would trim the host's filesystems), and none of the units that would write to the
    # host's /dev (mounted into every node) or the host's sysctls.
    rm -f "$r"/etc/systemd/system/*.wants/* "$r"/lib/systemd/system/multi-user.target.wants/* \
        "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/basic.target.wants/* \
        "$r"/lib/systemd/system/sockets.target.wants/*udev* \
        "$r"/lib/systemd/system/sockets.target.wants/*initctl* \
        "$r"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \
        "$r"/etc/sysctl.d/*.conf "$r"/usr/lib/sysctl.d/*.conf
    for unit in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
        systemd-tmpfiles-setup-dev.service dev-hugepages.mount dev-mqueue.mount \
        systemd-journald-dev-log.socket systemd-sysctl.service systemd-modules-load.service \
        systemd-udevd.service systemd-remount-fs.service getty.target console-getty.service; do
        ln -sf /dev/null "$r/etc/systemd/system/$unit"
    done
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
    for unit in containerd.service kubelet.service; do
        ln -sf "/etc/systemd/system/$unit" "$r/etc/systemd/system/multi-user.target.wants/$unit"
    done
    # journald may not read the host's kernel log.
    echo "ReadKMsg=no" >> "$r/etc/systemd/journald.conf"
    # iptables through nftables, in the node as in kube-proxy's image.
    in_rootfs "$r" update-alternatives --set iptables /usr/sbin/iptables-nft > /dev/null
    in_rootfs "$r" update-alternatives --set ip6tables /usr/sbin/ip6tables-nft > /dev/null
    [ -x "$r/sbin/init" ] || die "the node image has no /sbin/init (systemd-sysv)"
    in_rootfs "$r" kubelet --version > /dev/null
}

# kind_node_images ROOTFS: every component image in the node's containerd (namespace k8s.io,
# as the CRI reads it), pinned so that the kubelet's image collection keeps them. Imported
# unpacked-on-demand: containerd unpacks each at its first container.
kind_node_images() {
    local r="$1" archives archive ref
    ensure_image_tools import
    archives="$(kind_component_archives)"
    private_containerd "$r/var/lib/containerd"
    for archive in $archives; do
        ref="$(normalize_ref "$(sed -n 2p "$archive.inputs")")"
        ctr --address "$PRIVATE_SOCK" -n k8s.io images import --no-unpack "$archive" >&2
        ctr --address "$PRIVATE_SOCK" -n k8s.io images label "$ref" \
            io.cri-containerd.pinned=pinned > /dev/null
    done
    private_containerd_stop
    rm -rf --one-file-system "$r/var/lib/containerd/tmpmounts"
}
