// Command berth-monitor supervises one container for the berth daemon: it
// creates the container with libcontainer (so the container's init is its
// child), holds its stdio, writes its CRI log and records its exit.
//
// It is a binary of its own, not a subcommand of bin/shim, because a Go
// process's resident memory is dominated by its binary's pages: one monitor
// lives beside every container, and this one links libcontainer and little
// else. libcontainer also re-executes it as every container's `init`, so a
// small binary is a faster container start too.
//
//	berth-monitor run BUNDLE   (fd 3: the sync pipe to the daemon)
package main

import (
	"fmt"
	"log/slog"
	"os"

	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/berth-runtime/berth/monitor"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

func main() {
	if len(os.Args) != 3 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: berth-monitor run BUNDLE")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("monitor", os.Getpid())
	if err := monitor.Run(os.Args[2], os.NewFile(3, "sync"), log); err != nil {
		log.Error("monitor", "error", err)
		os.Exit(1)
	}
}
