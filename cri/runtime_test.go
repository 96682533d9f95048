package cri

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeNetwork reports a fixed readiness and keeps the pod CIDR.
type fakeNetwork struct {
	notReady error
	cidr     string
}

func (f *fakeNetwork) Ready() error                 { return f.notReady }
func (f *fakeNetwork) SetPodCIDR(cidr string) error { f.cidr = cidr; return nil }
func (f *fakeNetwork) PodCIDR() string              { return f.cidr }

func runtimeServer(n *fakeNetwork) *Server {
	s := NewServer(Options{RuntimeName: "berth", RuntimeVersion: "v9", CgroupDriver: "systemd", Network: n, EffectiveConfig: map[string]string{"root": "/r"}})
	s.SetReady()
	return s
}

func TestStatusConditionsAndFeatures(t *testing.T) {
	n := &fakeNetwork{notReady: errors.New("no CNI config in /etc/cni/net.d")}
	s := runtimeServer(n)
	resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	conds := resp.GetStatus().GetConditions()
	if len(conds) != 2 || !conds[0].GetStatus() || conds[0].GetType() != runtimeapi.RuntimeReady {
		t.Fatalf("runtime condition: %v", conds)
	}
	if conds[1].GetType() != runtimeapi.NetworkReady || conds[1].GetStatus() || conds[1].GetReason() != "NetworkPluginNotReady" || conds[1].GetMessage() != n.notReady.Error() {
		t.Fatalf("network condition: %v", conds[1])
	}
	var cfg map[string]string
	if err := json.Unmarshal([]byte(resp.GetInfo()["config"]), &cfg); err != nil || cfg["root"] != "/r" {
		t.Fatalf("verbose config: %v %v", err, resp.GetInfo())
	}
	var sec map[string]bool
	if err := json.Unmarshal([]byte(resp.GetInfo()["security"]), &sec); err != nil || !sec["seccomp"] {
		t.Fatalf("verbose security: %v %v", err, resp.GetInfo()["security"])
	}
	if _, err := os.Stat("/sys/module/apparmor"); err != nil && sec["apparmor"] {
		t.Fatal("AppArmor reported on a host without it")
	}
	if !resp.GetRuntimeHandlers()[0].GetFeatures().GetRecursiveReadOnlyMounts() || !resp.GetFeatures().GetSupplementalGroupsPolicy() ||
		!resp.GetRuntimeHandlers()[0].GetFeatures().GetUserNamespaces() || resp.GetFeatures().GetUserNamespacesHostNetwork() {
		t.Fatalf("features: %v", resp)
	}
	n.notReady = nil
	resp, _ = s.Status(context.Background(), &runtimeapi.StatusRequest{})
	if c := resp.GetStatus().GetConditions()[1]; !c.GetStatus() || c.GetReason() != "" {
		t.Fatalf("ready network: %v", c)
	}
}

func TestVersionAndRuntimeConfig(t *testing.T) {
	s := runtimeServer(&fakeNetwork{})
	v, _ := s.Version(context.Background(), &runtimeapi.VersionRequest{})
	if v.GetRuntimeName() != "berth" || v.GetRuntimeVersion() != "v9" || v.GetRuntimeApiVersion() != "v1" {
		t.Fatalf("version: %v", v)
	}
	rc, _ := s.RuntimeConfig(context.Background(), &runtimeapi.RuntimeConfigRequest{})
	if rc.GetLinux().GetCgroupDriver() != runtimeapi.CgroupDriver_SYSTEMD {
		t.Fatalf("runtime config: %v", rc)
	}
}

func TestUpdateRuntimeConfigKeepsPodCIDR(t *testing.T) {
	n := &fakeNetwork{}
	s := runtimeServer(n)
	ctx := context.Background()
	req := func(cidr string) *runtimeapi.UpdateRuntimeConfigRequest {
		return &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidr}}}
	}
	if _, err := s.UpdateRuntimeConfig(ctx, req("10.244.1.0/24,fd00:1::/64")); err != nil {
		t.Fatal(err)
	}
	if n.cidr != "10.244.1.0/24,fd00:1::/64" {
		t.Fatalf("cidr %q", n.cidr)
	}
	// An empty update keeps what was set; a bad CIDR is refused.
	if _, err := s.UpdateRuntimeConfig(ctx, req("")); err != nil || n.cidr == "" {
		t.Fatalf("empty update: %v, cidr %q", err, n.cidr)
	}
	if _, err := s.UpdateRuntimeConfig(ctx, req("not-a-cidr")); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad cidr: %v", err)
	}
	resp, _ := s.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if resp.GetInfo()["podCIDR"] != `"10.244.1.0/24,fd00:1::/64"` {
		t.Fatalf("verbose podCIDR: %v", resp.GetInfo())
	}
}
