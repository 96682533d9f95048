package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeContainers records what the sandbox asked of the containers manager.
type fakeContainers struct {
	calls   []string
	stopErr error
}

func (f *fakeContainers) StopAll(ctx context.Context, podID string, grace time.Duration) error {
	f.calls = append(f.calls, "stop "+podID[:6]+" "+grace.String())
	return f.stopErr
}

func (f *fakeContainers) RemoveAll(ctx context.Context, podID string) error {
	f.calls = append(f.calls, "remove "+podID[:6])
	return nil
}

// Item 6: StopPodSandbox stops the pod's containers (with the grace period)
// before the network goes; a failure to stop them fails the stop, which
// stays retryable; RemovePodSandbox removes them.
func TestStopAndRemoveDriveContainers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	fc := &fakeContainers{stopErr: errors.New("container refuses to die")}
	e.mgr.SetContainers(fc)
	p := e.run(podConfig("with-containers"))

	err := e.mgr.Stop(ctx, p.ID)
	if err == nil || !strings.Contains(err.Error(), "stop containers") {
		t.Fatalf("stop = %v; want the containers' error", err)
	}
	if got, _ := e.mgr.Get(p.ID); got.State != StateStopping || !isNamespace(got.NetNS) || len(got.IPs) == 0 {
		t.Errorf("after a failed stop the pod must keep its network for the retry: %s", mustJSON(got))
	}
	fc.stopErr = nil
	if err := e.mgr.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	id := p.ID[:6]
	want := "stop " + id + " 0s,stop " + id + " 0s,remove " + id
	if got := strings.Join(fc.calls, ","); got != want {
		t.Errorf("calls = %s, want %s", got, want)
	}
	e.assertGone(p)
}

// A pod whose infra process died reports NOTREADY (its PID namespace and
// containers are gone), and stopping it still tears everything down.
func TestInfraDeathMakesPodNotReady(t *testing.T) {
	e := newEnv(t)
	cfg := podConfig("infra-dies")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	p := e.run(cfg)
	if err := killProcess(p.InfraPID, p.InfraStart, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.mgr.Get(p.ID); got.State != StateNotReady {
		t.Errorf("state after the infra died = %s", got.State)
	}
	if err := e.mgr.Stop(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	if isNamespace(p.NetNS) {
		t.Error("stop skipped the teardown of a pod whose infra died")
	}
	e.assertNoAllocations()
}

// Item 4: with an IPv6 range in the config the pod gets both addresses,
// IPv4 first.
func TestDualStack(t *testing.T) {
	e := newEnv(t)
	conf := `{"cniVersion":"1.1.0","name":"` + testNetwork + `","plugins":[
	  {"type":"bridge","bridge":"` + testBridge + `","isGateway":true,
	   "ipam":{"type":"host-local","ranges":[[{"subnet":"fd00:250::/64"}],[{"subnet":"` + testSubnet + `"}]],"dataDir":"` + e.ipamDir + `"}}]}`
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, "50-dual.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := e.run(podConfig("dual"))
	if len(p.IPs) != 2 || !strings.HasPrefix(p.IPs[0], "10.250.0.") || !strings.HasPrefix(p.IPs[1], "fd00:250::") {
		t.Errorf("IPs = %v; want IPv4 then IPv6", p.IPs)
	}
	if err := e.mgr.Remove(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p)
	e.assertNoAllocations()
}

// Recovery finishes an interrupted stop only in its second phase, after the
// containers manager has recovered and can find the pod's containers.
func TestRecoverWaitsForContainers(t *testing.T) {
	e := newEnv(t)
	p := e.run(podConfig("stop-after-restart"))
	e.editRecord(p.ID, func(r *Pod) { r.State = StateStopping })
	e.open()
	fc := &fakeContainers{}
	e.mgr.SetContainers(fc)
	if err := e.mgr.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.mgr.Get(p.ID); got.State != StateStopping || len(fc.calls) != 0 {
		t.Fatalf("phase 1 went ahead: state %s, calls %v", got.State, fc.calls)
	}
	if err := e.mgr.AfterContainers().Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.mgr.Get(p.ID); got.State != StateNotReady || len(fc.calls) != 1 || !strings.HasPrefix(fc.calls[0], "stop ") {
		t.Fatalf("phase 2: state %s, calls %v", got.State, fc.calls)
	}
	e.assertNoAllocations()
}
