// Command berth-monitor supervises one container for the berth daemon. The
// launcher (`shim start-container`) starts the container and then becomes
// this program by execve, so the container's init is this process's child:
// it holds the container's stdio, writes its CRI log, serves attach and
// log reopening, reaps the init and records its exit.
//
// It is small on purpose: one lives beside every container, and a Go
// process's resident memory is about the size of its binary. It links
// neither libcontainer nor cgo.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/berth-runtime/berth/monitor"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != monitor.SuperviseArg {
		fmt.Fprintln(os.Stderr, "berth-monitor is started by the berth daemon, not by hand")
		os.Exit(2)
	}
	var h monitor.Handoff
	if err := json.Unmarshal([]byte(os.Getenv(monitor.HandoffEnv)), &h); err != nil {
		fmt.Fprintln(os.Stderr, "berth-monitor: bad handoff:", err)
		os.Exit(2)
	}
	os.Unsetenv(monitor.HandoffEnv)
	if err := monitor.Supervise(h); err != nil {
		fmt.Fprintln(os.Stderr, "berth-monitor:", err)
		os.Exit(1)
	}
}
