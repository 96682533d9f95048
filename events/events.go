// Package events fans lifecycle events of pods and containers out to
// subscribers (kubelet's evented PLEG through GetContainerEvents), in order,
// never letting a slow subscriber hold up the runtime.
package events

import (
	"sync"
	"time"
)

// Type is what happened.
type Type int

// Event types, matching the CRI's ContainerEventType.
const (
	Created Type = iota
	Started
	Stopped
	Deleted
)

// Event is one lifecycle change. ContainerID is empty for a pod's own
// events (the CRI reports those with the pod's ID in its place).
type Event struct {
	Type        Type
	PodID       string
	ContainerID string
	Time        time.Time
}

// queue is how many events wait for one subscriber before it is dropped.
const queue = 1024

// Broadcaster delivers every published event to every subscriber.
type Broadcaster struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// New returns a broadcaster with no subscribers.
func New() *Broadcaster { return &Broadcaster{subs: map[chan Event]struct{}{}} }

// Subscribe returns a channel of events and a cancel function. The channel
// is closed when cancel is called or when the subscriber fell more than a
// queue behind: it then must resubscribe and relist, as kubelet does when
// its stream ends.
func (b *Broadcaster) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, queue)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// Publish hands e to every subscriber without waiting for any of them.
func (b *Broadcaster) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
			delete(b.subs, ch)
			close(ch)
		}
	}
}
