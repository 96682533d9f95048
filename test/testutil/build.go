package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// repoRoot is the module root, found from this source file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildMonitor builds berth-monitor into dir the way the Makefile does
// (static, no cgo) and returns its path.
func BuildMonitor(dir string) (string, error) {
	out := filepath.Join(dir, "berth-monitor")
	build := exec.Command("go", "build", "-o", out, "./cmd/monitor")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build berth-monitor: %v\n%s", err, msg)
	}
	return out, nil
}
