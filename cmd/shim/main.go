// Command shim is the berth daemon: a Kubernetes CRI runtime.
//
//	shim [serve] [flags]      serve CRI on a unix socket (the default)
//	shim config default       print the default configuration file
//	shim version              print the version
package main

import (
	"fmt"
	"os"

	"github.com/berth-runtime/berth/config"
	"github.com/berth-runtime/berth/sandbox"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (len(args[0]) == 0 || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "config":
		err = configCmd(args)
	case "version":
		fmt.Printf("berth %s\n", version)
	case "help":
		usage()
	case sandbox.InfraSubcommand:
		// Hidden: PID 1 of a pod's shared PID namespace, started by the
		// daemon (sandbox/infra.go).
		os.Exit(sandbox.PodInit())
	default:
		usage()
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "shim: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  shim [serve] [flags]   serve the CRI on a unix socket (shim serve -h for flags)
  shim config default    print the default configuration, every key commented
  shim version           print the version
`)
}

func configCmd(args []string) error {
	if len(args) != 1 || args[0] != "default" {
		return fmt.Errorf("usage: shim config default")
	}
	fmt.Print(config.DefaultFile())
	return nil
}
