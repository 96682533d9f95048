// Package monitor is the per-container monitor: a small process that creates
// the container with libcontainer, so that the container's init is its
// child; holds the container's stdio; writes the CRI log; reaps the init and
// records its exit on disk. The daemon can stop, crash or restart while the
// monitor keeps the container's output flowing.
//
// The files of one container live in its bundle directory:
//
//	config.json   OCI runtime spec (written by the daemon)
//	monitor.json  Options (written by the daemon)
//	monitor.sock  control socket (reopen-log, resize, attach)
//	monitor.log   the monitor's own stderr
//	exit.json     Exit, written atomically when the container has exited
package monitor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// File names inside a bundle.
const (
	SpecFile    = "config.json"
	OptionsFile = "monitor.json"
	SocketFile  = "monitor.sock"
	LogFile     = "monitor.log"
	ExitFile    = "exit.json"
)

// Options tell a monitor what to run.
type Options struct {
	ID string `json:"id"`
	// RuncRoot is libcontainer's state root (on tmpfs).
	RuncRoot string `json:"runc_root"`
	// LogPath is the CRI log file; empty discards output.
	LogPath   string `json:"log_path"`
	Stdin     bool   `json:"stdin"`
	StdinOnce bool   `json:"stdin_once"`
	TTY       bool   `json:"tty"`
	// SystemdCgroup selects libcontainer's systemd cgroup manager.
	SystemdCgroup bool `json:"systemd_cgroup"`
}

// Started is what a monitor reports on its sync pipe once the container is
// created (its init waits for StartContainer) or failed to be.
type Started struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// Exit records how a container's init ended.
type Exit struct {
	Pid        int       `json:"pid"`
	ExitCode   int       `json:"exit_code"`
	FinishedAt time.Time `json:"finished_at"`
	OOMKilled  bool      `json:"oom_killed"`
}

// ReadExit reads the exit record of a bundle; os.ErrNotExist means the
// container has not exited (or its monitor died before writing it).
func ReadExit(bundle string) (*Exit, error) {
	data, err := os.ReadFile(filepath.Join(bundle, ExitFile))
	if err != nil {
		return nil, err
	}
	e := &Exit{}
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(bundle, ExitFile), err)
	}
	return e, nil
}

// writeFileAtomic writes data to path so that a reader sees either the old
// file or the whole new one, even across a crash.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
