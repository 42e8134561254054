package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/shoal-dev/shoal/node/state"
)

// Watch event types on the wire, besides state's ADDED/MODIFIED/DELETED.
const (
	eventBookmark = "BOOKMARK"
	eventError    = "ERROR"
)

// initialEventsEnd marks the bookmark that ends sendInitialEvents.
const initialEventsEnd = "k8s.io/initial-events-end"

// watch streams {"type":…,"object":…} lines until the client goes away, the
// timeout passes or the store ends the watch (the client then re-lists or
// resumes from the last resourceVersion it saw).
func (s *Server) watch(rq *request) {
	filter, err := rq.listFilter()
	if err != nil {
		rq.fail(err)
		return
	}
	tableV := tableVersion(rq.r.Header.Get("Accept"))
	if tableV != "" {
		if _, err := rq.includeObject(); err != nil {
			rq.fail(err)
			return
		}
	}
	timeout := time.Duration(1800+rand.IntN(1800)) * time.Second
	if v := rq.query.Get("timeoutSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			rq.fail(badRequest("timeoutSeconds must be a non-negative integer, not %q", v))
			return
		}
		if n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	rvParam := rq.query.Get("resourceVersion")
	initial := rvParam == "" || rvParam == "0"
	endBookmark := false
	switch v := rq.query.Get("sendInitialEvents"); v {
	case "":
	case "true", "1":
		initial, endBookmark = true, true
	case "false", "0":
		initial = false
	default:
		rq.fail(badRequest("sendInitialEvents must be true or false, not %q", v))
		return
	}
	bookmarks := isTrue(rq.query.Get("allowWatchBookmarks"))

	opts := state.WatchOptions{Resource: rq.res.Key(), Namespace: rq.namespace}
	var (
		objs  []state.Object
		w     *state.Watcher
		since uint64
	)
	if initial {
		objs, since, w = s.store.ListAndWatch(opts)
	} else {
		if rvParam != "" {
			if since, err = strconv.ParseUint(rvParam, 10, 64); err != nil {
				rq.fail(badRequest("invalid resourceVersion %q", rvParam))
				return
			}
		} else {
			since = s.store.Revision()
		}
		opts.SinceRV = since
		w, err = s.store.Watch(opts)
		if errors.Is(err, state.ErrGone) {
			ww := s.startStream(rq)
			st := apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", since, s.store.OldestWatchRV())).ErrStatus
			st.Kind, st.APIVersion = "Status", "v1"
			if ww.send(eventError, &st) == nil {
				_ = ww.flush()
			}
			return
		}
		if err != nil {
			rq.fail(err)
			return
		}
	}
	defer w.Stop()

	ww := s.startStream(rq)
	ww.table = tableV
	for _, o := range objs {
		if filter.matches(o) {
			if ww.sendObject(string(state.Added), o) != nil {
				return
			}
		}
	}
	if endBookmark {
		if ww.bookmark(since, true) != nil {
			return
		}
	}
	if ww.flush() != nil {
		return
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var tick <-chan time.Time
	if bookmarks {
		t := time.NewTicker(s.bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	ctx := rq.r.Context()
	events := w.Events()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return // ended by the store (too slow, restored): the client re-lists
			}
			if ev.RV <= since {
				continue
			}
			typ, obj := classify(&ev, filter)
			if typ == "" {
				continue
			}
			if ww.sendObject(typ, obj) != nil {
				return
			}
			// Batch what is already queued into one flush.
			if len(events) == 0 && ww.flush() != nil {
				return
			}
		case <-tick:
			// Every event up to rev has been queued for this watcher; if none
			// is waiting, rev is a safe point to resume from.
			rev := s.store.Revision()
			if len(events) == 0 {
				if ww.bookmark(rev, false) != nil || ww.flush() != nil {
					return
				}
			}
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// classify decides what a watcher with filter f sees of ev: an object
// entering the selection is ADDED, one leaving it DELETED.
func classify(ev *state.Event, f *filter) (string, state.Object) {
	switch ev.Type {
	case state.Added, state.Deleted:
		if f.matches(ev.Object) {
			return string(ev.Type), ev.Object
		}
	case state.Modified:
		cur := f.matches(ev.Object)
		old := ev.Prev != nil && f.matches(ev.Prev)
		switch {
		case cur && old:
			return string(state.Modified), ev.Object
		case cur:
			return string(state.Added), ev.Object
		case old:
			gone := ev.Prev.DeepCopyObject().(state.Object)
			gone.SetResourceVersion(ev.Object.GetResourceVersion())
			return string(state.Deleted), gone
		}
	}
	return "", nil
}

// watchWriter writes watch events to one client.
type watchWriter struct {
	rq    *request
	buf   bytes.Buffer
	enc   *json.Encoder
	table string // Table version for as=Table watches, "" for objects
}

func (s *Server) startStream(rq *request) *watchWriter {
	h := rq.w.Header()
	h.Set("Content-Type", mediaJSON)
	h.Set("Cache-Control", "no-cache, private")
	rq.w.WriteHeader(http.StatusOK)
	rq.w.Flush()
	ww := &watchWriter{rq: rq}
	ww.enc = json.NewEncoder(&ww.buf)
	return ww
}

func (ww *watchWriter) sendObject(typ string, obj state.Object) error {
	if ww.table != "" {
		t, err := ww.rq.toTable([]state.Object{obj}, ww.table)
		if err != nil {
			st := toStatusError(err, ww.rq.res.groupResource(), obj.GetName()).ErrStatus
			st.Kind, st.APIVersion = "Status", "v1"
			return ww.send(eventError, &st)
		}
		return ww.send(typ, t)
	}
	return ww.send(typ, obj)
}

// send appends one event to the buffer, writing it out when the buffer is large.
func (ww *watchWriter) send(typ string, obj any) error {
	ww.buf.WriteString(`{"type":"`)
	ww.buf.WriteString(typ)
	ww.buf.WriteString(`","object":`)
	if err := ww.enc.Encode(obj); err != nil {
		return err
	}
	// Encode ended the object with a newline; the event ends after it.
	ww.buf.Truncate(ww.buf.Len() - 1)
	ww.buf.WriteString("}\n")
	if ww.buf.Len() >= 32<<10 {
		return ww.flush()
	}
	return nil
}

func (ww *watchWriter) bookmark(rv uint64, initialEnd bool) error {
	o := ww.rq.res.New()
	o.GetObjectKind().SetGroupVersionKind(ww.rq.res.GVK())
	o.SetResourceVersion(strconv.FormatUint(rv, 10))
	if initialEnd {
		o.SetAnnotations(map[string]string{initialEventsEnd: "true"})
	}
	return ww.send(eventBookmark, o)
}

// flush writes out what is buffered and flushes it to the client.
func (ww *watchWriter) flush() error {
	if ww.buf.Len() > 0 {
		if _, err := ww.rq.w.Write(ww.buf.Bytes()); err != nil {
			return err
		}
		ww.buf.Reset()
	}
	ww.rq.w.Flush()
	return nil
}
