// Command pause holds a pod sandbox's namespaces. It is PID 1 of the pod: it sleeps until
// SIGTERM or SIGINT and then exits 0, and it reaps every process orphaned to it, so exited
// children never stay behind as zombies. Built static (CGO_ENABLED=0) by hack/images; the
// image holds this binary only.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		// The kubelet starts it without arguments; anything else is a mistake worth seeing.
		fmt.Fprintln(os.Stderr, "usage: pause (no arguments): sleeps until SIGTERM or SIGINT")
		os.Exit(2)
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	reap() // children that exited before the handler was installed
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child. SIGCHLDs coalesce, so one signal may stand for many.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has exited yet
		}
	}
}
