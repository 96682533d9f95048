// Command berth-runc starts containers for the berth daemon: it creates a
// container with libcontainer, so that the container's init is its child,
// and then becomes the container's berth-monitor. libcontainer re-executes
// its caller as the container's init, so this binary links libcontainer and
// little else: every container start pays for its size once more.
//
//	berth-runc start-container BUNDLE MONITOR-BINARY     (fd 3: sync pipe)
package main

import (
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor joins namespaces before the Go runtime
	// starts, in every `init` libcontainer re-executes.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/berth-runtime/berth/monitor/launch"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "berth-runc is run by the berth daemon, not by hand")
		os.Exit(2)
	}
	switch os.Args[1] {
	case launch.Subcommand:
		os.Exit(launch.Main(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "berth-runc: unknown command %q\n", os.Args[1])
	os.Exit(2)
}
