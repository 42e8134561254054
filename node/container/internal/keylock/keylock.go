// Package keylock serializes work per key (a container ID) while letting
// different keys proceed in parallel. Safe for concurrent use.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of per-key locks; the zero value is ready to use.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry // guarded by mu; entries live while referenced
}

type entry struct {
	ch   chan struct{} // holds one token while locked
	refs int           // guarded by Map.mu
}

// Lock takes the lock for key, or gives up with ctx's error. The returned
// func releases it.
func (m *Map) Lock(ctx context.Context, key string) (func(), error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = make(map[string]*entry)
	}
	e := m.locks[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.refs++
	m.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; m.release(key, e) }, nil
	case <-ctx.Done():
		m.release(key, e)
		return nil, ctx.Err()
	}
}

func (m *Map) release(key string, e *entry) {
	m.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(m.locks, key)
	}
	m.mu.Unlock()
}
