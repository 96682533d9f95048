package streaming

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// maxPendingTokens bounds the URLs handed out and not yet used, so a client
// calling Exec in a loop cannot grow the table without end (cri-streaming
// has the same limit).
const maxPendingTokens = 1000

// tokenBytes is the entropy of a token: the URL is the only credential a
// streaming request carries.
const tokenBytes = 32

// tokens hands out single-use tokens that expire. cri-streaming has a token
// cache of its own, but its lifetime is a fixed minute (request_cache.go,
// unexported), and berth's is configured (streaming.token_ttl): so berth's
// tokens are the ones in the URLs, and each is traded for a library token
// only at the instant the client connects.
type tokens struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	pending map[string]pending
}

type pending struct {
	kind    string // "exec", "attach" or "portforward": the URL's first element
	req     any    // the CRI request the URL stands for
	expires time.Time
}

func newTokens(ttl time.Duration) *tokens {
	return &tokens{ttl: ttl, now: time.Now, pending: map[string]pending{}}
}

// issue records req and returns the token that redeems it once.
func (t *tokens) issue(kind string, req any) (string, error) {
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("streaming token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropExpired()
	if len(t.pending) >= maxPendingTokens {
		return "", fmt.Errorf("%d streaming requests are waiting for their client: %w", len(t.pending), errdefs.ErrResourceExhausted)
	}
	t.pending[token] = pending{kind: kind, req: req, expires: t.now().Add(t.ttl)}
	return token, nil
}

// redeem returns the request of a live token of the given kind and forgets
// the token, whatever the outcome: a token is good for one attempt.
func (t *tokens) redeem(kind, token string) (any, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.pending[token]
	if !ok {
		return nil, false
	}
	delete(t.pending, token)
	if p.kind != kind || t.now().After(p.expires) {
		return nil, false
	}
	return p.req, true
}

// dropExpired forgets tokens nobody redeemed in time. Called with mu held.
func (t *tokens) dropExpired() {
	now := t.now()
	for token, p := range t.pending {
		if now.After(p.expires) {
			delete(t.pending, token)
		}
	}
}
