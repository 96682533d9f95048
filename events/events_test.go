package events

import "testing"

func TestInOrderToEverySubscriber(t *testing.T) {
	b := New()
	a, cancelA := b.Subscribe()
	c, cancelC := b.Subscribe()
	defer cancelA()
	defer cancelC()
	for i, typ := range []Type{Created, Started, Stopped, Deleted} {
		b.Publish(Event{Type: typ, ContainerID: string(rune('a' + i))})
	}
	for _, ch := range []<-chan Event{a, c} {
		for i, want := range []Type{Created, Started, Stopped, Deleted} {
			e := <-ch
			if e.Type != want || e.ContainerID != string(rune('a'+i)) || e.Time.IsZero() {
				t.Fatalf("event %d: %+v", i, e)
			}
		}
	}
}

func TestSlowSubscriberDroppedNotBlocking(t *testing.T) {
	b := New()
	slow, cancel := b.Subscribe()
	defer cancel()
	fast, cancelFast := b.Subscribe()
	defer cancelFast()
	done := make(chan struct{})
	go func() {
		for range fast {
		}
		close(done)
	}()
	for i := 0; i < queue*3; i++ {
		b.Publish(Event{Type: Started}) // must never block
	}
	n := 0
	for range slow {
		n++
	}
	if n != queue {
		t.Fatalf("slow subscriber got %d events before being dropped, want %d", n, queue)
	}
	cancelFast()
	<-done
	cancel() // cancelling a dropped subscription is harmless
}
