package sandbox

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/events"
)

// A pod's own lifecycle reaches GetContainerEvents subscribers in order.
func TestPodEvents(t *testing.T) {
	e := newEnv(t)
	ch, cancel := e.mgr.opts.Events.Subscribe()
	defer cancel()
	cfg := podConfig("events")
	cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE // no CNI needed
	p := e.run(cfg)
	if err := e.mgr.Stop(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Remove(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	for _, want := range []events.Type{events.Created, events.Started, events.Stopped, events.Deleted} {
		select {
		case ev := <-ch:
			if ev.Type != want || ev.PodID != p.ID || ev.ContainerID != "" {
				t.Fatalf("event %+v, want type %d for pod %s", ev, want, p.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %d", want)
		}
	}
}
