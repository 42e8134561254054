//go:build !linux

package logfile

// watchDir is not available here: followers poll.
func watchDir(string) (<-chan struct{}, func()) { return nil, func() {} }
