package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkKubeletManifestToRunning is the time from a static pod's
// manifest landing in kubelet's directory to kubelet reporting the pod
// Running, one pod at a time, with kubelet on berth and, for comparison,
// on containerd (built by hack/containerd.sh). It reports the median.
func BenchmarkKubeletManifestToRunning(b *testing.B) {
	runtimes := []struct {
		name  string
		start func(b *testing.B, dir, reg string) *daemon
	}{
		{"berth", func(b *testing.B, dir, _ string) *daemon {
			return startDaemonWithConfig(b, dir, kubeletDaemonConfig(b, dir))
		}},
		{"containerd", startContainerd},
	}
	for _, rt := range runtimes {
		for _, hostNetwork := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/hostNetwork=%v", rt.name, hostNetwork), func(b *testing.B) {
				reg := startRegistry(b, "busybox,pause")
				image := reg + "/e2e-test-images/busybox:1.29-2"
				dir := b.TempDir()
				d := rt.start(b, dir, reg)
				d.must(b, "pull", image)
				k := startKubelet(b, d)
				// One op is five pods started one after another.
				var took []time.Duration
				for i := 0; b.Loop(); i++ {
					for j := range 5 {
						start := time.Now()
						name := k.writeManifest(b, latencyPod(i*5+j, hostNetwork, image))
						k.waitRunning(b, name, time.Minute)
						took = append(took, time.Since(start))
					}
				}
				slices.Sort(took)
				b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-median/pod")
				k.stop(b)
			})
		}
	}
}

// latencyPod is the pod whose start is timed: one busybox container.
func latencyPod(i int, hostNetwork bool, image string) map[string]any {
	return staticPod(fmt.Sprintf("latency-%v-%d", hostNetwork, i), map[string]any{
		"hostNetwork": hostNetwork,
		"containers":  []any{busybox("main", image, "trap 'exit 0' TERM; while true; do sleep 1; done")},
	})
}

// startContainerd runs containerd with its CRI plugin on a socket of its
// own, the same CNI network as berth's kubelet test, and reg as a plain
// HTTP registry holding its pause image.
func startContainerd(b *testing.B, dir, reg string) *daemon {
	b.Helper()
	tools := toolsBin()
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := os.Stat(filepath.Join(tools, bin)); err != nil {
			b.Skipf("%s not installed (run hack/containerd.sh)", bin)
		}
	}
	kubeletDaemonConfig(b, dir) // writes the network into dir/net.d
	hosts := filepath.Join(dir, "certs.d", reg)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg, "http://"+reg)), 0o600); err != nil {
		b.Fatal(err)
	}
	d := &daemon{socket: filepath.Join(dir, "containerd.sock"), logPath: filepath.Join(dir, "containerd.log"), dir: dir}
	d.config = writeFile(b, filepath.Join(dir, "containerd.toml"), fmt.Sprintf(`version = 3
root = %q
state = %q
[plugins.'io.containerd.server.v1.grpc']
  address = %q
[plugins.'io.containerd.server.v1.ttrpc']
  address = %q
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root may not lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = %q
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '%d'
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.socket, d.socket+".ttrpc",
		reg+"/pause:3.9", filepath.Join(dir, "certs.d"), filepath.Join(repoRoot(b), "bin", "cni"), filepath.Join(dir, "net.d"),
		filepath.Join(tools, "runc"), freePort(b)))
	logFile, err := os.Create(d.logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	d.cmd = exec.Command(filepath.Join(tools, "containerd"), "--config", d.config)
	d.cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"))
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	// containerd keeps runc's state and its shims' sockets here whatever
	// its config says.
	_, err = os.Stat("/run/containerd")
	madeRun := os.IsNotExist(err)
	b.Cleanup(func() {
		d.kill()
		// Its shims outlive containerd, as they should on a node. The pods
		// are gone by now, so the shims are on their way out: give them a
		// moment, then end any left by PID.
		var shims []int
		for range 50 {
			if shims = processesMentioning(d.socket); len(shims) == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, pid := range shims {
			b.Errorf("containerd shim %d outlived its pods; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = exec.Command("umount", "-R", filepath.Join(dir, "state")).Run()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
		if madeRun {
			_ = os.RemoveAll("/run/containerd")
		}
	})
	waitFor(b, "containerd's socket", 30*time.Second, func() bool {
		c, err := net.Dial("unix", d.socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return d
}

// processesMentioning lists the processes whose command line contains s.
func processesMentioning(s string) []int {
	return pidsWhere(func(pid int) bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.Contains(string(cmdline), s)
	})
}

func writeFile(tb testing.TB, path, body string) string {
	tb.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
