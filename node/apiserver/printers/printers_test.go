package printers

// Expectations are those of Kubernetes' own printer tests
// (k8s.io/kubernetes/pkg/printers/internalversion/printers_test.go), carried
// over to v1 objects and a fixed now. Upstream calls each printer without and
// with -o wide; kube-apiserver (and so Shoal) always prints wide and kubectl
// drops the priority-1 columns itself, so the narrow cases here compare the
// priority-0 cells only, which is what kubectl shows.

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

var now = time.Date(2025, time.June, 1, 12, 0, 0, 0, time.UTC)

// at is now+d as an API timestamp.
func at(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(d)) }

// atP is a pointer to at(d).
func atP(d time.Duration) *metav1.Time { t := at(d); return &t }

// soon is upstream's time.Now().Add(1.9e9): a creation time a little in the
// future, which prints as "0s".
var soon = at(1900 * time.Millisecond)

const day = 24 * time.Hour

func ptr[T any](v T) *T { return &v }

type rowCase struct {
	name  string
	obj   state.Object
	wide  bool // compare all cells, not just the priority-0 ones kubectl shows by default
	want  []any
	conds []metav1.TableRowCondition
}

func runRows(t *testing.T, cases []rowCase) {
	t.Helper()
	for i, tc := range cases {
		name := tc.name
		if name == "" {
			name = fmt.Sprintf("%d", i)
		}
		t.Run(name, func(t *testing.T) {
			k, ok := state.KindOf(tc.obj)
			if !ok {
				t.Fatalf("no kind for %T", tc.obj)
			}
			table, err := ToTable(k, []state.Object{tc.obj}, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(table.Rows) != 1 {
				t.Fatalf("%d rows, want 1", len(table.Rows))
			}
			row := table.Rows[0]
			if len(row.Cells) != len(table.ColumnDefinitions) {
				t.Fatalf("%d cells for %d columns", len(row.Cells), len(table.ColumnDefinitions))
			}
			if row.Object.Raw != nil || row.Object.Object != nil {
				t.Errorf("row object is set: %#v", row.Object)
			}
			got := row.Cells
			if !tc.wide {
				got = nil
				for i, c := range table.ColumnDefinitions {
					if c.Priority == 0 {
						got = append(got, row.Cells[i])
					}
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("cells\n got %#v\nwant %#v", got, tc.want)
			}
			if !reflect.DeepEqual(row.Conditions, tc.conds) {
				t.Errorf("conditions\n got %#v\nwant %#v", row.Conditions, tc.conds)
			}
		})
	}
}

func kindByName(t *testing.T, group, name string) *state.Kind {
	t.Helper()
	for _, k := range state.Kinds {
		if k.Group == group && k.Kind == name {
			return k
		}
	}
	t.Fatalf("no kind %s/%s", group, name)
	return nil
}

type col struct {
	name, typ, format string
	priority          int32
}

// Upstream's column definitions, kind by kind (names, types, formats, priorities).
var wantColumns = map[string][]col{
	"/Node": {
		{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Roles", "string", "", 0}, {"Age", "string", "", 0},
		{"Version", "string", "", 0}, {"Internal-IP", "string", "", 1}, {"External-IP", "string", "", 1},
		{"OS-Image", "string", "", 1}, {"Kernel-Version", "string", "", 1}, {"Container-Runtime", "string", "", 1},
	},
	"/Namespace": {{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Age", "string", "", 0}},
	"/ConfigMap": {{"Name", "string", "name", 0}, {"Data", "string", "", 0}, {"Age", "string", "", 0}},
	"/Secret":    {{"Name", "string", "name", 0}, {"Type", "string", "", 0}, {"Data", "string", "", 0}, {"Age", "string", "", 0}},
	"/Event": {
		{"Last Seen", "string", "", 0}, {"Type", "string", "", 0}, {"Reason", "string", "", 0}, {"Object", "string", "", 0},
		{"Subobject", "string", "", 1}, {"Source", "string", "", 1}, {"Message", "string", "", 0},
		{"First Seen", "string", "", 1}, {"Count", "string", "", 1}, {"Name", "string", "name", 1},
	},
	"/Pod": {
		{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Status", "string", "", 0}, {"Restarts", "string", "", 0},
		{"Age", "string", "", 0}, {"IP", "string", "", 1}, {"Node", "string", "", 1}, {"Nominated Node", "string", "", 1},
		{"Readiness Gates", "string", "", 1},
	},
	"/Service": {
		{"Name", "string", "name", 0}, {"Type", "string", "", 0}, {"Cluster-IP", "string", "", 0}, {"External-IP", "string", "", 0},
		{"Port(s)", "string", "", 0}, {"Age", "string", "", 0}, {"Selector", "string", "", 1},
	},
	"/Endpoints":                     {{"Name", "string", "name", 0}, {"Endpoints", "string", "", 0}, {"Age", "string", "", 0}},
	"discovery.k8s.io/EndpointSlice": {{"Name", "string", "name", 0}, {"AddressType", "string", "", 0}, {"Ports", "string", "", 0}, {"Endpoints", "string", "", 0}, {"Age", "string", "", 0}},
	"/PersistentVolume": {
		{"Name", "string", "name", 0}, {"Capacity", "string", "", 0}, {"Access Modes", "string", "", 0},
		{"Reclaim Policy", "string", "", 0}, {"Status", "string", "", 0}, {"Claim", "string", "", 0},
		{"StorageClass", "string", "", 0}, {"VolumeAttributesClass", "string", "", 0}, {"Reason", "string", "", 0},
		{"Age", "string", "", 0}, {"VolumeMode", "string", "", 1},
	},
	"/PersistentVolumeClaim": {
		{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Volume", "string", "", 0}, {"Capacity", "string", "", 0},
		{"Access Modes", "string", "", 0}, {"StorageClass", "string", "", 0}, {"VolumeAttributesClass", "string", "", 0},
		{"Age", "string", "", 0}, {"VolumeMode", "string", "", 1},
	},
	"apps/Deployment": {
		{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Up-to-date", "string", "", 0}, {"Available", "string", "", 0},
		{"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1},
	},
	"apps/ReplicaSet": {
		{"Name", "string", "name", 0}, {"Desired", "integer", "", 0}, {"Current", "integer", "", 0}, {"Ready", "integer", "", 0},
		{"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1},
	},
	"apps/DaemonSet": {
		{"Name", "string", "name", 0}, {"Desired", "integer", "", 0}, {"Current", "integer", "", 0}, {"Ready", "integer", "", 0},
		{"Up-to-date", "integer", "", 0}, {"Available", "integer", "", 0}, {"Node Selector", "string", "", 0},
		{"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1},
	},
	"apps/StatefulSet": {
		{"Name", "string", "name", 0}, {"Ready", "string", "", 0}, {"Age", "string", "", 0},
		{"Containers", "string", "", 1}, {"Images", "string", "", 1},
	},
	"batch/Job": {
		{"Name", "string", "name", 0}, {"Status", "string", "", 0}, {"Completions", "string", "", 0}, {"Duration", "string", "", 0},
		{"Age", "string", "", 0}, {"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1},
	},
	"batch/CronJob": {
		{"Name", "string", "name", 0}, {"Schedule", "string", "", 0}, {"Timezone", "string", "", 0}, {"Suspend", "boolean", "", 0},
		{"Active", "integer", "", 0}, {"Last Schedule", "string", "", 0}, {"Age", "string", "", 0},
		{"Containers", "string", "", 1}, {"Images", "string", "", 1}, {"Selector", "string", "", 1},
	},
	"scheduling.k8s.io/PriorityClass": {
		{"Name", "string", "name", 0}, {"Value", "integer", "", 0}, {"Global-Default", "boolean", "", 0},
		{"Age", "string", "", 0}, {"PreemptionPolicy", "string", "", 0},
	},
	"/ServiceAccount":                       {{"Name", "string", "name", 0}, {"Secrets", "string", "", 0}, {"Age", "string", "", 0}},
	"rbac.authorization.k8s.io/Role":        {{"Name", "string", "name", 0}, {"Created At", "date", "", 0}},
	"rbac.authorization.k8s.io/ClusterRole": {{"Name", "string", "name", 0}, {"Created At", "date", "", 0}},
	"rbac.authorization.k8s.io/RoleBinding": {
		{"Name", "string", "name", 0}, {"Role", "string", "", 0}, {"Age", "string", "", 0},
		{"Users", "string", "", 1}, {"Groups", "string", "", 1}, {"ServiceAccounts", "string", "", 1},
	},
	"rbac.authorization.k8s.io/ClusterRoleBinding": {
		{"Name", "string", "name", 0}, {"Role", "string", "", 0}, {"Age", "string", "", 0},
		{"Users", "string", "", 1}, {"Groups", "string", "", 1}, {"ServiceAccounts", "string", "", 1},
	},
}

func TestColumnDefinitions(t *testing.T) {
	for _, k := range state.Kinds {
		key := k.Group + "/" + k.Kind
		t.Run(key, func(t *testing.T) {
			want, ok := wantColumns[key]
			if !ok {
				t.Fatalf("no expected columns for stored kind %s", key)
			}
			table, err := ToTable(k, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []col
			for _, c := range table.ColumnDefinitions {
				got = append(got, col{c.Name, c.Type, c.Format, c.Priority})
				if c.Description == "" {
					t.Errorf("column %q has no description", c.Name)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("columns\n got %v\nwant %v", got, want)
			}
			if table.Kind != "Table" || table.APIVersion != "meta.k8s.io/v1" {
				t.Errorf("type meta %+v", table.TypeMeta)
			}
			if table.Rows == nil || len(table.Rows) != 0 {
				t.Errorf("rows %#v, want empty non-nil (serializes as [])", table.Rows)
			}
		})
	}
}

// Every stored kind prints its zero object (fresh from Kind.New) with one
// cell per column, and the table does not share column slices between calls.
func TestEveryKindPrintsEmptyObject(t *testing.T) {
	for _, k := range state.Kinds {
		t.Run(k.Key(), func(t *testing.T) {
			obj := k.New()
			obj.SetName("x")
			table, err := ToTable(k, []state.Object{obj, obj}, now)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range table.Rows {
				if len(r.Cells) != len(table.ColumnDefinitions) {
					t.Fatalf("%d cells for %d columns", len(r.Cells), len(table.ColumnDefinitions))
				}
				for i, c := range r.Cells {
					switch c.(type) {
					case string, int64, bool:
					default:
						t.Errorf("cell %d (%s) has type %T", i, table.ColumnDefinitions[i].Name, c)
					}
				}
			}
			table.ColumnDefinitions[0].Name = "mutated"
			again, _ := ToTable(k, nil, now)
			if again.ColumnDefinitions[0].Name == "mutated" {
				t.Error("column definitions are shared between tables")
			}
		})
	}
}

func TestUnknownKind(t *testing.T) {
	k := &state.Kind{Group: "example.com", Version: "v1", Kind: "Widget", Resource: "widgets", Namespaced: true}
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "w1", CreationTimestamp: at(-5 * time.Minute)}}
	table, err := ToTable(k, []state.Object{obj, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "w2"}}}, now)
	if err != nil {
		t.Fatal(err)
	}
	var got []col
	for _, c := range table.ColumnDefinitions {
		got = append(got, col{c.Name, c.Type, c.Format, c.Priority})
	}
	want := []col{{"Name", "string", "name", 0}, {"Age", "string", "", 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("columns %v, want %v", got, want)
	}
	wantRows := [][]any{{"w1", "5m"}, {"w2", "<unknown>"}}
	for i, r := range table.Rows {
		if !reflect.DeepEqual(r.Cells, wantRows[i]) {
			t.Errorf("row %d: %#v, want %#v", i, r.Cells, wantRows[i])
		}
	}
}

func TestErrors(t *testing.T) {
	pods := kindByName(t, "", "Pod")
	if _, err := ToTable(pods, []state.Object{&corev1.Node{}}, now); err == nil || !strings.Contains(err.Error(), "pods") {
		t.Errorf("node as pod: err = %v", err)
	}
	if _, err := ToTable(pods, []state.Object{nil}, now); err == nil {
		t.Error("nil object: no error")
	}
	if _, err := ToTable(pods, []state.Object{(*corev1.Pod)(nil)}, now); err == nil {
		t.Error("typed nil object: no error")
	}
	if _, err := ToTable(nil, nil, now); err == nil {
		t.Error("nil kind: no error")
	}
}

func TestRowsKeepOrder(t *testing.T) {
	events := kindByName(t, "", "Event")
	var objs []state.Object
	for _, m := range []string{"Item 1", "Item 2", "Item 3"} {
		objs = append(objs, &corev1.Event{Message: m, Type: corev1.EventTypeNormal, Count: 1, FirstTimestamp: at(-day), LastTimestamp: at(-day)})
	}
	table, err := ToTable(events, objs, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range table.Rows {
		if msg := r.Cells[6]; msg != fmt.Sprintf("Item %d", i+1) {
			t.Errorf("row %d message %v", i, msg)
		}
	}
}

func TestTranslateTimestampSince(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   metav1.Time
		want string
	}{
		{"a while from now", at(2100 * time.Millisecond), "<invalid>"},
		{"almost now", at(1900 * time.Millisecond), "0s"},
		{"now", at(0), "0s"},
		{"unknown", metav1.Time{}, "<unknown>"},
		{"30 seconds ago", at(-30 * time.Second), "30s"},
		{"5 minutes ago", at(-5 * time.Minute), "5m"},
		{"an hour ago", at(-100 * time.Minute), "100m"},
		{"3 hours ago", at(-3 * time.Hour), "3h"},
		{"3h20m ago", at(-200 * time.Minute), "3h20m"},
		{"2 days ago", metav1.NewTime(now.AddDate(0, 0, -2)), "2d"},
		{"months ago", metav1.NewTime(now.AddDate(0, 0, -90)), "90d"},
		{"10 years ago", at(-10 * 365 * day), "10y"},
	} {
		if got := translateTimestampSince(tc.ts, now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestNamespace(t *testing.T) {
	runRows(t, []rowCase{
		{name: "status and age", obj: &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: "namespace1", CreationTimestamp: soon},
			Status:     corev1.NamespaceStatus{Phase: "FooStatus"},
		}, want: []any{"namespace1", "FooStatus", "0s"}},
		{name: "no status or age", obj: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "namespace2"}},
			want: []any{"namespace2", "", "<unknown>"}},
		{name: "active", obj: &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: "default", CreationTimestamp: at(-49 * time.Hour)},
			Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
		}, want: []any{"default", "Active", "2d1h"}},
	})
}

func TestSecret(t *testing.T) {
	runRows(t, []rowCase{
		{name: "type, data, age", obj: &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "secret1", CreationTimestamp: soon},
			Type:       "kubernetes.io/service-account-token",
			Data:       map[string][]byte{"token": []byte("secret data")},
		}, want: []any{"secret1", "kubernetes.io/service-account-token", int64(1), "0s"}},
		{name: "no data", obj: &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "secret1", CreationTimestamp: soon},
			Type:       "kubernetes.io/service-account-token",
		}, want: []any{"secret1", "kubernetes.io/service-account-token", int64(0), "0s"}},
		{name: "stringData merges into data", obj: &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "s", CreationTimestamp: at(-3 * time.Minute)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{"a": nil, "b": nil},
			StringData: map[string]string{"b": "x", "c": "y"},
		}, want: []any{"s", "Opaque", int64(3), "3m"}},
	})
}

func TestConfigMap(t *testing.T) {
	runRows(t, []rowCase{
		{name: "no data", obj: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "configmap1", CreationTimestamp: soon}},
			want: []any{"configmap1", int64(0), "0s"}},
		{name: "one entry", obj: &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "configmap2", CreationTimestamp: soon},
			Data:       map[string]string{"foo": "bar"},
		}, want: []any{"configmap2", int64(1), "0s"}},
		{name: "data and binary data", obj: &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "configmap3", CreationTimestamp: soon},
			Data:       map[string]string{"foo": "bar"},
			BinaryData: map[string][]byte{"bin": []byte("binary data")},
		}, want: []any{"configmap3", int64(2), "0s"}},
	})
}

func TestNode(t *testing.T) {
	ready := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	notReady := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}
	invalid := []corev1.NodeCondition{{Type: "InvalidValue", Status: corev1.ConditionTrue}}
	node := func(name string, unschedulable bool, conds []corev1.NodeCondition) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Unschedulable: unschedulable}, Status: corev1.NodeStatus{Conditions: conds}}
	}
	withLabels := func(name string, l map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	}
	withStatus := func(name string, info corev1.NodeSystemInfo, addrs ...corev1.NodeAddress) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{NodeInfo: info, Addresses: addrs}}
	}
	ext := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: a} }
	internal := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	runRows(t, []rowCase{
		// status
		{obj: node("foo1", false, ready), want: []any{"foo1", "Ready", "<none>", "<unknown>", ""}},
		{obj: node("foo2", true, ready), want: []any{"foo2", "Ready,SchedulingDisabled", "<none>", "<unknown>", ""}},
		{obj: node("foo3", false, append(ready, ready...)), want: []any{"foo3", "Ready", "<none>", "<unknown>", ""}},
		{obj: node("foo4", false, notReady), want: []any{"foo4", "NotReady", "<none>", "<unknown>", ""}},
		{obj: node("foo5", true, notReady), want: []any{"foo5", "NotReady,SchedulingDisabled", "<none>", "<unknown>", ""}},
		{obj: node("foo6", false, invalid), want: []any{"foo6", "Unknown", "<none>", "<unknown>", ""}},
		{obj: node("foo7", false, []corev1.NodeCondition{{}}), want: []any{"foo7", "Unknown", "<none>", "<unknown>", ""}},
		{obj: node("foo8", true, invalid), want: []any{"foo8", "Unknown,SchedulingDisabled", "<none>", "<unknown>", ""}},
		{obj: node("foo9", true, []corev1.NodeCondition{{}}), want: []any{"foo9", "Unknown,SchedulingDisabled", "<none>", "<unknown>", ""}},
		{name: "ready unknown", obj: node("n", false, []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}),
			want: []any{"n", "NotReady", "<none>", "<unknown>", ""}},
		// roles
		{name: "no roles", obj: withLabels("foo9", nil), want: []any{"foo9", "Unknown", "<none>", "<unknown>", ""}},
		{name: "roles", obj: withLabels("foo10", map[string]string{
			"node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/proxy": "", "kubernetes.io/role": "node",
		}), want: []any{"foo10", "Unknown", "control-plane,master,node,proxy", "<unknown>", ""}},
		{name: "legacy role", obj: withLabels("foo11", map[string]string{"kubernetes.io/role": "node"}),
			want: []any{"foo11", "Unknown", "node", "<unknown>", ""}},
		{name: "empty role suffix", obj: withLabels("n", map[string]string{"node-role.kubernetes.io/": "", "kubernetes.io/role": ""}),
			want: []any{"n", "Unknown", "<none>", "<unknown>", ""}},
		// names
		{name: "ip name", obj: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "127.0.0.1"}}, want: []any{"127.0.0.1", "Unknown", "<none>", "<unknown>", ""}},
		{name: "empty name", obj: &corev1.Node{}, want: []any{"", "Unknown", "<none>", "<unknown>", ""}},
		// wide
		{name: "os image", wide: true, obj: withStatus("foo1", corev1.NodeSystemInfo{OSImage: "fake-os-image"}, ext("1.1.1.1")),
			want: []any{"foo1", "Unknown", "<none>", "<unknown>", "", "<none>", "1.1.1.1", "fake-os-image", "<unknown>", "<unknown>"}},
		{name: "kernel version", wide: true, obj: withStatus("foo2", corev1.NodeSystemInfo{KernelVersion: "fake-kernel-version"}, ext("1.1.1.1")),
			want: []any{"foo2", "Unknown", "<none>", "<unknown>", "", "<none>", "1.1.1.1", "<unknown>", "fake-kernel-version", "<unknown>"}},
		{name: "container runtime", wide: true, obj: withStatus("foo1", corev1.NodeSystemInfo{ContainerRuntimeVersion: "foo://1.2.3"}, ext("1.1.1.1")),
			want: []any{"foo1", "Unknown", "<none>", "<unknown>", "", "<none>", "1.1.1.1", "<unknown>", "<unknown>", "foo://1.2.3"}},
		{name: "internal ip only", wide: true, obj: withStatus("foo2", corev1.NodeSystemInfo{}, internal("1.1.1.1")),
			want: []any{"foo2", "Unknown", "<none>", "<unknown>", "", "1.1.1.1", "<none>", "<unknown>", "<unknown>", "<unknown>"}},
		{name: "first address of each type", wide: true, obj: withStatus("foo3", corev1.NodeSystemInfo{}, ext("2.2.2.2"), internal("3.3.3.3"), ext("4.4.4.4")),
			want: []any{"foo3", "Unknown", "<none>", "<unknown>", "", "3.3.3.3", "2.2.2.2", "<unknown>", "<unknown>", "<unknown>"}},
		{name: "full", wide: true, obj: &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-a", CreationTimestamp: at(-10 * day), Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
			Spec:       corev1.NodeSpec{Unschedulable: true},
			Status: corev1.NodeStatus{
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "node-a"}, internal("10.0.0.5")},
				NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.33.4", OSImage: "Debian GNU/Linux 13 (trixie)", KernelVersion: "6.12.0", ContainerRuntimeVersion: "containerd://2.1.4"},
			},
		}, want: []any{"node-a", "Ready,SchedulingDisabled", "control-plane", "10d", "v1.33.4", "10.0.0.5", "<none>", "Debian GNU/Linux 13 (trixie)", "6.12.0", "containerd://2.1.4"}},
	})
}

func TestEvent(t *testing.T) {
	deployment := corev1.ObjectReference{Kind: "Deployment", Name: "Deployment Name", FieldPath: "spec.containers{foo}"}
	kubeletNode1 := corev1.EventSource{Component: "kubelet", Host: "Node1"}
	daysAgo := func(n int) metav1.Time { return metav1.NewTime(now.AddDate(0, 0, -n)) }
	microDaysAgo := func(n int) metav1.MicroTime { return metav1.NewMicroTime(now.AddDate(0, 0, -n)) }
	runRows(t, []rowCase{
		{name: "basic", obj: &corev1.Event{
			Source:         corev1.EventSource{Component: "kubelet"},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "Pod Name", FieldPath: "spec.containers{foo}"},
			Reason:         "Event Reason", Message: "Message Data",
			FirstTimestamp: daysAgo(3), LastTimestamp: daysAgo(2), Count: 6, Type: corev1.EventTypeNormal,
			ObjectMeta: metav1.ObjectMeta{Name: "event1"},
		}, want: []any{"2d", "Normal", "Event Reason", "pod/Pod Name", "Message Data"}},
		{name: "basic wide", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			FirstTimestamp: daysAgo(3), LastTimestamp: daysAgo(2), Count: 6, Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event2"},
		}, want: []any{"2d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(6), "event2"}},
		{name: "no first timestamp", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			EventTime: microDaysAgo(3), LastTimestamp: daysAgo(3), Count: 1, Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event3"},
		}, want: []any{"3d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(1), "event3"}},
		{name: "no last timestamp", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			EventTime: microDaysAgo(3), FirstTimestamp: daysAgo(3), Count: 1, Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event4"},
		}, want: []any{"3d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(1), "event4"}},
		{name: "no first or last timestamp", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			EventTime: microDaysAgo(3), Count: 1, Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event5"},
		}, want: []any{"3d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(1), "event5"}},
		{name: "series", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			Series:    &corev1.EventSeries{Count: 2, LastObservedTime: microDaysAgo(2)},
			EventTime: microDaysAgo(3), Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event6"},
		}, want: []any{"2d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(2), "event6"}},
		{name: "singleton", wide: true, obj: &corev1.Event{
			Source: kubeletNode1, InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			EventTime: microDaysAgo(3), Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event7"},
		}, want: []any{"3d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1", "Message Data", "3d", int64(1), "event7"}},
		{name: "reporting controller", wide: true, obj: &corev1.Event{
			ReportingController: "kubelet", ReportingInstance: "test",
			InvolvedObject: deployment, Reason: "Event Reason", Message: "Message Data",
			FirstTimestamp: daysAgo(3), LastTimestamp: daysAgo(2), Count: 6, Type: corev1.EventTypeWarning,
			ObjectMeta: metav1.ObjectMeta{Name: "event2"},
		}, want: []any{"2d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, test", "Message Data", "3d", int64(6), "event2"}},
		{name: "no timestamps, object kind only, message trimmed", wide: true, obj: &corev1.Event{
			InvolvedObject: corev1.ObjectReference{Kind: "Node"}, Reason: "Starting", Message: "  Starting kubelet.\n",
			Source: corev1.EventSource{Component: "kubelet"}, Type: corev1.EventTypeNormal,
			ObjectMeta: metav1.ObjectMeta{Name: "n.1"},
		}, want: []any{"<unknown>", "Normal", "Starting", "node", "", "kubelet", "Starting kubelet.", "<unknown>", int64(1), "n.1"}},
	})
}

func TestPod(t *testing.T) {
	deleteTime := atP(-10 * time.Second)
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := func(reason string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
	}
	terminated := func(reason string, code, signal int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code, Signal: signal}}
	}
	finished := func(d time.Duration) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(-d)}}
	}
	pod := func(name string, init, containers int, status corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{InitContainers: make([]corev1.Container, init), Containers: make([]corev1.Container, containers)},
			Status:     status,
		}
	}
	deleted := func(p *corev1.Pod) *corev1.Pod { p.DeletionTimestamp = deleteTime; return p }
	runRows(t, []rowCase{
		{name: "containers, restarts, ready", obj: pod("test1", 0, 2, corev1.PodStatus{Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {RestartCount: 3},
		}}), want: []any{"test1", "1/2", "podPhase", "6", "<unknown>"}},
		{name: "container error overwrites phase", obj: pod("test2", 0, 2, corev1.PodStatus{Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {State: waiting("ContainerWaitingReason"), RestartCount: 3},
		}}), want: []any{"test2", "1/2", "ContainerWaitingReason", "6", "<unknown>"}},
		{name: "first container overwrites the rest", obj: pod("test3", 0, 2, corev1.PodStatus{Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
			{State: waiting("ContainerWaitingReason"), RestartCount: 3}, {State: terminated("ContainerTerminatedReason", 0, 0), RestartCount: 3},
		}}), want: []any{"test3", "0/2", "ContainerWaitingReason", "6", "<unknown>"}},
		{name: "ready is not enough for running", obj: pod("test4", 0, 2, corev1.PodStatus{Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {Ready: true, RestartCount: 3},
		}}), want: []any{"test4", "1/2", "podPhase", "6", "<unknown>"}},
		{name: "pod reason", obj: pod("test5", 0, 2, corev1.PodStatus{Reason: "podReason", Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {Ready: true, RestartCount: 3},
		}}), want: []any{"test5", "1/2", "podReason", "6", "<unknown>"}},
		{name: "completed and running without ready condition", obj: pod("test6", 0, 2, corev1.PodStatus{Phase: "Running", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: terminated("Completed", 0, 0)}, {Ready: true, RestartCount: 3, State: running},
		}}), want: []any{"test6", "1/2", "NotReady", "6", "<unknown>"}},
		{name: "completed and running with ready condition", obj: pod("test6", 0, 2, corev1.PodStatus{Phase: "Running", ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: terminated("Completed", 0, 0)}, {Ready: true, RestartCount: 3, State: running},
		}, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastProbeTime: at(0)}}}),
			want: []any{"test6", "1/2", "Running", "6", "<unknown>"}},
		{name: "init container restarting", obj: pod("test7", 1, 1, corev1.PodStatus{Phase: "podPhase",
			InitContainerStatuses: []corev1.ContainerStatus{{RestartCount: 3, State: running, LastTerminationState: finished(10 * time.Second)}},
			ContainerStatuses:     []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}}},
		}), want: []any{"test7", "0/1", "Init:0/1", "3 (10s ago)", "<unknown>"}},
		{name: "two init containers, first restarting", obj: pod("test8", 2, 1, corev1.PodStatus{Phase: "podPhase",
			InitContainerStatuses: []corev1.ContainerStatus{
				{RestartCount: 3, State: running, LastTerminationState: finished(10 * time.Second)},
				{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}},
			},
			ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}}},
		}), want: []any{"test8", "0/1", "Init:0/2", "3 (10s ago)", "<unknown>"}},
		{name: "first init completed, second restarting", obj: pod("test9", 2, 1, corev1.PodStatus{Phase: "podPhase",
			InitContainerStatuses: []corev1.ContainerStatus{
				{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
				{RestartCount: 3, State: running, LastTerminationState: finished(10 * time.Second)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}}},
		}), want: []any{"test9", "0/1", "Init:1/2", "3 (10s ago)", "<unknown>"}},
		{name: "first init completed with restarts, second restarting", obj: pod("test10", 2, 1, corev1.PodStatus{Phase: "podPhase",
			InitContainerStatuses: []corev1.ContainerStatus{
				{RestartCount: 2, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}, LastTerminationState: finished(2 * time.Minute)},
				{RestartCount: 3, State: running, LastTerminationState: finished(10 * time.Second)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}}},
		}), want: []any{"test10", "0/1", "Init:1/2", "5 (10s ago)", "<unknown>"}},
		{name: "init completed with restarts, container restarting", obj: pod("test11", 1, 1, corev1.PodStatus{Phase: "Running",
			InitContainerStatuses: []corev1.ContainerStatus{
				{RestartCount: 2, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}, LastTerminationState: finished(2 * time.Minute)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 4, State: running, LastTerminationState: finished(20 * time.Second)}},
		}), want: []any{"test11", "0/1", "Running", "4 (20s ago)", "<unknown>"}},
		{name: "restarted 5d ago", obj: pod("test12", 0, 1, corev1.PodStatus{Phase: "Running",
			ContainerStatuses: []corev1.ContainerStatus{{Ready: true, RestartCount: 3, State: running, LastTerminationState: finished(5 * day)}},
		}), want: []any{"test12", "1/1", "Running", "3 (5d ago)", "<unknown>"}},
		{name: "one never restarted, one 10d ago", obj: pod("test13", 0, 2, corev1.PodStatus{Phase: "Running",
			ContainerStatuses: []corev1.ContainerStatus{
				{Ready: true, State: running},
				{Ready: true, RestartCount: 3, State: running, LastTerminationState: finished(10 * day)},
			},
		}), want: []any{"test13", "2/2", "Running", "3 (10d ago)", "<unknown>"}},
		{name: "latest restart wins", obj: pod("test14", 0, 2, corev1.PodStatus{Phase: "Running",
			ContainerStatuses: []corev1.ContainerStatus{
				{Ready: true, RestartCount: 6, State: running, LastTerminationState: finished(5 * day)},
				{Ready: true, RestartCount: 3, State: running, LastTerminationState: finished(20 * day)},
			},
		}), want: []any{"test14", "2/2", "Running", "9 (5d ago)", "<unknown>"}},
		{name: "scheduling gated", obj: pod("test15", 0, 2, corev1.PodStatus{Phase: "podPhase",
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonSchedulingGated}},
		}), want: []any{"test15", "0/2", "SchedulingGated", "0", "<unknown>"}},
		{name: "succeeded", obj: pod("test16", 0, 1, corev1.PodStatus{Phase: corev1.PodSucceeded,
			ContainerStatuses: []corev1.ContainerStatus{{State: terminated("Completed", 0, 0)}},
		}), want: []any{"test16", "0/1", "Completed", "0", "<unknown>"}, conds: podSuccessConditions()},
		{name: "failed", obj: pod("test17", 0, 1, corev1.PodStatus{Phase: corev1.PodFailed,
			ContainerStatuses: []corev1.ContainerStatus{{State: terminated("Error", 1, 0)}},
		}), want: []any{"test17", "0/1", "Error", "0", "<unknown>"}, conds: podFailedConditions()},
		{name: "succeeded and deleted", obj: deleted(pod("test18", 0, 1, corev1.PodStatus{Phase: corev1.PodSucceeded,
			ContainerStatuses: []corev1.ContainerStatus{{State: terminated("Completed", 0, 0)}},
		})), want: []any{"test18", "0/1", "Completed", "0", "<unknown>"}, conds: podSuccessConditions()},
		{name: "running and deleted", obj: deleted(pod("test19", 0, 1, corev1.PodStatus{Phase: "Running",
			ContainerStatuses: []corev1.ContainerStatus{{State: running}},
		})), want: []any{"test19", "0/1", "Terminating", "0", "<unknown>"}},
		{name: "pending and deleted", obj: deleted(pod("test20", 0, 1, corev1.PodStatus{Phase: "Pending"})),
			want: []any{"test20", "0/1", "Terminating", "0", "<unknown>"}},
		{name: "deleted on lost node", obj: deleted(pod("lost", 0, 1, corev1.PodStatus{Phase: "Running", Reason: "NodeLost",
			ContainerStatuses: []corev1.ContainerStatus{{Ready: true, State: running}},
		})), want: []any{"lost", "1/1", "Unknown", "0", "<unknown>"}},
		// Phases as kubectl shows them.
		{name: "phase running", obj: pod("test1", 0, 2, corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {RestartCount: 3},
		}}), want: []any{"test1", "1/2", "Running", "6", "<unknown>"}},
		{name: "phase pending", obj: pod("test2", 0, 2, corev1.PodStatus{Phase: corev1.PodPending}), want: []any{"test2", "0/2", "Pending", "0", "<unknown>"}},
		{name: "phase unknown", obj: pod("test3", 0, 2, corev1.PodStatus{Phase: corev1.PodUnknown}), want: []any{"test3", "0/2", "Unknown", "0", "<unknown>"}},
		{name: "phase succeeded", obj: pod("test4", 0, 2, corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {RestartCount: 3},
		}}), want: []any{"test4", "1/2", "Succeeded", "6", "<unknown>"}, conds: podSuccessConditions()},
		{name: "phase failed", obj: pod("test5", 0, 2, corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
			{Ready: true, RestartCount: 3, State: running}, {Ready: true, RestartCount: 3},
		}}), want: []any{"test5", "1/2", "Failed", "6", "<unknown>"}, conds: podFailedConditions()},
		// Container and init-container failure reasons.
		{name: "crash loop", obj: pod("crash", 0, 1, corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{RestartCount: 5, State: waiting("CrashLoopBackOff"), LastTerminationState: finished(time.Minute)},
		}}), want: []any{"crash", "0/1", "CrashLoopBackOff", "5 (60s ago)", "<unknown>"}},
		{name: "image pull", obj: pod("pull", 0, 1, corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{
			{State: waiting("ImagePullBackOff")},
		}}), want: []any{"pull", "0/1", "ImagePullBackOff", "0", "<unknown>"}},
		{name: "exit code", obj: pod("exit", 0, 1, corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
			{State: terminated("", 2, 0)},
		}}), want: []any{"exit", "0/1", "ExitCode:2", "0", "<unknown>"}, conds: podFailedConditions()},
		{name: "signal", obj: pod("sig", 0, 1, corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
			{State: terminated("", 137, 9)},
		}}), want: []any{"sig", "0/1", "Signal:9", "0", "<unknown>"}, conds: podFailedConditions()},
		{name: "init crash loop", obj: pod("ic", 2, 1, corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{{RestartCount: 4, State: waiting("CrashLoopBackOff"), LastTerminationState: finished(3 * time.Minute)}, {State: waiting("PodInitializing")}},
			ContainerStatuses:     []corev1.ContainerStatus{{State: waiting("PodInitializing")}},
		}), want: []any{"ic", "0/1", "Init:CrashLoopBackOff", "4 (3m ago)", "<unknown>"}},
		{name: "init error", obj: pod("ie", 1, 1, corev1.PodStatus{Phase: corev1.PodFailed,
			InitContainerStatuses: []corev1.ContainerStatus{{State: terminated("Error", 1, 0)}},
		}), want: []any{"ie", "0/1", "Init:Error", "0", "<unknown>"}, conds: podFailedConditions()},
		{name: "init exit code", obj: pod("iex", 1, 1, corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{{State: terminated("", 3, 0)}},
		}), want: []any{"iex", "0/1", "Init:ExitCode:3", "0", "<unknown>"}},
		{name: "init signal", obj: pod("isig", 1, 1, corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{{State: terminated("", 137, 9)}},
		}), want: []any{"isig", "0/1", "Init:Signal:9", "0", "<unknown>"}},
		{name: "init waiting PodInitializing counts position", obj: pod("ipi", 1, 1, corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{{State: waiting("PodInitializing")}},
		}), want: []any{"ipi", "0/1", "Init:0/1", "0", "<unknown>"}},
		{name: "age", obj: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "aged", CreationTimestamp: at(-3*time.Hour - 5*time.Minute)},
			Spec: corev1.PodSpec{Containers: make([]corev1.Container, 1)}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			want: []any{"aged", "0/1", "Pending", "0", "3h5m"}},
	})
}

func TestPodWithRestartableInitContainer(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecars := []corev1.Container{
		{Name: "restartable-init-1", RestartPolicy: &always},
		{Name: "restartable-init-2", RestartPolicy: &always},
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waitingEmpty := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{}}
	finished := func(d time.Duration) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(-d)}}
	}
	errored := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 137}}
	initialized := func(s corev1.ConditionStatus) []corev1.PodCondition {
		return []corev1.PodCondition{{Type: corev1.PodInitialized, Status: s}}
	}
	pod := func(name string, status corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{InitContainers: sidecars, Containers: make([]corev1.Container, 1)}, Status: status}
	}
	runRows(t, []rowCase{
		{name: "first running, not started", obj: pod("test1", corev1.PodStatus{Phase: "Pending",
			InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "restartable-init-1", RestartCount: 3, State: running, Started: ptr(false), LastTerminationState: finished(10 * time.Second)},
				{Name: "restartable-init-2", State: waitingEmpty, Started: ptr(false)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{State: waitingEmpty}},
			Conditions:        initialized(corev1.ConditionFalse),
		}), want: []any{"test1", "0/3", "Init:0/2", "3 (10s ago)", "<unknown>"}},
		{name: "first started, second running not started", obj: pod("test1", corev1.PodStatus{Phase: "Pending",
			InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "restartable-init-1", RestartCount: 3, State: running, Started: ptr(true), LastTerminationState: finished(10 * time.Second)},
				{Name: "restartable-init-2", State: running, Started: ptr(false)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{State: waitingEmpty}},
			Conditions:        initialized(corev1.ConditionFalse),
		}), want: []any{"test1", "0/3", "Init:1/2", "3 (10s ago)", "<unknown>"}},
		{name: "both started, container running", obj: pod("test2", corev1.PodStatus{Phase: "Running",
			InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "restartable-init-1", RestartCount: 3, State: running, Started: ptr(true), LastTerminationState: finished(10 * time.Second)},
				{Name: "restartable-init-2", State: running, Started: ptr(true)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Ready: true, RestartCount: 4, State: running, LastTerminationState: finished(20 * time.Second)}},
			Conditions:        initialized(corev1.ConditionTrue),
		}), want: []any{"test2", "1/3", "Running", "7 (10s ago)", "<unknown>"}},
		{name: "sidecars ready count", obj: pod("ready", corev1.PodStatus{Phase: "Running",
			InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "restartable-init-1", Ready: true, State: running, Started: ptr(true)},
				{Name: "restartable-init-2", Ready: true, State: running, Started: ptr(true)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Ready: true, State: running}},
			Conditions:        initialized(corev1.ConditionTrue),
		}), want: []any{"ready", "3/3", "Running", "0", "<unknown>"}},
		{name: "sidecars failed, container completed", obj: pod("test3", corev1.PodStatus{Phase: "Succeeded",
			InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "restartable-init-1", RestartCount: 3, State: errored, Started: ptr(false), LastTerminationState: finished(10 * time.Second)},
				{Name: "restartable-init-2", State: errored, Started: ptr(false)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 4,
				State:                corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}},
				LastTerminationState: finished(20 * time.Second)}},
			Conditions: initialized(corev1.ConditionTrue),
		}), want: []any{"test3", "0/3", "Completed", "7 (10s ago)", "<unknown>"}, conds: podSuccessConditions()},
		{name: "statuses for missing containers", obj: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "test4"},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "init1", Image: "initimage"}, {Name: "sidecar1", Image: "sidecarimage", RestartPolicy: &always}},
				Containers:     []corev1.Container{{Name: "container1", Image: "containerimage"}},
			},
			Status: corev1.PodStatus{Phase: "Running",
				InitContainerStatuses: []corev1.ContainerStatus{{Name: "initinvalid"}, {Name: "init1"}, {Name: "sidecar1"}},
				ContainerStatuses:     []corev1.ContainerStatus{{Name: "containerinvalid"}, {Name: "container1"}},
			},
		}, want: []any{"test4", "0/2", "Init:0/2", "0", "<unknown>"}},
	})
}

func TestPodWide(t *testing.T) {
	gates := []corev1.PodReadinessGate{{ConditionType: "condition1"}, {ConditionType: "condition2"}, {ConditionType: "condition3"}}
	conds := []corev1.PodCondition{{Type: "condition1", Status: corev1.ConditionFalse}, {Type: "condition2", Status: corev1.ConditionTrue}}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	statuses := []corev1.ContainerStatus{{Ready: true, RestartCount: 3, State: running}, {RestartCount: 3}}
	runRows(t, []rowCase{
		{name: "node, ip, nominated node, gates", wide: true, obj: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "test1"},
			Spec:       corev1.PodSpec{Containers: make([]corev1.Container, 2), NodeName: "test1", ReadinessGates: gates},
			Status: corev1.PodStatus{Conditions: conds, Phase: "podPhase", PodIPs: []corev1.PodIP{{IP: "1.1.1.1"}},
				ContainerStatuses: statuses, NominatedNodeName: "node1"},
		}, want: []any{"test1", "1/2", "podPhase", "6", "<unknown>", "1.1.1.1", "test1", "node1", "1/3"}},
		{name: "dual stack", wide: true, obj: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "test1"},
			Spec:       corev1.PodSpec{Containers: make([]corev1.Container, 2), NodeName: "test1", ReadinessGates: gates},
			Status: corev1.PodStatus{Conditions: conds, Phase: "podPhase", PodIPs: []corev1.PodIP{{IP: "1.1.1.1"}, {IP: "2001:db8::"}},
				ContainerStatuses: statuses, NominatedNodeName: "node1"},
		}, want: []any{"test1", "1/2", "podPhase", "6", "<unknown>", "1.1.1.1", "test1", "node1", "1/3"}},
		{name: "none", wide: true, obj: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "test2"},
			Spec:       corev1.PodSpec{Containers: make([]corev1.Container, 2)},
			Status: corev1.PodStatus{Phase: "podPhase", ContainerStatuses: []corev1.ContainerStatus{
				{Ready: true, RestartCount: 3, State: running},
				{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerWaitingReason"}}, RestartCount: 3},
			}},
		}, want: []any{"test2", "1/2", "ContainerWaitingReason", "6", "<unknown>", "<none>", "<none>", "<none>", "<none>"}},
		{name: "v1 podIP without podIPs", wide: true, obj: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec:       corev1.PodSpec{Containers: make([]corev1.Container, 1), NodeName: "n1"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7", ContainerStatuses: []corev1.ContainerStatus{{Ready: true, State: running}}},
		}, want: []any{"p", "1/1", "Running", "0", "<unknown>", "10.244.0.7", "n1", "<none>", "<none>"}},
	})
}

func TestService(t *testing.T) {
	svc := func(name string, spec corev1.ServiceSpec, lb ...corev1.LoadBalancerIngress) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec, Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: lb}}}
	}
	tcp := func(port int32) corev1.ServicePort { return corev1.ServicePort{Port: port, Protocol: "TCP"} }
	runRows(t, []rowCase{
		// load balancers
		{name: "lb with two ips", obj: svc("service1", corev1.ServiceSpec{ClusterIPs: []string{"1.2.3.4"}, Type: "LoadBalancer", Ports: []corev1.ServicePort{tcp(80)}},
			corev1.LoadBalancerIngress{IP: "2.3.4.5"}, corev1.LoadBalancerIngress{IP: "3.4.5.6"}),
			want: []any{"service1", "LoadBalancer", "1.2.3.4", "2.3.4.5,3.4.5.6", "80/TCP", "<unknown>"}},
		{name: "lb pending", obj: svc("service2", corev1.ServiceSpec{ClusterIPs: []string{"1.3.4.5"}, Type: "LoadBalancer",
			Ports: []corev1.ServicePort{tcp(80), {Port: 8090, Protocol: "UDP"}, tcp(8000), {Port: 7777, Protocol: "SCTP"}}}),
			want: []any{"service2", "LoadBalancer", "1.3.4.5", "<pending>", "80/TCP,8090/UDP,8000/TCP,7777/SCTP", "<unknown>"}},
		{name: "lb multiple ports", obj: svc("service3", corev1.ServiceSpec{ClusterIPs: []string{"1.4.5.6"}, Type: "LoadBalancer",
			Ports: []corev1.ServicePort{tcp(80), {Port: 8090, Protocol: "UDP"}, tcp(8000)}}, corev1.LoadBalancerIngress{IP: "2.3.4.5"}),
			want: []any{"service3", "LoadBalancer", "1.4.5.6", "2.3.4.5", "80/TCP,8090/UDP,8000/TCP", "<unknown>"}},
		// Upstream clips this to "2.3.4.5,3.4.5..." only when a client prints
		// narrow itself; the API server always prints wide.
		{name: "lb long list is not clipped", wide: true, obj: svc("service4", corev1.ServiceSpec{ClusterIPs: []string{"1.5.6.7"}, Type: "LoadBalancer",
			Ports: []corev1.ServicePort{tcp(80), {Port: 8090, Protocol: "UDP"}, tcp(8000)}, Selector: map[string]string{"foo": "bar"}},
			corev1.LoadBalancerIngress{IP: "2.3.4.5"}, corev1.LoadBalancerIngress{IP: "3.4.5.6"}, corev1.LoadBalancerIngress{IP: "5.6.7.8", Hostname: "host5678"}),
			want: []any{"service4", "LoadBalancer", "1.5.6.7", "2.3.4.5,3.4.5.6,5.6.7.8", "80/TCP,8090/UDP,8000/TCP", "<unknown>", "foo=bar"}},
		// types
		{name: "cluster ip", obj: svc("test1", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 2233}},
			ClusterIPs: []string{"10.9.8.7"}, Selector: map[string]string{"foo": "bar"}}),
			want: []any{"test1", "ClusterIP", "10.9.8.7", "<none>", "2233/tcp", "<unknown>"}},
		{name: "cluster ip wide", wide: true, obj: svc("test1", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 2233}},
			ClusterIPs: []string{"10.9.8.7"}, Selector: map[string]string{"foo": "bar"}}),
			want: []any{"test1", "ClusterIP", "10.9.8.7", "<none>", "2233/tcp", "<unknown>", "foo=bar"}},
		{name: "node port", obj: svc("test2", corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 8888, NodePort: 9999}},
			ClusterIPs: []string{"10.9.8.7"}}),
			want: []any{"test2", "NodePort", "10.9.8.7", "<none>", "8888:9999/tcp", "<unknown>"}},
		{name: "lb no status", obj: svc("test3", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 8888}},
			ClusterIPs: []string{"10.9.8.7"}}),
			want: []any{"test3", "LoadBalancer", "10.9.8.7", "<pending>", "8888/tcp", "<unknown>"}},
		{name: "lb external ip, no status", obj: svc("test4", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 8888}},
			ClusterIPs: []string{"10.9.8.7"}, ExternalIPs: []string{"80.11.12.10"}}),
			want: []any{"test4", "LoadBalancer", "10.9.8.7", "80.11.12.10", "8888/tcp", "<unknown>"}},
		{name: "lb external ip and status", obj: svc("test5", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 8888}},
			ClusterIPs: []string{"10.9.8.7"}, ExternalIPs: []string{"80.11.12.10"}}, corev1.LoadBalancerIngress{IP: "3.4.5.6", Hostname: "test.cluster.com"}),
			want: []any{"test5", "LoadBalancer", "10.9.8.7", "3.4.5.6,80.11.12.10", "8888/tcp", "<unknown>"}},
		{name: "lb external ips and statuses", obj: svc("test6", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Protocol: "tcp", Port: 8888}},
			ClusterIPs: []string{"10.9.8.7"}, ExternalIPs: []string{"80.11.12.10", "80.11.12.11"}},
			corev1.LoadBalancerIngress{IP: "2.3.4.5", Hostname: "test.cluster.local"}, corev1.LoadBalancerIngress{IP: "3.4.5.6", Hostname: "test.cluster.com"}),
			want: []any{"test6", "LoadBalancer", "10.9.8.7", "2.3.4.5,3.4.5.6,80.11.12.10,80.11.12.11", "8888/tcp", "<unknown>"}},
		{name: "lb hostname", obj: svc("h", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.0.0.9"}, Ports: []corev1.ServicePort{tcp(443)}},
			corev1.LoadBalancerIngress{Hostname: "lb.example.com"}, corev1.LoadBalancerIngress{IP: "1.1.1.1"}, corev1.LoadBalancerIngress{IP: "1.1.1.1"}),
			want: []any{"h", "LoadBalancer", "10.0.0.9", "1.1.1.1,lb.example.com", "443/TCP", "<unknown>"}},
		{name: "external name", obj: svc("test7", corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "my.database.example.com"}),
			want: []any{"test7", "ExternalName", "<none>", "my.database.example.com", "<none>", "<unknown>"}},
		{name: "v1 clusterIP without clusterIPs, headless", wide: true, obj: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "db", CreationTimestamp: at(-90 * time.Second)},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "None", Ports: []corev1.ServicePort{tcp(5432)}},
		}, want: []any{"db", "ClusterIP", "None", "<none>", "5432/TCP", "90s", "<none>"}},
		{name: "cluster ip with external ips", obj: svc("x", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: []string{"10.0.0.1"},
			ExternalIPs: []string{"1.2.3.4", "5.6.7.8"}, Ports: []corev1.ServicePort{tcp(80), tcp(443)}}),
			want: []any{"x", "ClusterIP", "10.0.0.1", "1.2.3.4,5.6.7.8", "80/TCP,443/TCP", "<unknown>"}},
	})
}

func TestEndpoints(t *testing.T) {
	addrs := func(ips ...string) []corev1.EndpointAddress {
		var a []corev1.EndpointAddress
		for _, ip := range ips {
			a = append(a, corev1.EndpointAddress{IP: ip})
		}
		return a
	}
	runRows(t, []rowCase{
		{name: "no ips", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "endpoint1", CreationTimestamp: soon}},
			want: []any{"endpoint1", "<none>", "0s"}},
		{name: "no ports", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "endpoint3", CreationTimestamp: at(-5 * time.Minute)},
			Subsets: []corev1.EndpointSubset{{Addresses: addrs("1.2.3.4", "5.6.7.8")}}},
			want: []any{"endpoint3", "1.2.3.4,5.6.7.8", "5m"}},
		{name: "two ips one port", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "endpoint2", CreationTimestamp: soon},
			Subsets: []corev1.EndpointSubset{{Addresses: addrs("1.2.3.4", "5.6.7.8"), Ports: []corev1.EndpointPort{{Port: 8001, Protocol: "tcp"}}}}},
			want: []any{"endpoint2", "1.2.3.4:8001,5.6.7.8:8001", "0s"}},
		{name: "more", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "endpoint2", CreationTimestamp: soon},
			Subsets: []corev1.EndpointSubset{{Addresses: addrs("1.2.3.4", "5.6.7.8", "9.8.7.6", "6.6.6.6"), Ports: []corev1.EndpointPort{{Port: 8001, Protocol: "tcp"}}}}},
			want: []any{"endpoint2", "1.2.3.4:8001,5.6.7.8:8001,9.8.7.6:8001 + 1 more...", "0s"}},
		{name: "ipv6, two ports, two subsets", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "e"},
			Subsets: []corev1.EndpointSubset{
				{Addresses: addrs("fd00::1"), Ports: []corev1.EndpointPort{{Name: "http", Port: 80}, {Name: "https", Port: 443}}},
				{Addresses: addrs("10.0.0.1", "10.0.0.2"), Ports: []corev1.EndpointPort{{Port: 53}}},
			}},
			want: []any{"e", "[fd00::1]:80,[fd00::1]:443,10.0.0.1:53 + 1 more...", "<unknown>"}},
		{name: "subset without addresses", obj: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "e"},
			Subsets: []corev1.EndpointSubset{{NotReadyAddresses: addrs("10.0.0.1"), Ports: []corev1.EndpointPort{{Port: 80}}}}},
			want: []any{"e", "", "<unknown>"}},
	})
}

func TestPersistentVolume(t *testing.T) {
	claimRef := &corev1.ObjectReference{Name: "test", Namespace: "default"}
	pv := func(name string, modes []corev1.PersistentVolumeAccessMode, size string, phase corev1.PersistentVolumePhase, class string, vac *string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{ClaimRef: claimRef, AccessModes: modes, StorageClassName: class, VolumeAttributesClassName: vac,
				Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			Status: corev1.PersistentVolumeStatus{Phase: phase},
		}
	}
	rox := []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
	rwx := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	fs := corev1.PersistentVolumeFilesystem
	runRows(t, []rowCase{
		{name: "bound", wide: true, obj: pv("test1", rox, "4Gi", corev1.VolumeBound, "", nil),
			want: []any{"test1", "4Gi", "ROX", "", "Bound", "default/test", "", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "failed", wide: true, obj: pv("test2", rox, "4Gi", corev1.VolumeFailed, "", nil),
			want: []any{"test2", "4Gi", "ROX", "", "Failed", "default/test", "", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "pending", wide: true, obj: pv("test3", rwx, "10Gi", corev1.VolumePending, "", nil),
			want: []any{"test3", "10Gi", "RWX", "", "Pending", "default/test", "", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "storage class", wide: true, obj: pv("test4", rwo, "10Gi", corev1.VolumePending, "my-scn", nil),
			want: []any{"test4", "10Gi", "RWO", "", "Pending", "default/test", "my-scn", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "volume attributes class", wide: true, obj: pv("test4", rwo, "10Gi", corev1.VolumePending, "my-scn", ptr("my-vacn")),
			want: []any{"test4", "10Gi", "RWO", "", "Pending", "default/test", "my-scn", "my-vacn", "", "<unknown>", "<unset>"}},
		{name: "available", wide: true, obj: pv("test5", rwo, "10Gi", corev1.VolumeAvailable, "my-scn", nil),
			want: []any{"test5", "10Gi", "RWO", "", "Available", "default/test", "my-scn", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "released", wide: true, obj: pv("test6", rwo, "10Gi", corev1.VolumeReleased, "my-scn", nil),
			want: []any{"test6", "10Gi", "RWO", "", "Released", "default/test", "my-scn", "<unset>", "", "<unknown>", "<unset>"}},
		{name: "terminating, modes ordered and deduplicated, beta class, policy, mode", wide: true, obj: &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv", CreationTimestamp: at(-2 * time.Hour), DeletionTimestamp: atP(0),
				Annotations: map[string]string{"volume.beta.kubernetes.io/storage-class": "beta"}},
			Spec: corev1.PersistentVolumeSpec{
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod, corev1.ReadWriteMany, corev1.ReadWriteOnce, corev1.ReadWriteOnce},
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("500Mi")},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "ignored",
				VolumeMode:                    &fs,
			},
			Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeFailed, Reason: "Recycler failed"},
		}, want: []any{"pv", "500Mi", "RWO,RWX,RWOP", "Retain", "Terminating", "", "beta", "<unset>", "Recycler failed", "120m", "Filesystem"}},
		{name: "no capacity", wide: true, obj: &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "empty"}},
			want: []any{"empty", "0", "", "", "", "", "", "<unset>", "", "<unknown>", "<unset>"}},
	})
}

func TestPersistentVolumeClaim(t *testing.T) {
	fs := corev1.PersistentVolumeFilesystem
	pvc := func(name, volume string, class *string, vac *string, mode *corev1.PersistentVolumeMode, phase corev1.PersistentVolumeClaimPhase, modes []corev1.PersistentVolumeAccessMode, size string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: volume, StorageClassName: class, VolumeAttributesClassName: vac, VolumeMode: mode},
			Status: corev1.PersistentVolumeClaimStatus{Phase: phase, AccessModes: modes,
				Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		}
	}
	rox := []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
	rwx := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	scn := ptr("my-scn")
	runRows(t, []rowCase{
		{name: "bound", wide: true, obj: pvc("test1", "my-volume", nil, nil, &fs, corev1.ClaimBound, rox, "4Gi"),
			want: []any{"test1", "Bound", "my-volume", "4Gi", "ROX", "", "<unset>", "<unknown>", "Filesystem"}},
		{name: "lost, no volume", wide: true, obj: pvc("test2", "", nil, nil, &fs, corev1.ClaimLost, rox, "4Gi"),
			want: []any{"test2", "Lost", "", "", "", "", "<unset>", "<unknown>", "Filesystem"}},
		{name: "pending", wide: true, obj: pvc("test3", "my-volume", nil, nil, &fs, corev1.ClaimPending, rwx, "10Gi"),
			want: []any{"test3", "Pending", "my-volume", "10Gi", "RWX", "", "<unset>", "<unknown>", "Filesystem"}},
		{name: "storage class", wide: true, obj: pvc("test4", "my-volume", scn, nil, &fs, corev1.ClaimPending, rwo, "10Gi"),
			want: []any{"test4", "Pending", "my-volume", "10Gi", "RWO", "my-scn", "<unset>", "<unknown>", "Filesystem"}},
		{name: "no volume mode", wide: true, obj: pvc("test5", "my-volume", scn, nil, nil, corev1.ClaimPending, rwo, "10Gi"),
			want: []any{"test5", "Pending", "my-volume", "10Gi", "RWO", "my-scn", "<unset>", "<unknown>", "<unset>"}},
		{name: "volume attributes class", wide: true, obj: pvc("test5", "my-volume", scn, ptr("my-vacn"), nil, corev1.ClaimPending, rwo, "10Gi"),
			want: []any{"test5", "Pending", "my-volume", "10Gi", "RWO", "my-scn", "my-vacn", "<unknown>", "<unset>"}},
		{name: "terminating, beta class", obj: &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "c", CreationTimestamp: at(-26 * time.Hour), DeletionTimestamp: atP(0),
				Annotations: map[string]string{"volume.beta.kubernetes.io/storage-class": "beta"}},
			Spec:   corev1.PersistentVolumeClaimSpec{StorageClassName: scn},
			Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
		}, want: []any{"c", "Terminating", "", "", "", "beta", "<unset>", "26h"}},
	})
}

func TestDeployment(t *testing.T) {
	deployment := func(replicas *int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "test1", CreationTimestamp: soon},
			Spec: appsv1.DeploymentSpec{
				Replicas: replicas,
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "fake-container1", Image: "fake-image1"}, {Name: "fake-container2", Image: "fake-image2"},
				}}},
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"foo": "bar"}},
			},
			Status: appsv1.DeploymentStatus{Replicas: 10, UpdatedReplicas: 2, AvailableReplicas: 1, UnavailableReplicas: 4},
		}
	}
	invalid := deployment(ptr[int32](2))
	invalid.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}
	ready := deployment(ptr[int32](3))
	ready.Status = appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}
	ready.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"},
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "a"}}}}
	runRows(t, []rowCase{
		{name: "narrow", obj: deployment(ptr[int32](5)), want: []any{"test1", "0/5", int64(2), int64(1), "0s"}},
		{name: "wide", wide: true, obj: deployment(ptr[int32](5)),
			want: []any{"test1", "0/5", int64(2), int64(1), "0s", "fake-container1,fake-container2", "fake-image1,fake-image2", "foo=bar"}},
		{name: "nil replicas is the default, 1", obj: deployment(nil), want: []any{"test1", "0/1", int64(2), int64(1), "0s"}},
		{name: "invalid selector", wide: true, obj: invalid,
			want: []any{"test1", "0/2", int64(2), int64(1), "0s", "fake-container1,fake-container2", "fake-image1,fake-image2", "<invalid>"}},
		{name: "ready, set selector", wide: true, obj: ready,
			want: []any{"test1", "3/3", int64(3), int64(3), "0s", "fake-container1,fake-container2", "fake-image1,fake-image2", "app=web,tier in (a,b)"}},
	})
}

func TestReplicaSet(t *testing.T) {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "test1", CreationTimestamp: soon},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr[int32](5),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "fake-container1", Image: "fake-image1"}, {Name: "fake-container2", Image: "fake-image2"},
			}}},
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"foo": "bar"}},
		},
		Status: appsv1.ReplicaSetStatus{Replicas: 5, ReadyReplicas: 2},
	}
	runRows(t, []rowCase{
		{name: "narrow", obj: rs, want: []any{"test1", int64(5), int64(5), int64(2), "0s"}},
		{name: "wide", wide: true, obj: rs,
			want: []any{"test1", int64(5), int64(5), int64(2), "0s", "fake-container1,fake-container2", "fake-image1,fake-image2", "foo=bar"}},
		{name: "list item without template or selector", wide: true, obj: &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "replicaset2", CreationTimestamp: soon},
			Spec:       appsv1.ReplicaSetSpec{Replicas: ptr[int32](4)},
			Status:     appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 1},
		}, want: []any{"replicaset2", int64(4), int64(3), int64(1), "0s", "", "", "<none>"}},
		{name: "nil replicas", obj: &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "r"}},
			want: []any{"r", int64(1), int64(0), int64(0), "<unknown>"}},
	})
}

func TestDaemonSet(t *testing.T) {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "test1", CreationTimestamp: soon},
		Spec: appsv1.DaemonSetSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "fake-container1", Image: "fake-image1"}, {Name: "fake-container2", Image: "fake-image2"},
			}}},
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"foo": "bar"}},
		},
		Status: appsv1.DaemonSetStatus{CurrentNumberScheduled: 2, DesiredNumberScheduled: 3, NumberReady: 1, UpdatedNumberScheduled: 2, NumberAvailable: 0},
	}
	runRows(t, []rowCase{
		{name: "narrow", obj: ds, want: []any{"test1", int64(3), int64(2), int64(1), int64(2), int64(0), "<none>", "0s"}},
		{name: "wide", wide: true, obj: ds,
			want: []any{"test1", int64(3), int64(2), int64(1), int64(2), int64(0), "<none>", "0s", "fake-container1,fake-container2", "fake-image1,fake-image2", "foo=bar"}},
		{name: "node selector", obj: &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", CreationTimestamp: at(-8 * day)},
			Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"kubernetes.io/os": "linux", "a": "b"}}}},
			Status: appsv1.DaemonSetStatus{CurrentNumberScheduled: 4, DesiredNumberScheduled: 2, NumberReady: 9, UpdatedNumberScheduled: 3, NumberAvailable: 3},
		}, want: []any{"kube-proxy", int64(2), int64(4), int64(9), int64(3), int64(3), "a=b,kubernetes.io/os=linux", "8d"}},
	})
}

func TestStatefulSet(t *testing.T) {
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "test1", CreationTimestamp: soon},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr[int32](5),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "fake-container1", Image: "fake-image1"}, {Name: "fake-container2", Image: "fake-image2"},
			}}},
		},
		Status: appsv1.StatefulSetStatus{Replicas: 5, ReadyReplicas: 2},
	}
	runRows(t, []rowCase{
		{name: "narrow", obj: sts, want: []any{"test1", "2/5", "0s"}},
		{name: "wide", wide: true, obj: sts, want: []any{"test1", "2/5", "0s", "fake-container1,fake-container2", "fake-image1,fake-image2"}},
		{name: "nil replicas", obj: &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "s"}}, want: []any{"s", "0/1", "<unknown>"}},
	})
}

func TestJob(t *testing.T) {
	containers := []corev1.Container{{Name: "fake-job-container1", Image: "fake-job-image1"}, {Name: "fake-job-container2", Image: "fake-job-image2"}}
	job := func(name string, created metav1.Time, completions *int32, status batchv1.JobStatus) *batchv1.Job {
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created},
			Spec: batchv1.JobSpec{
				Completions: completions,
				Template:    corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}},
				Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"job-label": "job-label-value"}},
			},
			Status: status,
		}
	}
	cond := func(t batchv1.JobConditionType) batchv1.JobStatus {
		return batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: t, Status: corev1.ConditionTrue}}}
	}
	tenYears := at(-10 * 365 * day)
	terminating := job("job9", soon, nil, batchv1.JobStatus{})
	terminating.DeletionTimestamp = &soon
	parallel := job("p", soon, nil, batchv1.JobStatus{Succeeded: 1})
	parallel.Spec.Parallelism = ptr[int32](3)
	single := job("p1", soon, nil, batchv1.JobStatus{})
	single.Spec.Parallelism = ptr[int32](1)
	runRows(t, []rowCase{
		{name: "narrow", obj: job("job1", soon, ptr[int32](2), batchv1.JobStatus{Succeeded: 1}),
			want: []any{"job1", "Running", "1/2", "", "0s"}},
		{name: "wide", wide: true, obj: job("job1", soon, ptr[int32](2), batchv1.JobStatus{Succeeded: 1}),
			want: []any{"job1", "Running", "1/2", "", "0s", "fake-job-container1,fake-job-container2", "fake-job-image1,fake-job-image2", "job-label=job-label-value"}},
		{name: "ten years", obj: job("job2", metav1.NewTime(now.AddDate(-10, 0, 0)), nil, batchv1.JobStatus{}),
			want: []any{"job2", "Running", "0/1", "", "10y"}},
		{name: "completed duration", obj: job("job3", tenYears, nil, batchv1.JobStatus{StartTime: atP(time.Minute), CompletionTime: atP(31 * time.Minute)}),
			want: []any{"job3", "Running", "0/1", "30m", "10y"}},
		{name: "running duration", obj: job("job4", tenYears, nil, batchv1.JobStatus{StartTime: atP(-20 * time.Minute)}),
			want: []any{"job4", "Running", "0/1", "20m", "10y"}},
		{name: "complete", obj: job("job5", soon, nil, cond(batchv1.JobComplete)), want: []any{"job5", "Complete", "0/1", "", "0s"}},
		{name: "failed", obj: job("job6", soon, nil, cond(batchv1.JobFailed)), want: []any{"job6", "Failed", "0/1", "", "0s"}},
		{name: "suspended", obj: job("job7", soon, nil, cond(batchv1.JobSuspended)), want: []any{"job7", "Suspended", "0/1", "", "0s"}},
		{name: "failure target", obj: job("job8", soon, nil, cond(batchv1.JobFailureTarget)), want: []any{"job8", "FailureTarget", "0/1", "", "0s"}},
		{name: "terminating", obj: terminating, want: []any{"job9", "Terminating", "0/1", "", "0s"}},
		{name: "list item", obj: job("job2", soon, ptr[int32](2), batchv1.JobStatus{Succeeded: 2, StartTime: atP(-20 * time.Minute)}),
			want: []any{"job2", "Running", "2/2", "20m", "0s"}},
		{name: "parallel work queue", obj: parallel, want: []any{"p", "Running", "1/1 of 3", "", "0s"}},
		{name: "parallelism 1", obj: single, want: []any{"p1", "Running", "0/1", "", "0s"}},
		{name: "success criteria met is not a 1.33 status", obj: job("s", soon, ptr[int32](3), batchv1.JobStatus{Succeeded: 1,
			Conditions: []batchv1.JobCondition{{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue}}}),
			want: []any{"s", "Running", "1/3", "", "0s"}},
		{name: "false complete condition", obj: job("f", soon, nil, batchv1.JobStatus{
			Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionFalse}, {Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}),
			want: []any{"f", "Failed", "0/1", "", "0s"}},
	})
}

func TestCronJob(t *testing.T) {
	cronJob := func(name string, created metav1.Time, tz *string, last *metav1.Time) *batchv1.CronJob {
		return &batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created},
			Spec: batchv1.CronJobSpec{
				Schedule: "0/5 * * * ?",
				TimeZone: tz,
				Suspend:  ptr(false),
				JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					Completions: ptr[int32](2),
					Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
						{Name: "fake-job-container1", Image: "fake-job-image1"}, {Name: "fake-job-container2", Image: "fake-job-image2"},
					}}},
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
				}},
			},
			Status: batchv1.CronJobStatus{LastScheduleTime: last},
		}
	}
	active := cronJob("busy", at(-2*time.Hour), nil, atP(-time.Minute))
	active.Spec.Suspend = nil
	active.Status.Active = []corev1.ObjectReference{{Name: "a"}, {Name: "b"}}
	suspended := cronJob("off", soon, nil, nil)
	suspended.Spec.Suspend = ptr(true)
	runRows(t, []rowCase{
		{name: "basic", obj: cronJob("cronjob1", soon, nil, &soon), want: []any{"cronjob1", "0/5 * * * ?", "<none>", "False", int64(0), "0s", "0s"}},
		{name: "time zone", obj: cronJob("cronjob1", soon, ptr("LOCAL"), &soon), want: []any{"cronjob1", "0/5 * * * ?", "LOCAL", "False", int64(0), "0s", "0s"}},
		{name: "wide", wide: true, obj: cronJob("cronjob1", soon, nil, &soon),
			want: []any{"cronjob1", "0/5 * * * ?", "<none>", "False", int64(0), "0s", "0s", "fake-job-container1,fake-job-container2", "fake-job-image1,fake-job-image2", "a=b"}},
		{name: "last schedule and age", obj: cronJob("cronjob2", at(-5*time.Minute), nil, atP(-30*time.Second)),
			want: []any{"cronjob2", "0/5 * * * ?", "<none>", "False", int64(0), "30s", "5m"}},
		{name: "never scheduled", obj: cronJob("cronjob3", at(-5*time.Minute), nil, nil),
			want: []any{"cronjob3", "0/5 * * * ?", "<none>", "False", int64(0), "<none>", "5m"}},
		{name: "active, suspend unset", obj: active, want: []any{"busy", "0/5 * * * ?", "<none>", "<unset>", int64(2), "60s", "120m"}},
		{name: "suspended", obj: suspended, want: []any{"off", "0/5 * * * ?", "<none>", "True", int64(0), "<none>", "0s"}},
	})
}

// The printer table covers exactly the stored kinds.
func TestPrintersCoverStoredKinds(t *testing.T) {
	stored := map[string]bool{}
	for _, k := range state.Kinds {
		key := k.Group + "/" + k.Kind
		stored[key] = true
		if _, ok := printersByKind[key]; !ok {
			t.Errorf("stored kind %s has no printer", key)
		}
	}
	for key := range printersByKind {
		if !stored[key] {
			t.Errorf("printer for %s, which is not stored", key)
		}
	}
}

func (c col) String() string {
	if c.format != "" {
		return fmt.Sprintf("%s(%s,%s,p%d)", c.name, c.typ, c.format, c.priority)
	}
	return fmt.Sprintf("%s(%s,p%d)", c.name, c.typ, c.priority)
}

func TestEndpointSlice(t *testing.T) {
	port := func(n int32) discoveryv1.EndpointPort { return discoveryv1.EndpointPort{Port: &n} }
	name := "http"
	ep := func(ips ...string) discoveryv1.Endpoint { return discoveryv1.Endpoint{Addresses: ips} }
	runRows(t, []rowCase{
		{name: "empty", obj: &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s", CreationTimestamp: soon}, AddressType: discoveryv1.AddressTypeIPv4},
			want: []any{"s", "IPv4", "<unset>", "<unset>", "0s"}},
		{name: "ports and endpoints", obj: &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s", CreationTimestamp: at(-5 * time.Minute)},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{port(80), {Name: &name}, {}, port(443)},
			Endpoints:   []discoveryv1.Endpoint{ep("10.0.0.1"), ep("10.0.0.2", "10.0.0.3"), ep("10.0.0.4"), ep("10.0.0.5")}},
			want: []any{"s", "IPv4", "80,http,* + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...", "5m"}},
	})
}

func TestRoleBindingRow(t *testing.T) {
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "dev", CreationTimestamp: metav1.NewTime(now.Add(-5 * time.Minute))},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects: []rbacv1.Subject{
			{Kind: "User", Name: "alice"}, {Kind: "Group", Name: "developers"}, {Kind: "User", Name: "bob"},
			{Kind: "ServiceAccount", Namespace: "dev", Name: "ci"},
		},
	}
	row := printRoleBinding(rb, now)
	want := []any{"dev", "ClusterRole/edit", "5m", "alice, bob", "developers", "dev/ci"}
	if !reflect.DeepEqual(row.Cells, want) {
		t.Fatalf("cells %v, want %v", row.Cells, want)
	}
}
