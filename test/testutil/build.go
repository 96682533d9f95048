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
	return build(dir, "berth-monitor", "./cmd/monitor", "CGO_ENABLED=0")
}

// BuildRunc builds berth-runc, the container launcher, into dir the way
// the Makefile does (cgo, seccomp) and returns its path.
func BuildRunc(dir string) (string, error) {
	return build(dir, "berth-runc", "./cmd/berth-runc", "CGO_ENABLED=1", "-tags", "seccomp")
}

func build(dir, name, pkg, cgo string, flags ...string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), cgo)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, msg)
	}
	return out, nil
}
