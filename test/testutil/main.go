package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RootMain is the TestMain of a package whose tests need root and a
// berth-monitor built the way the Makefile builds it. It builds the monitor
// into a temporary directory, calls prepare with that directory and the
// monitor's path, runs the tests, then finish, whose complaints (things
// the tests left behind) fail the run. It returns the exit code.
func RootMain(m *testing.M, pkg string, prepare func(dir, monitor string) error, finish func() []string) int {
	if os.Geteuid() != 0 {
		fmt.Printf("%s tests need root\n", pkg)
		return 1
	}
	dir, err := os.MkdirTemp("", "berth-"+pkg+"-test")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	monitor, err := BuildMonitor(dir)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if prepare != nil {
		if err := prepare(dir, monitor); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	code := m.Run()
	if finish != nil {
		for _, complaint := range finish() {
			fmt.Println(complaint)
			code = 1
		}
	}
	return code
}
