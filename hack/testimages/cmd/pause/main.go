// Command pause is the infra-container process of the pause:3.9 test image.
//
// It does what Kubernetes' pause.c does: sleep until SIGINT or SIGTERM, and
// reap every child that gets re-parented to it while it is PID 1 of a shared
// PID namespace. Built static (CGO_ENABLED=0) so the image needs nothing else.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "3.9-berth"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause.go version %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		// Not fatal: pause.c only warns, and critest runs it without a
		// shared PID namespace too.
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child; signals coalesce, so one SIGCHLD can
// stand for several exits.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
