// Package reexec lets a test binary stand in for berth's own binaries,
// which berth and libcontainer re-execute: libcontainer's `init` (container
// inits and exec'd processes), the pod's PID namespace init (`pod-init`) and
// the container launcher (`start-container`, berth-runc's job). Import it
// and call Serve first thing in an init function of the test package.
package reexec

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor joins namespaces before the Go runtime
	// starts, in every `init` libcontainer re-executes.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/berth-runtime/berth/monitor/launch"
	"github.com/berth-runtime/berth/sandbox"
)

// Serve runs the subcommand this process was re-executed as and never
// returns then; it returns at once in the test binary's own run.
func Serve() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "init":
		libcontainer.Init()
	case sandbox.InfraSubcommand:
		os.Exit(sandbox.PodInit())
	case launch.Subcommand:
		os.Exit(launch.Main(os.Args[2:]))
	}
}
