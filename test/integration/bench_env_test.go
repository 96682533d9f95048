package integration

import (
	"path/filepath"
	"testing"
)

// benchDaemon starts a registry with busybox and a daemon that has pulled
// it, and writes the config of a container that sleeps. It returns the
// daemon, its directory and that config's path; the caller stops the
// daemon.
func benchDaemon(b *testing.B, name string) (*daemon, string, string) {
	b.Helper()
	reg := startRegistry(b, "busybox")
	image := reg + "/e2e-test-images/busybox:1.29-2"
	dir := b.TempDir()
	d := startDaemonWithConfig(b, dir, restartConfig(b, dir))
	d.must(b, "pull", image)
	ctr := writeJSON(b, filepath.Join(dir, "c.json"), map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"command":  []string{"sleep", "100000"},
	})
	return d, dir, ctr
}
