package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

// pidsWhere lists the live processes for which keep holds.
func pidsWhere(keep func(pid int) bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && keep(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// childrenNamed lists the PIDs whose parent is ppid and whose command is
// comm (the daemon's monitors).
func childrenNamed(ppid int, comm string) []int {
	return pidsWhere(func(pid int) bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(data)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			return false
		}
		fields := strings.Fields(s[close+1:])
		return len(fields) > 1 && s[open+1:close] == comm && fields[1] == strconv.Itoa(ppid)
	})
}

// BenchmarkIntegrationMemory100Pods runs 100 pods of one container each on
// bin/shim and reports what berth costs per pod: the daemon's share and the
// monitors', RSS and PSS. containerd 2.4.2 on this machine: 17.5 MiB RSS
// and 4.4 MiB PSS per pod.
func BenchmarkIntegrationMemory100Pods(b *testing.B) {
	const pods = 100
	// One run is the measurement; its time says nothing.
	for b.Loop() {
		memoryRun(b, pods)
	}
}

func memoryRun(b *testing.B, pods int) {
	d, dir, ctr := benchDaemon(b, "sleeper")
	defer d.stop(b)
	for i := range pods {
		pod := writeJSON(b, filepath.Join(dir, fmt.Sprintf("p%d.json", i)), map[string]any{
			"metadata": map[string]any{"name": fmt.Sprintf("mem%d", i), "namespace": "bench", "uid": fmt.Sprintf("mem-%d", i)},
			"linux":    map[string]any{},
		})
		d.must(b, "run", ctr, pod)
	}
	defer d.removeAllPods(b)
	time.Sleep(2 * time.Second)
	daemonRSS, daemonPSS, err := testutil.Memory(d.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	monitors := childrenNamed(d.cmd.Process.Pid, "berth-monitor")
	if len(monitors) != pods {
		b.Fatalf("%d monitors for %d pods", len(monitors), pods)
	}
	var monRSS, monPSS uint64
	for _, pid := range monitors {
		r, p, err := testutil.Memory(pid)
		if err != nil {
			b.Fatal(err)
		}
		monRSS += r
		monPSS += p
	}
	mib := func(v uint64) float64 { return float64(v) / float64(pods) / (1 << 20) }
	b.ReportMetric(mib(daemonRSS+monRSS), "RSS-MiB/pod")
	b.ReportMetric(mib(daemonPSS+monPSS), "PSS-MiB/pod")
	b.ReportMetric(mib(monRSS), "monitor-RSS-MiB/pod")
	b.ReportMetric(float64(daemonRSS)/(1<<20), "daemon-RSS-MiB")
}
