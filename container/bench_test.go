package container

import (
	"context"
	"fmt"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// BenchmarkMemoryPerPod runs 100 single-container pods and reports what
// berth's side costs per pod: the monitors' RSS and PSS (the daemon's own
// share is measured by the daemon benchmark). containerd 2.4.2 costs 17.5
// MiB RSS and 4.4 MiB PSS per pod on this machine (its shim per pod).
func BenchmarkMemoryPerPod(b *testing.B) {
	const pods = 100
	for b.Loop() {
		e := newEnvTB(b)
		var monitors []int
		for range pods {
			p := e.pod(true)
			c := e.run(p, config("mem", "sleep", "100000"))
			monitors = append(monitors, c.Monitor.Pid)
		}
		time.Sleep(time.Second) // let the monitors settle
		var rss, pss uint64
		for _, pid := range monitors {
			r, p, err := testutil.Memory(pid)
			if err != nil {
				b.Fatal(err)
			}
			rss += r
			pss += p
		}
		b.ReportMetric(float64(rss)/pods/(1<<20), "monitor-RSS-MiB/pod")
		b.ReportMetric(float64(pss)/pods/(1<<20), "monitor-PSS-MiB/pod")
		e.cleanup()
	}
}

// BenchmarkExecSync measures one exec probe (`true`) in a running
// container: what kubelet pays per probe and pod every period.
func BenchmarkExecSync(b *testing.B) {
	e := newEnvTB(b)
	defer e.cleanup()
	p := e.pod(true)
	c := e.run(p, config("exec", "sleep", "100000"))
	for b.Loop() {
		r, err := e.mgr.ExecSync(context.Background(), c.ID, []string{"true"}, 10*time.Second)
		if err != nil || r.ExitCode != 0 {
			b.Fatalf("exec: %v %v", r, err)
		}
	}
}

// BenchmarkCreateStartRemove measures a container's whole life in a ready
// pod, without the image pull.
func BenchmarkCreateStartRemove(b *testing.B) {
	e := newEnvTB(b)
	defer e.cleanup()
	p := e.pod(true)
	i := 0
	for b.Loop() {
		i++
		cfg := config(fmt.Sprintf("c%d", i), "true")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
		c := e.run(p, cfg)
		if err := e.mgr.Remove(context.Background(), c.ID); err != nil {
			b.Fatal(err)
		}
	}
}
