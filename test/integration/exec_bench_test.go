package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkIntegrationExecSync measures what one exec probe costs through
// bin/shim, as kubelet calls it: ExecSync of `true` in a running container,
// over the CRI socket.
func BenchmarkIntegrationExecSync(b *testing.B) {
	d, dir, ctr := benchDaemon(b, "probe")
	defer d.stop(b)
	pod := writeJSON(b, filepath.Join(dir, "p.json"), map[string]any{
		"metadata": map[string]any{"name": "probe", "namespace": "bench", "uid": "probe"},
		"linux":    map[string]any{},
	})
	id := d.must(b, "run", ctr, pod)
	defer d.removeAllPods(b)

	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 5})
		cancel()
		if err != nil || r.GetExitCode() != 0 {
			b.Fatalf("exec: %v %v", r, err)
		}
	}
}
