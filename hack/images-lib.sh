# Container images for scripts that build a cluster: source this file, then call the functions.
# Each runs hack/images (set -e semantics of its own, one build at a time per machine) and
# fails when it fails; archive paths go to stdout, progress to stderr.
#
#   image_archive NAME...               archive(s) of the named images (hack/images list),
#                                       built when stale, e.g. image_archive localvol-csi
#   image_from_binary REF BINARY PATH   archive of an image holding one static binary at PATH
#                                       (its entrypoint), /tmp and /etc/passwd, e.g.
#       image_from_binary registry.k8s.io/sig-storage/csi-provisioner:v6.0.0 \
#           "$bin/csi-provisioner" /csi-provisioner
#   import_images ADDRESS [NAME|ARCHIVE...]
#                                       import into the containerd at socket ADDRESS (namespace
#                                       k8s.io) what it does not hold yet; default every image

IMAGES_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/images"

image_archive() {
    "$IMAGES_SCRIPT" build "$@"
}

image_from_binary() {
    "$IMAGES_SCRIPT" binary "$@"
}

import_images() {
    local address="$1"
    shift
    "$IMAGES_SCRIPT" import --address "$address" "$@"
}
