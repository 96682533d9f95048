package images

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// progress counts what a pull has done. Flights that several pulls share
// mirror their counts into each of them (followers), so every caller's
// stall watchdog sees the bytes that the shared download receives.
type progress struct {
	activity   atomic.Int64 // every byte read from a registry or the local store
	layerBytes atomic.Int64 // compressed layer bytes read
	totalBytes atomic.Int64 // compressed size of all layers, once known
	layers     atomic.Int64
	layersDone atomic.Int64

	mu        sync.Mutex
	followers []*progress
}

func (p *progress) forward(f func(*progress)) {
	p.mu.Lock()
	fs := slices.Clone(p.followers)
	p.mu.Unlock()
	for _, q := range fs {
		f(q)
	}
}

// addActivity records n bytes read from anywhere.
func (p *progress) addActivity(n int64) {
	p.activity.Add(n)
	p.forward(func(q *progress) { q.addActivity(n) })
}

// addLayerBytes records n compressed layer bytes.
func (p *progress) addLayerBytes(n int64) {
	p.layerBytes.Add(n)
	p.activity.Add(n)
	p.forward(func(q *progress) { q.addLayerBytes(n) })
}

func (p *progress) setTotals(bytes, layers int64) {
	p.totalBytes.Store(bytes)
	p.layers.Store(layers)
	p.forward(func(q *progress) { q.setTotals(bytes, layers) })
}

func (p *progress) layerDone() {
	p.layersDone.Add(1)
	p.forward(func(q *progress) { q.layerDone() })
}

// follow makes q receive p's counts: what p has done so far, then every
// update.
func (p *progress) follow(q *progress) {
	p.mu.Lock()
	p.followers = append(p.followers, q)
	p.mu.Unlock()
	q.activity.Add(p.activity.Load())
	q.layerBytes.Add(p.layerBytes.Load())
	if t := p.totalBytes.Load(); t > 0 {
		q.totalBytes.Store(t)
		q.layers.Store(p.layers.Load())
	}
	q.layersDone.Add(p.layersDone.Load())
}

func (p *progress) unfollow(q *progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.followers = slices.DeleteFunc(p.followers, func(x *progress) bool { return x == q })
}

// progressReader counts bytes read through it as layer bytes.
type progressReader struct {
	r io.Reader
	p *progress
}

func (c *progressReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.p.addLayerBytes(int64(n))
	}
	return n, err
}

type progressKey struct{}

func withProgress(ctx context.Context, p *progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

// countingTransport counts every response byte as activity of the pull
// whose context made the request, so manifest and token exchanges count as
// progress too.
type countingTransport struct{ base http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	p, _ := req.Context().Value(progressKey{}).(*progress)
	if err != nil || p == nil {
		return resp, err
	}
	p.addActivity(1) // an answer is progress even when it has no body
	resp.Body = &countingBody{ReadCloser: resp.Body, p: p}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	p *progress
}

func (b *countingBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if n > 0 {
		b.p.addActivity(int64(n))
	}
	return n, err
}

// stallError is why a pull that stopped making progress was cancelled.
type stallError struct {
	ref      string
	timeout  time.Duration
	received int64
	total    int64
}

func (e *stallError) Error() string {
	return fmt.Sprintf("%s: pull %s made no progress for %s (%d of %d layer bytes received); raise images.pull_progress_timeout if the registry is just slow",
		crierrors.ErrRegistryUnavailable, e.ref, e.timeout, e.received, e.total)
}

func (e *stallError) Unwrap() []error {
	return []error{crierrors.ErrRegistryUnavailable, errdefs.ErrUnavailable}
}

// watch cancels ctx when p makes no progress for timeout, and logs the
// pull's progress at info every logEvery once it has run that long. stop
// ends the watch.
func watch(ctx context.Context, log *slog.Logger, ref string, p *progress, timeout, logEvery time.Duration) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	tick := min(max(timeout/10, 10*time.Millisecond), time.Second)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		last, lastChange, lastLog := p.activity.Load(), start, start
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				if a := p.activity.Load(); a != last {
					last, lastChange = a, now
				} else if now.Sub(lastChange) >= timeout {
					cancel(&stallError{ref: ref, timeout: timeout, received: p.layerBytes.Load(), total: p.totalBytes.Load()})
					return
				}
				if now.Sub(lastLog) >= logEvery {
					lastLog = now
					log.Info("pulling image", "image", ref,
						"bytes", p.layerBytes.Load(), "total_bytes", p.totalBytes.Load(),
						"layers_done", p.layersDone.Load(), "layers", p.layers.Load(),
						"elapsed", now.Sub(start).Round(time.Second))
				}
			}
		}
	}()
	return ctx, func() {
		close(done)
		cancel(nil)
	}
}
