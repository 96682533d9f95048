package main

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// Device cgroup rules need the devices manager registered.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's cgo constructor joins namespaces before the Go runtime
	// starts, in every `shim init` that libcontainer re-executes.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// libcontainer re-executes this binary as `shim init` for every process
// exec'd into a container (containers themselves are started by
// berth-runc); Init never returns. It runs before main, so keep every
// package init() of this binary cheap.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}
