package apiserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

func TestListSelectorsAndPaging(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 10; i++ {
		tier := "back"
		if i%2 == 0 {
			tier = "front"
		}
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: map[string]any{
			"metadata": map[string]any{"name": fmt.Sprintf("cm-%02d", i), "labels": map[string]string{"tier": tier}}}}, 201, nil)
	}
	e.ok(req{method: "POST", path: "/api/v1/namespaces/kube-system/configmaps", body: cmBody("sys", nil)}, 201, nil)

	names := func(l *corev1.ConfigMapList) []string {
		var out []string
		for _, c := range l.Items {
			out = append(out, c.Name)
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"labelSelector=tier%3Dfront", []string{"cm-00", "cm-02", "cm-04", "cm-06", "cm-08"}},
		{"labelSelector=tier+in+(back),tier!%3Dfront", []string{"cm-01", "cm-03", "cm-05", "cm-07", "cm-09"}},
		{"fieldSelector=metadata.name%3Dcm-03", []string{"cm-03"}},
		{"fieldSelector=metadata.name!%3Dcm-03,metadata.namespace%3Ddefault&labelSelector=tier%3Dback", []string{"cm-01", "cm-05", "cm-07", "cm-09"}},
	}
	for _, tt := range tests {
		var l corev1.ConfigMapList
		e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps?" + tt.query}, 200, &l)
		if got := names(&l); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.query, got, tt.want)
		}
	}
	var all corev1.ConfigMapList
	e.ok(req{method: "GET", path: "/api/v1/configmaps?fieldSelector=metadata.namespace%3Dkube-system"}, 200, &all)
	if got := names(&all); !slices.Equal(got, []string{"sys"}) {
		t.Errorf("all namespaces by field: %v", got)
	}

	// Paging: limit 3 over the 5 front ones; resourceVersion stays the first page's.
	var got []string
	cont := ""
	firstRV := ""
	pages := 0
	for {
		var l corev1.ConfigMapList
		q := "limit=3&labelSelector=tier%3Dfront"
		if cont != "" {
			q += "&continue=" + url.QueryEscape(cont)
		}
		e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps?" + q}, 200, &l)
		if firstRV == "" {
			firstRV = l.ResourceVersion
			// A write between pages does not change the list's resourceVersion.
			e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("zz-late", nil)}, 201, nil)
		} else if l.ResourceVersion != firstRV {
			t.Fatalf("page resourceVersion %s, first %s", l.ResourceVersion, firstRV)
		}
		got = append(got, names(&l)...)
		pages++
		if l.Continue == "" {
			break
		}
		cont = l.Continue
	}
	if pages != 2 || !slices.Equal(got, []string{"cm-00", "cm-02", "cm-04", "cm-06", "cm-08"}) {
		t.Fatalf("paged %d pages: %v", pages, got)
	}
	var l corev1.ConfigMapList
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps?limit=4"}, 200, &l)
	if l.RemainingItemCount == nil || *l.RemainingItemCount != 7 {
		t.Fatalf("remainingItemCount %v", l.RemainingItemCount)
	}

	// Pods support spec.nodeName and status.phase.
	for _, n := range []string{"n1", "n2"} {
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/pods", body: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + n},
			Spec: corev1.PodSpec{NodeName: n, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}, 201, nil)
	}
	var pl corev1.PodList
	e.ok(req{method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2,status.phase%3DPending"}, 200, &pl)
	if len(pl.Items) != 1 || pl.Items[0].Name != "p-n2" {
		t.Fatalf("pods by node: %d", len(pl.Items))
	}
	e.ok(req{method: "GET", path: "/api/v1/configmaps?fieldSelector=spec.nodeName%3Dn2"}, 400, nil)
}

func TestContinueExpires(t *testing.T) {
	e := newEnvWithStore(t, state.NewStore(5))
	for i := 0; i < 4; i++ {
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody(fmt.Sprintf("c%d", i), nil)}, 201, nil)
	}
	var l corev1.ConfigMapList
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps?limit=1"}, 200, &l)
	for i := 0; i < 10; i++ {
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody(fmt.Sprintf("d%d", i), nil)}, 201, nil)
	}
	st := status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps?limit=1&continue=" + url.QueryEscape(l.Continue)}, 410, nil))
	if st.Reason != metav1.StatusReasonExpired {
		t.Fatalf("expired continue: %+v", st)
	}
}

func TestTables(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("t", map[string]string{"a": "b"})}, 201, nil)
	var tab metav1.Table
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps", accept: tableAccept}, 200, &tab)
	if tab.Kind != "Table" || tab.APIVersion != "meta.k8s.io/v1" || len(tab.Rows) != 1 || tab.Rows[0].Cells[0] != "t" || tab.ResourceVersion == "" {
		t.Fatalf("table: %+v", tab)
	}
	var pom metav1.PartialObjectMetadata
	if err := json.Unmarshal(tab.Rows[0].Object.Raw, &pom); err != nil || pom.Kind != "PartialObjectMetadata" || pom.Name != "t" {
		t.Fatalf("row object: %s (%v)", tab.Rows[0].Object.Raw, err)
	}
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/t?includeObject=Object", accept: "application/json;as=Table;v=v1beta1;g=meta.k8s.io"}, 200, &tab)
	var cm corev1.ConfigMap
	if err := json.Unmarshal(tab.Rows[0].Object.Raw, &cm); err != nil || cm.Data["a"] != "b" || tab.APIVersion != "meta.k8s.io/v1beta1" {
		t.Fatalf("includeObject=Object: %s (%v)", tab.Rows[0].Object.Raw, err)
	}
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/t?includeObject=None", accept: tableAccept}, 200, &tab)
	if len(tab.Rows[0].Object.Raw) != 0 && string(tab.Rows[0].Object.Raw) != "null" {
		t.Fatalf("includeObject=None: %s", tab.Rows[0].Object.Raw)
	}
	// Plain JSON first wins.
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/t", accept: "application/json, " + tableAccept}, 200, &cm)
	if cm.Kind != "ConfigMap" {
		t.Fatalf("plain JSON answer: %+v", cm)
	}
}

// watchClient reads watch events from a streaming test server.
type watchClient struct {
	t      *testing.T
	resp   *http.Response
	events chan map[string]json.RawMessage
}

type wEvent struct {
	Type   string
	Object map[string]any
	Raw    json.RawMessage
}

func (e *testEnv) httpServer() *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.TLS = adminTLS
		e.srv.ServeHTTP(w, r)
	}))
	e.t.Cleanup(ts.Close)
	return ts
}

func startWatch(t *testing.T, ts *httptest.Server, path, accept string) *watchClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+path, nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	resp, err := ts.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("watch %s: %d", path, resp.StatusCode)
	}
	wc := &watchClient{t: t, resp: resp, events: make(chan map[string]json.RawMessage, 100)}
	go func() {
		defer close(wc.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]json.RawMessage
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("bad watch line %q: %v", sc.Text(), err)
				return
			}
			wc.events <- ev
		}
	}()
	return wc
}

func (wc *watchClient) next() wEvent {
	wc.t.Helper()
	select {
	case ev, ok := <-wc.events:
		if !ok {
			wc.t.Fatal("watch ended")
		}
		var out wEvent
		_ = json.Unmarshal(ev["type"], &out.Type)
		_ = json.Unmarshal(ev["object"], &out.Object)
		out.Raw = ev["object"]
		return out
	case <-time.After(5 * time.Second):
		wc.t.Fatal("no watch event within 5s")
	}
	return wEvent{}
}

// expect reads events until one is not a BOOKMARK and checks it.
func (wc *watchClient) expect(typ, name string) wEvent {
	wc.t.Helper()
	ev := wc.next()
	if ev.Type != typ || name != "" && objName(ev.Object) != name {
		wc.t.Fatalf("event %s %s, want %s %s: %s", ev.Type, objName(ev.Object), typ, name, ev.Raw)
	}
	return ev
}

func (wc *watchClient) expectEnd() {
	wc.t.Helper()
	select {
	case ev, ok := <-wc.events:
		if ok {
			wc.t.Fatalf("unexpected event %v", ev)
		}
	case <-time.After(5 * time.Second):
		wc.t.Fatal("watch did not end")
	}
}

func objName(o map[string]any) string {
	m, _ := o["metadata"].(map[string]any)
	n, _ := m["name"].(string)
	return n
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ts := e.httpServer()
	base := "/api/v1/namespaces/default/configmaps"
	var first corev1.ConfigMap
	e.ok(req{method: "POST", path: base, body: cmBody("one", nil)}, 201, &first)
	e.ok(req{method: "POST", path: base, body: cmBody("two", nil)}, 201, nil)

	t.Run("from a resourceVersion", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=true&resourceVersion="+first.ResourceVersion, "")
		wc.expect("ADDED", "two") // replayed from history
		e.ok(req{method: "PATCH", path: base + "/one", ct: "application/merge-patch+json", body: `{"data":{"x":"y"}}`}, 200, nil)
		ev := wc.expect("MODIFIED", "one")
		if ev.Object["kind"] != "ConfigMap" {
			t.Fatalf("event object %v", ev.Object)
		}
		e.ok(req{method: "DELETE", path: base + "/one"}, 200, nil)
		wc.expect("DELETED", "one")
		e.ok(req{method: "POST", path: base, body: cmBody("one", nil)}, 201, nil)
		wc.expect("ADDED", "one")
	})
	t.Run("from 0 lists first", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=1&resourceVersion=0", "")
		got := []string{objName(wc.expect("ADDED", "").Object), objName(wc.expect("ADDED", "").Object)}
		slices.Sort(got)
		if !slices.Equal(got, []string{"one", "two"}) {
			t.Fatalf("initial events %v", got)
		}
		e.ok(req{method: "POST", path: base, body: cmBody("three", nil)}, 201, nil)
		wc.expect("ADDED", "three")
	})
	t.Run("selectors", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=true&labelSelector=app%3Dweb&fieldSelector=metadata.name!%3Dignored", "")
		e.ok(req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": "ignored", "labels": map[string]string{"app": "web"}}}}, 201, nil)
		e.ok(req{method: "POST", path: base, body: cmBody("plain", nil)}, 201, nil)
		e.ok(req{method: "PATCH", path: base + "/plain", ct: "application/merge-patch+json", body: `{"metadata":{"labels":{"app":"web"}}}`}, 200, nil)
		wc.expect("ADDED", "plain") // entered the selection
		e.ok(req{method: "PATCH", path: base + "/plain", ct: "application/merge-patch+json", body: `{"data":{"k":"v"}}`}, 200, nil)
		wc.expect("MODIFIED", "plain")
		e.ok(req{method: "PATCH", path: base + "/plain", ct: "application/merge-patch+json", body: `{"metadata":{"labels":{"app":"db"}}}`}, 200, nil)
		ev := wc.expect("DELETED", "plain") // left it
		if md := ev.Object["metadata"].(map[string]any); md["resourceVersion"] != fmt.Sprint(e.store.Revision()) {
			t.Fatalf("DELETED on leaving has resourceVersion %v, store %d", md["resourceVersion"], e.store.Revision())
		}
	})
	t.Run("tables", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=true&fieldSelector=metadata.name%3Dtab", tableAccept)
		e.ok(req{method: "POST", path: base, body: cmBody("tab", map[string]string{"a": "b"})}, 201, nil)
		ev := wc.expect("ADDED", "")
		var tab metav1.Table
		if err := json.Unmarshal(ev.Raw, &tab); err != nil || tab.Kind != "Table" || len(tab.Rows) != 1 || tab.Rows[0].Cells[0] != "tab" {
			t.Fatalf("table event %s (%v)", ev.Raw, err)
		}
	})
	t.Run("sendInitialEvents", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dtwo", "")
		wc.expect("ADDED", "two")
		ev := wc.expect("BOOKMARK", "")
		md := ev.Object["metadata"].(map[string]any)
		if md["annotations"].(map[string]any)["k8s.io/initial-events-end"] != "true" || md["resourceVersion"] == "" {
			t.Fatalf("bookmark %s", ev.Raw)
		}
	})
	t.Run("timeout ends the stream", func(t *testing.T) {
		wc := startWatch(t, ts, base+"?watch=true&timeoutSeconds=1&sendInitialEvents=false", "")
		wc.expectEnd()
	})
}

func TestWatchGoneAndBookmarks(t *testing.T) {
	e := newEnvWithStore(t, state.NewStore(3))
	e.srv.bookmarkInterval = 50 * time.Millisecond
	ts := e.httpServer()
	base := "/api/v1/namespaces/default/configmaps"
	for i := 0; i < 8; i++ {
		e.ok(req{method: "POST", path: base, body: cmBody(fmt.Sprintf("c%d", i), nil)}, 201, nil)
	}
	wc := startWatch(t, ts, base+"?watch=true&resourceVersion=2", "")
	ev := wc.expect("ERROR", "")
	if ev.Object["code"] != float64(410) || ev.Object["reason"] != "Expired" || ev.Object["kind"] != "Status" {
		t.Fatalf("gone event %s", ev.Raw)
	}
	wc.expectEnd()

	rev := e.store.Revision()
	wc = startWatch(t, ts, base+"?watch=true&allowWatchBookmarks=true&resourceVersion="+strconv.FormatUint(rev, 10), "")
	ev = wc.expect("BOOKMARK", "")
	if ev.Object["kind"] != "ConfigMap" || ev.Object["metadata"].(map[string]any)["resourceVersion"] != strconv.FormatUint(rev, 10) {
		t.Fatalf("bookmark %s", ev.Raw)
	}
}

// TestWatchEndsWhenStoreRestores checks that a watch the store closes (after
// a snapshot restore) ends the stream so clients re-list.
func TestWatchEndsWhenStoreRestores(t *testing.T) {
	store := state.NewStore(0)
	e := newEnvWithStore(t, store)
	ts := e.httpServer()
	wc := startWatch(t, ts, "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0", "")
	fsm := state.NewFSM(store, statetest.Sealer{})
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if err := fsm.Restore(sink); err != nil {
		t.Fatal(err)
	}
	wc.expectEnd()
}

// memSink is an in-memory raft.SnapshotSink that can be read back.
type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func TestKindFieldSelectors(t *testing.T) {
	e := newEnv(t)
	for i, reason := range []string{"Pulled", "Failed", "Pulled"} {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ev%d", i)}, Reason: reason, Type: "Normal",
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("pod%d", i%2)}}
		e.ok(req{method: "POST", path: "/api/v1/namespaces/default/events", body: ev}, 201, nil)
	}
	var el corev1.EventList
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/events?fieldSelector=involvedObject.kind%3DPod,involvedObject.name%3Dpod0,reason%3DPulled,type%3DNormal"}, 200, &el)
	if len(el.Items) != 2 {
		t.Fatalf("events by involvedObject: %d", len(el.Items))
	}
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", body: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}}}, 201, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", body: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}}, 201, nil)
	var sl corev1.SecretList
	e.ok(req{method: "GET", path: "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io/tls"}, 200, &sl)
	if len(sl.Items) != 1 || sl.Items[0].Name != "tls" {
		t.Fatalf("secrets by type: %d", len(sl.Items))
	}
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/secrets?fieldSelector=reason%3Dx"}, 400, nil)
}
