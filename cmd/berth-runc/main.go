// Command berth-runc is the berth daemon's libcontainer helper. It starts a
// container (and then becomes the container's berth-monitor) and runs
// processes in running containers. libcontainer re-executes its caller as
// every container's and every exec'd process's init, so this binary links
// libcontainer and little else: it starts in a fraction of the daemon's
// time, which every exec probe of every pod pays.
//
//	berth-runc start-container BUNDLE MONITOR-BINARY     (fd 3: sync pipe)
//	berth-runc exec-in-container ROOT ID BUNDLE TTY CMD… (fd 3: status)
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
	case launch.ExecSubcommand:
		os.Exit(launch.ExecMain(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "berth-runc: unknown command %q\n", os.Args[1])
	os.Exit(2)
}
