package launch

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/monitor"
)

// ExecSubcommand runs ExecMain: one process in a running container, for
// the daemon's ExecSync and Exec. It lives in the small launcher binary,
// not in the daemon, because libcontainer re-executes the calling binary
// as the process's init: a small binary starts in a fraction of the time,
// and exec probes run every few seconds for every pod.
const ExecSubcommand = "exec-in-container"

// ExecStatus is what ExecMain reports on fd 3, one JSON line each: first
// the process's PID (or why it could not start), then its exit code.
type ExecStatus struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
	Exit  *int   `json:"exit,omitempty"`
}

// ExecMain is `exec-in-container RUNC-ROOT ID BUNDLE TTY CMD...`. Without a
// terminal the process gets this process's stdin, stdout and stderr; with
// one (TTY "1"), fd 4 is the console socket the pty master is sent on.
func ExecMain(args []string) int {
	status := os.NewFile(3, "status")
	report := func(s ExecStatus) { _ = json.NewEncoder(status).Encode(s) }
	if len(args) < 5 {
		report(ExecStatus{Error: "usage: exec-in-container RUNC-ROOT ID BUNDLE TTY CMD..."})
		return 2
	}
	root, id, bundle, tty, cmd := args[0], args[1], args[2], args[3] == "1", args[4:]
	lc, err := libcontainer.Load(root, id)
	if err != nil {
		report(ExecStatus{Error: fmt.Sprintf("load container %s: %v", id, err)})
		return 1
	}
	spec := &specs.Spec{}
	if err := readJSON(filepath.Join(bundle, monitor.SpecFile), spec); err != nil || spec.Process == nil {
		report(ExecStatus{Error: fmt.Sprintf("read spec of %s: %v", id, err)})
		return 1
	}
	p := ProcessFromSpec(spec.Process)
	p.Args = cmd
	p.Init = false
	p.ConsoleWidth, p.ConsoleHeight = 0, 0
	if tty {
		p.ConsoleSocket = os.NewFile(4, "console")
	} else {
		p.Stdin, p.Stdout, p.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if err := lc.Run(p); err != nil {
		report(ExecStatus{Error: err.Error()})
		return 0
	}
	pid, _ := p.Pid()
	report(ExecStatus{Pid: pid})
	// The process holds its own copies of the stdio now; ours would keep
	// the daemon's pipes open after the process has exited.
	for _, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		_ = f.Close()
	}
	st, _ := p.Wait()
	code := 255
	if st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok {
			code = utils.ExitStatus(unix.WaitStatus(ws))
		}
	}
	report(ExecStatus{Exit: &code})
	return 0
}
