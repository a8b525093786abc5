// Command coredns is the cluster DNS of the kind node image (hack/kind-image-lib.sh): CoreDNS
// at the version kubeadm names, with only the plugins kubeadm's Corefile uses (the full set
// pulls in every cloud provider's SDK). The plugins keep CoreDNS's own order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The directives of kubeadm's Corefile ("prometheus" is the metrics plugin's).
var used = map[string]bool{
	"cache": true, "errors": true, "forward": true, "health": true, "kubernetes": true,
	"loadbalance": true, "loop": true, "prometheus": true, "ready": true, "reload": true,
}

func main() {
	var kept []string
	for _, name := range dnsserver.Directives {
		if used[name] {
			kept = append(kept, name)
		}
	}
	dnsserver.Directives = kept
	coremain.Run()
}
