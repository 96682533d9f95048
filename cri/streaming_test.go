package cri

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/container"
	"github.com/berth-runtime/berth/events"
	"github.com/berth-runtime/berth/sandbox"
)

// fakeStreaming records the requests that reached the streaming server.
type fakeStreaming struct {
	execs    []*runtimeapi.ExecRequest
	attaches []*runtimeapi.AttachRequest
	forwards []*runtimeapi.PortForwardRequest
}

func (f *fakeStreaming) GetExec(r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	f.execs = append(f.execs, r)
	return &runtimeapi.ExecResponse{Url: "http://stream/exec/t"}, nil
}

func (f *fakeStreaming) GetAttach(r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	f.attaches = append(f.attaches, r)
	return &runtimeapi.AttachResponse{Url: "http://stream/attach/t"}, nil
}

func (f *fakeStreaming) GetPortForward(r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	f.forwards = append(f.forwards, r)
	return &runtimeapi.PortForwardResponse{Url: "http://stream/portforward/t"}, nil
}

func (f *fakeStreaming) URL() string { return "http://127.0.0.1:4242" }

func streamingServer(st Streaming) *Server {
	cs := newFakeContainers(
		testContainer("run111", "pod111", container.StateRunning, nil),
		testContainer("exit22", "pod111", container.StateExited, nil),
		testContainer("made33", "pod111", container.StateCreated, nil),
	)
	pods := newFakeSandboxes(
		testPod("pod111", "a", sandbox.StateReady, nil),
		testPod("pod222", "b", sandbox.StateNotReady, nil),
	)
	s := NewServer(Options{Sandboxes: pods, Containers: cs, Events: events.New(), Streaming: st})
	s.SetReady()
	return s
}

func TestStreamingRPCsHandOutURLs(t *testing.T) {
	st := &fakeStreaming{}
	s := streamingServer(st)
	ctx := context.Background()
	// Prefixes resolve to full IDs before the URL is made: the session
	// must reach the container the RPC checked.
	e, err := s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "run", Cmd: []string{"sh"}, Stdin: true, Tty: true, Stdout: true})
	if err != nil || e.GetUrl() == "" {
		t.Fatalf("exec: %v %v", e, err)
	}
	if got := st.execs[0]; got.GetContainerId() != "run111" || !got.GetTty() || !got.GetStdin() || got.GetCmd()[0] != "sh" {
		t.Fatalf("exec request handed on: %v", got)
	}
	if _, err := s.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "run1", Stdout: true}); err != nil || st.attaches[0].GetContainerId() != "run111" {
		t.Fatalf("attach: %v %v", err, st.attaches)
	}
	if _, err := s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "pod1", Port: []int32{1, 80, 65535}}); err != nil ||
		st.forwards[0].GetPodSandboxId() != "pod111" || len(st.forwards[0].GetPort()) != 3 {
		t.Fatalf("port-forward: %v %v", err, st.forwards)
	}
}

func TestStreamingRPCsRefuseBadInput(t *testing.T) {
	st := &fakeStreaming{}
	s := streamingServer(st)
	ctx := context.Background()
	exec := func(id string, cmd ...string) error {
		_, err := s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Stdout: true})
		return err
	}
	attach := func(id string) error {
		_, err := s.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true})
		return err
	}
	forward := func(pod string, ports ...int32) error {
		_, err := s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: ports})
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"exec into an exited container", exec("exit22", "true"), codes.FailedPrecondition},
		{"exec into a created container", exec("made33", "true"), codes.FailedPrecondition},
		{"exec into an unknown container", exec("nope", "true"), codes.NotFound},
		{"exec without a container", exec("", "true"), codes.InvalidArgument},
		{"exec without a command", exec("run111"), codes.InvalidArgument},
		{"attach to an exited container", attach("exit22"), codes.FailedPrecondition},
		{"attach to an unknown container", attach("nope"), codes.NotFound},
		{"port 0", forward("pod111", 80, 0), codes.InvalidArgument},
		{"port 65536", forward("pod111", 65536), codes.InvalidArgument},
		{"negative port", forward("pod111", -1), codes.InvalidArgument},
		{"unknown pod", forward("nope", 80), codes.NotFound},
		{"stopped pod", forward("pod222", 80), codes.FailedPrecondition},
	} {
		if got := codeOf(tc.err); got != tc.want {
			t.Errorf("%s: %v (%s), want %s", tc.name, tc.err, got, tc.want)
		}
	}
	if len(st.execs)+len(st.attaches)+len(st.forwards) != 0 {
		t.Fatalf("refused requests reached the streaming server: %v %v %v", st.execs, st.attaches, st.forwards)
	}
}

func TestVerboseStatusShowsStreamingURL(t *testing.T) {
	s := streamingServer(&fakeStreaming{})
	s.opts.Network = &fakeNetwork{}
	resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetInfo()["streamingURL"]; got != `"http://127.0.0.1:4242"` {
		t.Fatalf("streamingURL %q in %v", got, resp.GetInfo())
	}
}

func TestStreamingRPCsWithoutServerAreUnavailable(t *testing.T) {
	s := streamingServer(nil)
	_, err := s.Exec(context.Background(), &runtimeapi.ExecRequest{ContainerId: "run111", Cmd: []string{"true"}, Stdout: true})
	if codeOf(err) != codes.Unavailable {
		t.Fatalf("exec without a streaming server: %v", err)
	}
}
