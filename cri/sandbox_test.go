package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
)

// fakeSandboxes keeps pods in memory with the real ID index.
type fakeSandboxes struct {
	pods    map[string]*sandbox.Pod
	ids     *state.IDIndex
	stopped []string
}

func newFakeSandboxes(pods ...*sandbox.Pod) *fakeSandboxes {
	f := &fakeSandboxes{pods: map[string]*sandbox.Pod{}, ids: state.NewIDIndex()}
	for _, p := range pods {
		f.pods[p.ID] = p
		f.ids.Add(p.ID)
	}
	return f
}

func (f *fakeSandboxes) Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, h string) (string, error) {
	return "new", nil
}

func (f *fakeSandboxes) Stop(ctx context.Context, id string) error {
	p, err := f.Get(id)
	if err != nil {
		return err
	}
	f.stopped = append(f.stopped, p.ID)
	return nil
}

func (f *fakeSandboxes) Remove(ctx context.Context, id string) error {
	p, err := f.Get(id)
	if err != nil {
		return nil
	}
	delete(f.pods, p.ID)
	f.ids.Delete(p.ID)
	return nil
}

func (f *fakeSandboxes) Get(id string) (*sandbox.Pod, error) {
	full, err := f.ids.Resolve(id)
	if err != nil {
		return nil, err
	}
	return f.pods[full], nil
}

func (f *fakeSandboxes) List() []*sandbox.Pod {
	var out []*sandbox.Pod
	for _, p := range f.pods {
		out = append(out, p)
	}
	return out
}

func (f *fakeSandboxes) Stats(id string) (*sandbox.Stats, error) {
	if _, err := f.Get(id); err != nil {
		return nil, err
	}
	return &sandbox.Stats{
		Timestamp: time.Unix(100, 0), HasCgroup: true, CPUUsageNanos: 7, MemoryWorkingSet: 8, Processes: 2,
		Interfaces: []sandbox.InterfaceStats{{Name: "eth0", RxBytes: 10, TxBytes: 20}},
	}, nil
}

func (f *fakeSandboxes) UpdateResources(ctx context.Context, id string, o, r *runtimeapi.LinuxContainerResources) error {
	_, err := f.Get(id)
	return err
}

func testPod(id, name string, st sandbox.State, labels map[string]string) *sandbox.Pod {
	return &sandbox.Pod{
		ID: id, Name: name, Namespace: "ns", UID: "uid-" + name, State: st, Labels: labels,
		CreatedAt: time.Unix(1, 0), PIDMode: sandbox.PIDPod, InfraPID: 42,
		IPs: []string{"10.88.0.5", "fd00::5"}, NetNS: "/run/berth/ns/" + id + "/net",
	}
}

func newTestServer(sb Sandboxes) *Server {
	s := NewServer(Options{Sandboxes: sb})
	s.SetReady()
	return s
}

func TestListPodSandboxFilters(t *testing.T) {
	fake := newFakeSandboxes(
		testPod("aaa111", "a", sandbox.StateReady, map[string]string{"app": "web", "tier": "front"}),
		testPod("aaa222", "b", sandbox.StateNotReady, map[string]string{"app": "web"}),
		testPod("bbb333", "c", sandbox.StateReady, map[string]string{"app": "db"}),
		// Still being made (NRI plugins may yet refuse it): not listed.
		testPod("ccc444", "d", sandbox.StateCreating, map[string]string{"app": "web"}),
	)
	s := newTestServer(fake)
	ready := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	for _, c := range []struct {
		name   string
		filter *runtimeapi.PodSandboxFilter
		want   string
	}{
		{"all", nil, "aaa111,aaa222,bbb333"},
		{"full id", &runtimeapi.PodSandboxFilter{Id: "bbb333"}, "bbb333"},
		{"prefix", &runtimeapi.PodSandboxFilter{Id: "bbb"}, "bbb333"},
		{"ambiguous prefix", &runtimeapi.PodSandboxFilter{Id: "aaa"}, ""},
		{"unknown id", &runtimeapi.PodSandboxFilter{Id: "zzz"}, ""},
		{"being made", &runtimeapi.PodSandboxFilter{Id: "ccc444"}, ""},
		{"state", &runtimeapi.PodSandboxFilter{State: ready}, "aaa111,bbb333"},
		{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web"}}, "aaa111,aaa222"},
		{"labels and state", &runtimeapi.PodSandboxFilter{State: ready, LabelSelector: map[string]string{"app": "web"}}, "aaa111"},
		{"two labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web", "tier": "front"}}, "aaa111"},
	} {
		resp, err := s.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: c.filter})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ids []string
		for _, it := range resp.Items {
			ids = append(ids, it.Id)
		}
		if got := strings.Join(slices.Sorted(slices.Values(ids)), ","); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestPodSandboxStatus(t *testing.T) {
	p := testPod("abc123", "web", sandbox.StateReady, map[string]string{"app": "web"})
	p.Annotations = map[string]string{"a": "b"}
	p.HostIPC = true
	s := newTestServer(newFakeSandboxes(p))
	resp, err := s.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "abc", Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Status
	if st.Id != "abc123" || st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.CreatedAt != time.Unix(1, 0).UnixNano() ||
		st.Network.Ip != "10.88.0.5" || len(st.Network.AdditionalIps) != 1 || st.Network.AdditionalIps[0].Ip != "fd00::5" ||
		st.Metadata.Name != "web" || st.Labels["app"] != "web" || st.Annotations["a"] != "b" {
		t.Errorf("status = %v", st)
	}
	opts := st.Linux.Namespaces.Options
	if opts.Network != runtimeapi.NamespaceMode_POD || opts.Ipc != runtimeapi.NamespaceMode_NODE || opts.Pid != runtimeapi.NamespaceMode_POD {
		t.Errorf("namespace options = %v", opts)
	}
	var info struct {
		Pid   int
		Netns string
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Pid != 42 || info.Netns != p.NetNS {
		t.Errorf("verbose info = %s (%v)", resp.Info["info"], err)
	}

	_, err = s.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "nope"})
	if status.Code(toStatus(err)) != codes.NotFound {
		t.Errorf("status of an unknown pod = %v", err)
	}
}

func TestStopRemoveIdempotentForUnknown(t *testing.T) {
	s := newTestServer(newFakeSandboxes())
	if _, err := s.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: "gone"}); err != nil {
		t.Errorf("stop unknown = %v", err)
	}
	if _, err := s.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "gone"}); err != nil {
		t.Errorf("remove unknown = %v", err)
	}
}

func TestRunPodSandboxValidation(t *testing.T) {
	s := newTestServer(newFakeSandboxes())
	_, err := s.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{})
	if status.Code(toStatus(err)) != codes.InvalidArgument {
		t.Errorf("run without config = %v", err)
	}
	_, err = s.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}, RuntimeHandler: "kata"})
	if !errdefs.IsNotFound(err) {
		t.Errorf("run with an unknown handler = %v", err)
	}
}

func TestPodSandboxStats(t *testing.T) {
	fake := newFakeSandboxes(
		testPod("aaa111", "a", sandbox.StateReady, map[string]string{"app": "web"}),
		testPod("bbb222", "b", sandbox.StateReady, map[string]string{"app": "db"}),
	)
	s := newTestServer(fake)
	resp, err := s.PodSandboxStats(context.Background(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: "aaa"})
	if err != nil {
		t.Fatal(err)
	}
	l := resp.Stats.Linux
	if resp.Stats.Attributes.Id != "aaa111" || l.Cpu.UsageCoreNanoSeconds.Value != 7 || l.Memory.WorkingSetBytes.Value != 8 ||
		l.Process.ProcessCount.Value != 2 || l.Network.DefaultInterface.Name != "eth0" || l.Network.DefaultInterface.TxBytes.Value != 20 {
		t.Errorf("stats = %v", resp.Stats)
	}
	list, err := s.ListPodSandboxStats(context.Background(), &runtimeapi.ListPodSandboxStatsRequest{
		Filter: &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "db"}},
	})
	if err != nil || len(list.Stats) != 1 || list.Stats[0].Attributes.Id != "bbb222" {
		t.Errorf("list stats = %v, %v", list, err)
	}
}

// StreamPodSandboxes sends every pod in chunks and ends.
func TestStreamPodSandboxes(t *testing.T) {
	var pods []*sandbox.Pod
	for i := range 250 {
		pods = append(pods, testPod(fmt.Sprintf("id%03d", i), fmt.Sprint(i), sandbox.StateReady, nil))
	}
	s := newTestServer(newFakeSandboxes(pods...))
	stream := &fakePodStream{}
	if err := s.StreamPodSandboxes(&runtimeapi.StreamPodSandboxesRequest{}, stream); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, m := range stream.sent {
		total += len(m.PodSandboxes)
	}
	if len(stream.sent) != 3 || total != 250 {
		t.Errorf("sent %d messages, %d pods", len(stream.sent), total)
	}
}

type fakePodStream struct {
	runtimeapi.RuntimeService_StreamPodSandboxesServer
	sent []*runtimeapi.StreamPodSandboxesResponse
}

func (f *fakePodStream) Send(m *runtimeapi.StreamPodSandboxesResponse) error {
	f.sent = append(f.sent, m)
	return nil
}
