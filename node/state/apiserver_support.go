package state

// OldestWatchRV is the oldest resourceVersion a watch can resume from: Watch
// with a SinceRV below it fails with ErrGone. The API server uses it to expire
// list continue tokens as Kubernetes does after a compaction.
func (s *Store) OldestWatchRV() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.histFrom
}
