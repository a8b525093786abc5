// Command etcd is the etcd server of the kind node image (hack/kind-image-lib.sh), built
// from etcd's own server module at the version kubeadm names: the control plane's static
// pod runs it as `etcd` with kubeadm's flags.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
