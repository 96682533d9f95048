package images

import (
	"context"
	"errors"
	"sync"
)

// errAbandoned cancels shared work that every caller has stopped waiting for.
var errAbandoned = errors.New("every pull waiting for this download gave up")

// flightGroup runs one piece of work per key however many callers ask for
// it at once, like singleflight, with two differences that pulls need:
//
//   - the work does not run on the first caller's context: a caller that
//     gives up (kubelet's deadline, a stall) leaves, and the work goes on
//     for the others; only when no caller is left is it cancelled;
//   - each caller's progress follows the work's, so every caller's stall
//     watchdog sees the shared download move.
type flightGroup[T any] struct {
	mu      sync.Mutex
	flights map[string]*flight[T]
}

type flight[T any] struct {
	done     chan struct{}
	val      T
	err      error
	waiters  int
	cancel   context.CancelCauseFunc
	progress *progress
}

// do runs work for key, or joins the run already going, and returns its
// result. p follows the work's progress while the caller waits. The work's
// context keeps ctx's values but not its cancellation.
func (g *flightGroup[T]) do(ctx context.Context, key string, p *progress, work func(ctx context.Context, p *progress) (T, error)) (T, error) {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = map[string]*flight[T]{}
	}
	f, ok := g.flights[key]
	if !ok {
		wctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		f = &flight[T]{done: make(chan struct{}), cancel: cancel, progress: &progress{}}
		g.flights[key] = f
		go func() {
			defer cancel(nil)
			f.val, f.err = work(withProgress(wctx, f.progress), f.progress)
			g.mu.Lock()
			if g.flights[key] == f {
				delete(g.flights, key)
			}
			g.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	f.progress.follow(p)
	defer f.progress.unfollow(p)

	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants it any more. Forget it now, so a caller that
			// comes next starts afresh instead of joining a cancelled run.
			f.cancel(errAbandoned)
			if g.flights[key] == f {
				delete(g.flights, key)
			}
		}
		g.mu.Unlock()
		var zero T
		return zero, context.Cause(ctx)
	}
}
