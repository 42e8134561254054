package logfile

import (
	"encoding/binary"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Followers wake on inotify events of the log's directory instead of
// waiting out their poll: a line reaches `kubectl logs -f` and an attached
// terminal as soon as the logger wrote it, where a quiet log's poll had
// backed off to pollMax. One inotify instance serves the whole process
// (the per-user limit on instances is small, 128 by default), with one
// watch per directory shared by its followers. Anything that goes wrong
// leaves followers on polling alone.

const watchMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE

type dirWatcher struct {
	mu   sync.Mutex
	f    *os.File             // the inotify instance; nil until first used
	dirs map[string]*dirWatch // by directory
	wds  map[int32]*dirWatch  // by watch descriptor
	err  error                // why inotify is unusable
}

type dirWatch struct {
	wd   int32
	dir  string
	subs map[chan struct{}]struct{}
}

var watcher dirWatcher

// watchDir returns a channel that receives (coalesced) whenever something
// in dir is written, created or renamed into it, and a function that stops
// it. A nil channel means inotify is not available: poll.
func watchDir(dir string) (<-chan struct{}, func()) {
	w := &watcher
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil && w.err == nil {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			w.err = err
		} else {
			w.f = os.NewFile(uintptr(fd), "inotify") // non-blocking: reads wait in the runtime's poller
			w.dirs, w.wds = map[string]*dirWatch{}, map[int32]*dirWatch{}
			go w.read()
		}
	}
	if w.err != nil {
		return nil, func() {}
	}
	dw := w.dirs[dir]
	if dw == nil {
		wd, err := unix.InotifyAddWatch(int(w.f.Fd()), dir, watchMask)
		if err != nil {
			return nil, func() {}
		}
		dw = &dirWatch{wd: int32(wd), dir: dir, subs: map[chan struct{}]struct{}{}}
		w.dirs[dir], w.wds[dw.wd] = dw, dw
	}
	ch := make(chan struct{}, 1)
	dw.subs[ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(dw.subs, ch)
		if len(dw.subs) == 0 && w.dirs[dw.dir] == dw {
			delete(w.dirs, dw.dir)
			delete(w.wds, dw.wd)
			_, _ = unix.InotifyRmWatch(int(w.f.Fd()), uint32(dw.wd))
		}
	}
}

// read passes events to the subscribers of their directory until the
// instance fails; then every follower polls.
func (w *dirWatcher) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			off += unix.SizeofInotifyEvent + nameLen
			dw := w.wds[wd]
			if dw == nil {
				continue
			}
			for ch := range dw.subs {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			if mask&unix.IN_IGNORED != 0 { // the directory went away
				delete(w.wds, wd)
				if w.dirs[dw.dir] == dw {
					delete(w.dirs, dw.dir)
				}
			}
		}
		w.mu.Unlock()
	}
}
