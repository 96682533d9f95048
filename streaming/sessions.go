package streaming

import (
	"sync"
	"time"
)

// sessions counts the requests being served, so that Stop returns only
// once every session it ended has finished (its process reaped, its
// connections closed) and refuses requests that arrive meanwhile.
type sessions struct {
	mu       sync.Mutex
	active   int
	stopping bool
	idle     chan struct{} // closed when active drops to 0 while stopping
}

// begin registers a session; false means the server is stopping.
func (s *sessions) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.active++
	return true
}

func (s *sessions) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.stopping && s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// stop refuses new sessions and waits up to timeout for the running ones;
// it returns how many were still running.
func (s *sessions) stop(timeout time.Duration) int {
	s.mu.Lock()
	s.stopping = true
	if s.active == 0 {
		s.mu.Unlock()
		return 0
	}
	idle := make(chan struct{})
	s.idle = idle
	s.mu.Unlock()
	select {
	case <-idle:
		return 0
	case <-time.After(timeout):
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.active
	}
}
