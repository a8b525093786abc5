// Package storagesuite builds Kubernetes' external-storage tests as a test binary of their
// own: the e2e framework, its flags and the specs test/e2e/storage/external generates for
// each test-driver definition (-storage.testdriver). The rest of the e2e tree (apps,
// network, node, dra, ...) is left out: tests/e2e/storage_suite.py never selects it, and
// compiling it was most of the cost of the upstream e2e.test.
package storagesuite

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	manifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	fixtures "k8s.io/kubernetes/test/fixtures"

	// -storage.testdriver and the specs of every definition it is given.
	_ "k8s.io/kubernetes/test/e2e/storage/external"

	// The framework's hooks the full suite installs: state dumped when a spec fails, the
	// metrics grabber, node helpers, and how test objects are printed.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/ktesting/format"
)

func TestMain(m *testing.M) {
	showVersion := flag.Bool("version", false, "print the Kubernetes version built in, then exit")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	// The manifests and fixtures the specs read, from the files embedded in the binary.
	testfiles.AddFileSource(manifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(fixtures.GetTestFixturesFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestStorageSuite(t *testing.T) {
	e2e.RunE2ETests(t)
}
