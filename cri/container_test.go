package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/sandbox"
	"github.com/berth-runtime/berth/state"
)

// fakeContainers keeps records in memory with the real ID index; the
// container package's own tests run real containers.
type fakeContainers struct {
	byID map[string]*container.Container
	ids  *state.IDIndex
	exec func(cmd []string, timeout time.Duration) (*container.ExecResult, error)
}

func newFakeContainers(cs ...*container.Container) *fakeContainers {
	f := &fakeContainers{byID: map[string]*container.Container{}, ids: state.NewIDIndex()}
	for _, c := range cs {
		f.byID[c.ID] = c
		f.ids.Add(c.ID)
	}
	return f
}

func (f *fakeContainers) Create(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig) (string, error) {
	return "new", nil
}
func (f *fakeContainers) Start(ctx context.Context, id string) error { return nil }
func (f *fakeContainers) Stop(ctx context.Context, id string, timeout time.Duration) error {
	_, err := f.Get(id)
	return err
}
func (f *fakeContainers) Remove(ctx context.Context, id string) error {
	_, err := f.Get(id)
	return err
}
func (f *fakeContainers) Get(id string) (*container.Container, error) {
	full, err := f.ids.Resolve(id)
	if err != nil {
		return nil, err
	}
	return f.byID[full], nil
}
func (f *fakeContainers) List() []*container.Container {
	var out []*container.Container
	for _, c := range f.byID {
		out = append(out, c)
	}
	return out
}
func (f *fakeContainers) Spec(c *container.Container) (json.RawMessage, error) {
	return json.RawMessage(`{"ociVersion":"1.2.0"}`), nil
}
func (f *fakeContainers) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (*container.ExecResult, error) {
	return f.exec(cmd, timeout)
}
func (f *fakeContainers) UpdateResources(_ context.Context, id string, r *runtimeapi.LinuxContainerResources) error {
	return nil
}
func (f *fakeContainers) ReopenLog(id string) error { return nil }
func (f *fakeContainers) Stats(id string) (*runtimeapi.ContainerStats, error) {
	c, err := f.Get(id)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{Id: c.ID}}, nil
}
func (f *fakeContainers) ListStats(keep func(*container.Container) bool) []*runtimeapi.ContainerStats {
	var out []*runtimeapi.ContainerStats
	for _, c := range f.byID {
		if keep(c) {
			out = append(out, &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{Id: c.ID}})
		}
	}
	return out
}

func testContainer(id, pod string, st container.State, labels map[string]string) *container.Container {
	cfg, _ := protojson.Marshal(&runtimeapi.ContainerConfig{
		Mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv"}},
		Linux:  &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512}},
	})
	return &container.Container{
		ID: id, PodID: pod, Name: "n-" + id, Attempt: 1, Labels: labels, State: st,
		Image: "busybox", ImageID: "sha256:img", ImageRef: "docker.io/library/busybox@sha256:abc",
		CreatedAt: time.Unix(10, 0), StartedAt: time.Unix(11, 0), ExitCode: 3, Reason: "Error",
		StopSignal: "SIGINT", UID: 1000, GID: 1000, Groups: []uint32{50}, Config: cfg,
	}
}

func containerServer(cs *fakeContainers, pods ...*sandbox.Pod) *Server {
	s := NewServer(Options{Sandboxes: newFakeSandboxes(pods...), Containers: cs, Events: events.New()})
	s.SetReady()
	return s
}

func TestContainerStatusAndList(t *testing.T) {
	cs := newFakeContainers(
		testContainer("aaa1", "pod1", container.StateRunning, map[string]string{"app": "x"}),
		testContainer("aab2", "pod1", container.StateExited, map[string]string{"app": "y"}),
		testContainer("bbb3", "pod2", container.StateCreated, nil),
		// Still being created (NRI plugins may yet refuse it): not listed.
		testContainer("ccc4", "pod1", container.StateCreating, map[string]string{"app": "x"}),
	)
	s := containerServer(cs)
	ctx := context.Background()
	resp, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "aab", Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStatus()
	if st.GetId() != "aab2" || st.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || st.GetExitCode() != 3 ||
		st.GetReason() != "Error" || st.GetImageRef() != "docker.io/library/busybox@sha256:abc" || st.GetImageId() != "sha256:img" ||
		st.GetStartedAt() != time.Unix(11, 0).UnixNano() || st.GetFinishedAt() != 0 ||
		st.GetMounts()[0].GetContainerPath() != "/data" || st.GetResources().GetLinux().GetCpuShares() != 512 ||
		st.GetUser().GetLinux().GetUid() != 1000 || !slices.Equal(st.GetUser().GetLinux().GetSupplementalGroups(), []int64{1000, 50}) ||
		st.GetStopSignal() != runtimeapi.Signal_SIGNAL_SIGINT {
		t.Fatalf("status: %v", st)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil || info["runtimeSpec"] == nil {
		t.Fatalf("verbose info: %v %v", err, resp.GetInfo())
	}
	if _, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "zzz"}); codeOf(err) != codes.NotFound {
		t.Fatalf("unknown container: %v", err)
	}
	for _, tc := range []struct {
		f    *runtimeapi.ContainerFilter
		want int
	}{
		{nil, 3},
		{&runtimeapi.ContainerFilter{Id: "aa"}, 2},
		{&runtimeapi.ContainerFilter{PodSandboxId: "pod1"}, 2},
		{&runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}, 1},
		{&runtimeapi.ContainerFilter{LabelSelector: map[string]string{"app": "y"}}, 1},
		{&runtimeapi.ContainerFilter{PodSandboxId: "pod2", LabelSelector: map[string]string{"app": "y"}}, 0},
		{&runtimeapi.ContainerFilter{Id: "ccc4"}, 0},
	} {
		got, err := s.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: tc.f})
		if err != nil || len(got.GetContainers()) != tc.want {
			t.Errorf("filter %v: %d containers, want %d (%v)", tc.f, len(got.GetContainers()), tc.want, err)
		}
	}
	stats, _ := s.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: "pod1"}})
	if len(stats.GetStats()) != 2 {
		t.Fatalf("stats filter: %v", stats)
	}
}

func TestContainerIdempotenceAndValidation(t *testing.T) {
	s := containerServer(newFakeContainers())
	ctx := context.Background()
	if _, err := s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: "gone"}); err != nil {
		t.Errorf("stop of an unknown container: %v", err)
	}
	if _, err := s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: "gone"}); err != nil {
		t.Errorf("remove of an unknown container: %v", err)
	}
	if _, err := s.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "p"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("create without config: %v", err)
	}
	if _, err := s.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: "c"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("exec without cmd: %v", err)
	}
	if _, err := s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: "c", Timeout: -1}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("negative timeout: %v", err)
	}
}

func TestExecSyncTimeoutIsDeadlineExceeded(t *testing.T) {
	cs := newFakeContainers(testContainer("c1", "p", container.StateRunning, nil))
	cs.exec = func(cmd []string, timeout time.Duration) (*container.ExecResult, error) {
		if timeout != 2*time.Second {
			return nil, fmt.Errorf("timeout %v", timeout)
		}
		return nil, fmt.Errorf("exec: %w", context.DeadlineExceeded)
	}
	s := containerServer(cs)
	_, err := s.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: "c1", Cmd: []string{"x"}, Timeout: 2})
	if codeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("timeout: %v", err)
	}
}

// eventStream is a GetContainerEvents stream that records what it is sent.
type eventStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *runtimeapi.ContainerEventResponse
}

func (e *eventStream) Context() context.Context { return e.ctx }
func (e *eventStream) Send(r *runtimeapi.ContainerEventResponse) error {
	e.sent <- r
	return nil
}

func TestGetContainerEvents(t *testing.T) {
	pod := testPod("pod1", "p", sandbox.StateReady, nil)
	cs := newFakeContainers(testContainer("c1", "pod1", container.StateRunning, nil))
	s := containerServer(cs, pod)
	ctx, cancel := context.WithCancel(context.Background())
	stream := &eventStream{ctx: ctx, sent: make(chan *runtimeapi.ContainerEventResponse, 10)}
	done := make(chan error)
	go func() { done <- s.GetContainerEvents(&runtimeapi.GetEventsRequest{}, stream) }()
	// Publish until the subscription is in place.
	var got *runtimeapi.ContainerEventResponse
	for got == nil {
		s.opts.Events.Publish(events.Event{Type: events.Started, PodID: "pod1", ContainerID: "c1"})
		select {
		case got = <-stream.sent:
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got.GetContainerId() != "c1" || got.GetContainerEventType() != runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT ||
		got.GetPodSandboxStatus().GetId() != "pod1" || len(got.GetContainersStatuses()) != 1 {
		t.Fatalf("event: %v", got)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stream end: %v", err)
	}
}
