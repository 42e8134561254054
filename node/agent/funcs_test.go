package agent

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/state"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "B": "$(A)", "EMPTY": ""}
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"$(A)", "a"},
		{"x$(A)y$(A)z", "xayaz"},
		{"$(B)", "$(A)"}, // values are not expanded again
		{"$(EMPTY)", ""},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(A)", "$(A)"},
		{"$$", "$"},
		{"$$$(A)", "$a"},
		{"$A", "$A"},
		{"cost: 5$", "cost: 5$"},
		{"$(A", "$(A"},
		{"$()", "$()"},
	}
	for _, tc := range tests {
		if got := expand(tc.in, vars); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := expandAll(nil, vars); got != nil {
		t.Errorf("expandAll(nil) = %v", got)
	}
}

func TestResourceValue(t *testing.T) {
	c := &corev1.Container{Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("500m"),
			corev1.ResourceMemory: resource.MustParse("100Mi"),
		},
		Requests: corev1.ResourceList{
			corev1.ResourceMemory:           resource.MustParse("64Mi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("1G"),
		},
	}}
	tests := []struct {
		res, divisor, want string
	}{
		{"limits.cpu", "", "1"}, // rounded up to whole cores
		{"limits.cpu", "1m", "500"},
		{"limits.cpu", "250m", "2"},
		{"limits.memory", "", strconv.Itoa(100 << 20)},
		{"limits.memory", "1Mi", "100"},
		{"limits.memory", "1Gi", "1"}, // rounded up
		{"requests.memory", "1Mi", "64"},
		{"requests.ephemeral-storage", "1M", "1000"},
		{"requests.cpu", "", "0"},                                     // unset request
		{"limits.ephemeral-storage", "", strconv.Itoa(math.MaxInt32)}, // unset limit, node unknown: unlimited
	}
	for _, tc := range tests {
		ref := &corev1.ResourceFieldSelector{Resource: tc.res}
		if tc.divisor != "" {
			ref.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := resourceValue(c, ref, nil)
		if err != nil || got != tc.want {
			t.Errorf("resourceValue(%s, divisor %q) = %q, %v; want %q", tc.res, tc.divisor, got, err, tc.want)
		}
	}
	// An unset limit is the node's allocatable.
	alloc := corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("50Gi"), corev1.ResourceCPU: resource.MustParse("2")}
	if got, err := resourceValue(c, &corev1.ResourceFieldSelector{Resource: "limits.ephemeral-storage", Divisor: resource.MustParse("1Gi")}, alloc); err != nil || got != "50" {
		t.Errorf("unset limit with the node's allocatable = %q, %v; want 50 (Gi)", got, err)
	}
	if got, _ := resourceValue(c, &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, alloc); got != "500" {
		t.Errorf("a set limit = %q, want its own 500m", got)
	}
	_, err := resourceValue(c, &corev1.ResourceFieldSelector{Resource: "limits.gpu"}, nil)
	var ce *configError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `unsupported resourceFieldRef "limits.gpu"`) {
		t.Errorf("unsupported resource: %v", err)
	}
}

func TestCheckNonRoot(t *testing.T) {
	tests := []struct {
		uid       *int64
		imageUser string
		wantErr   string
	}{
		{new(int64(0)), "1000", "container's runAsUser breaks non-root policy"},
		{new(int64(1000)), "root", ""}, // runAsUser wins over the image
		{nil, "", "container has runAsNonRoot and image will run as root"},
		{nil, "root", "container has runAsNonRoot and image will run as root"},
		{nil, "0", "container has runAsNonRoot and image will run as root"},
		{nil, "0:1000", "container has runAsNonRoot and image will run as root"},
		{nil, "nobody", "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root"},
		{nil, "nobody:nogroup", "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root"},
		{nil, "1000", ""},
		{nil, "1000:0", ""},
	}
	for _, tc := range tests {
		err := checkNonRoot(tc.uid, tc.imageUser)
		uid := "nil"
		if tc.uid != nil {
			uid = strconv.FormatInt(*tc.uid, 10)
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("checkNonRoot(%s, %q) = %v, want nil", uid, tc.imageUser, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("checkNonRoot(%s, %q) = %v, want %q", uid, tc.imageUser, err, tc.wantErr)
		case err != nil:
			if ce := (*configError)(nil); !errors.As(err, &ce) {
				t.Errorf("checkNonRoot(%s, %q) = %T, want a configError", uid, tc.imageUser, err)
			}
		}
	}
}

func TestQOSClass(t *testing.T) {
	res := func(kv ...string) corev1.ResourceList {
		l := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return l
	}
	withRes := func(req, lim corev1.ResourceList) corev1.Container {
		return corev1.Container{Name: "c", Resources: corev1.ResourceRequirements{Requests: req, Limits: lim}}
	}
	full := res("cpu", "1", "memory", "1Gi")
	tests := []struct {
		name string
		init []corev1.Container
		ctrs []corev1.Container
		want corev1.PodQOSClass
	}{
		{"nothing set", nil, []corev1.Container{{Name: "c"}}, corev1.PodQOSBestEffort},
		{"requests equal limits", nil, []corev1.Container{withRes(full, full)}, corev1.PodQOSGuaranteed},
		{"limits only", nil, []corev1.Container{withRes(nil, full)}, corev1.PodQOSGuaranteed},
		{"equal but written differently", nil, []corev1.Container{withRes(res("cpu", "1000m", "memory", "1024Mi"), full)}, corev1.PodQOSGuaranteed},
		{"requests below limits", nil, []corev1.Container{withRes(res("cpu", "500m", "memory", "1Gi"), full)}, corev1.PodQOSBurstable},
		{"requests only", nil, []corev1.Container{withRes(res("memory", "1Gi"), nil)}, corev1.PodQOSBurstable},
		{"cpu limit only", nil, []corev1.Container{withRes(nil, res("cpu", "1"))}, corev1.PodQOSBurstable},
		{"one container best effort", nil, []corev1.Container{withRes(full, full), {Name: "d"}}, corev1.PodQOSBurstable},
		{"init container counts", []corev1.Container{withRes(res("cpu", "1"), nil)}, []corev1.Container{withRes(full, full)}, corev1.PodQOSBurstable},
	}
	for _, tc := range tests {
		pod := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: tc.init, Containers: tc.ctrs}}
		if got := qosClass(pod); got != tc.want {
			t.Errorf("%s: qosClass = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestShouldRestart(t *testing.T) {
	tests := []struct {
		policy corev1.RestartPolicy
		code   int
		want   bool
	}{
		{corev1.RestartPolicyAlways, 0, true},
		{corev1.RestartPolicyAlways, 1, true},
		{corev1.RestartPolicyOnFailure, 0, false},
		{corev1.RestartPolicyOnFailure, 137, true},
		{corev1.RestartPolicyNever, 0, false},
		{corev1.RestartPolicyNever, 1, false},
		{"", 0, true}, // unset is Always
	}
	for _, tc := range tests {
		if got := shouldRestart(tc.policy, tc.code); got != tc.want {
			t.Errorf("shouldRestart(%q, %d) = %v, want %v", tc.policy, tc.code, got, tc.want)
		}
	}
}

func TestGracePeriod(t *testing.T) {
	pod := &corev1.Pod{}
	if got := gracePeriod(pod); got.Seconds() != 30 {
		t.Errorf("default grace %v, want 30s", got)
	}
	pod.Spec.TerminationGracePeriodSeconds = new(int64(10))
	if got := gracePeriod(pod); got.Seconds() != 10 {
		t.Errorf("grace %v, want the pod's 10s", got)
	}
	pod.DeletionGracePeriodSeconds = new(int64(0))
	if got := gracePeriod(pod); got != 0 {
		t.Errorf("grace %v, want the deletion's 0s", got)
	}
}

func TestResolvConf(t *testing.T) {
	a := &Agent{cfg: Config{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}}
	hostServers, hostSearch, hostOptions := hostResolvConf()
	render := func(servers, search, options []string) string {
		var b strings.Builder
		if len(search) > 0 {
			b.WriteString("search " + strings.Join(search, " ") + "\n")
		}
		for _, s := range servers {
			b.WriteString("nameserver " + s + "\n")
		}
		if len(options) > 0 {
			b.WriteString("options " + strings.Join(options, " ") + "\n")
		}
		return b.String()
	}
	const cluster = "search team.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n"
	tests := []struct {
		name   string
		policy corev1.DNSPolicy
		host   bool
		config *corev1.PodDNSConfig
		want   string
	}{
		{name: "unset is ClusterFirst", want: cluster},
		{name: "ClusterFirst", policy: corev1.DNSClusterFirst, want: cluster},
		{name: "ClusterFirstWithHostNet", policy: corev1.DNSClusterFirstWithHostNet, host: true, want: cluster},
		{name: "ClusterFirst on the host network is Default", policy: corev1.DNSClusterFirst, host: true,
			want: render(hostServers, hostSearch, hostOptions)},
		{name: "Default", policy: corev1.DNSDefault, want: render(hostServers, hostSearch, hostOptions)},
		{name: "None", policy: corev1.DNSNone, config: &corev1.PodDNSConfig{
			Nameservers: []string{"1.1.1.1", "8.8.8.8"},
			Searches:    []string{"example.com"},
			Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: new("2")}, {Name: "edns0"}},
		}, want: "search example.com\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:2 edns0\n"},
		{name: "None without config", policy: corev1.DNSNone, want: ""},
		{name: "ClusterFirst with dnsConfig", policy: corev1.DNSClusterFirst, config: &corev1.PodDNSConfig{
			Nameservers: []string{"1.1.1.1"},
			Searches:    []string{"example.com"},
			Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: new("1")}, {Name: "timeout", Value: new("3")}},
		}, want: "search team.svc.cluster.local svc.cluster.local cluster.local example.com\nnameserver 10.43.0.10\nnameserver 1.1.1.1\noptions ndots:1 timeout:3\n"},
	}
	for _, tc := range tests {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team"}, Spec: corev1.PodSpec{DNSPolicy: tc.policy, HostNetwork: tc.host, DNSConfig: tc.config}}
		got, err := a.resolvConf(pod)
		if err != nil || got != tc.want {
			t.Errorf("%s: resolvConf = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	_, err := a.resolvConf(&corev1.Pod{Spec: corev1.PodSpec{DNSPolicy: "Elsewhere"}})
	if err == nil || !strings.Contains(err.Error(), `unsupported dnsPolicy "Elsewhere"`) {
		t.Errorf("unknown dnsPolicy: %v", err)
	}
}

func TestCheckHostPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		typ     corev1.HostPathType
		wantErr string // "" for success
	}{
		{"relative", "rel/path", corev1.HostPathUnset, `hostPath "rel/path" is not absolute`},
		{"unset, missing", filepath.Join(dir, "absent"), corev1.HostPathUnset, ""},
		{"DirectoryOrCreate creates", filepath.Join(dir, "made", "deep"), corev1.HostPathDirectoryOrCreate, ""},
		{"DirectoryOrCreate on a file", file, corev1.HostPathDirectoryOrCreate, "is not a directory"},
		{"FileOrCreate creates", filepath.Join(dir, "sub", "new-file"), corev1.HostPathFileOrCreate, ""},
		{"FileOrCreate on a directory", dir, corev1.HostPathFileOrCreate, "is a directory, not a file"},
		{"Directory", dir, corev1.HostPathDirectory, ""},
		{"Directory on a file", file, corev1.HostPathDirectory, "hostPath type check failed: " + file + " is not a Directory"},
		{"File", file, corev1.HostPathFile, ""},
		{"File missing", filepath.Join(dir, "absent"), corev1.HostPathFile, "hostPath type check failed: " + filepath.Join(dir, "absent") + " is not a File"},
		{"File on a directory", dir, corev1.HostPathFile, "is not a File"},
		{"Socket on a file", file, corev1.HostPathSocket, "is not a Socket"},
		{"CharDevice", "/dev/null", corev1.HostPathCharDev, ""},
		{"unknown type", file, "Pipe", `unknown hostPath type "Pipe"`},
	}
	for _, tc := range tests {
		err := checkHostPath(&corev1.HostPathVolumeSource{Path: tc.path, Type: &tc.typ})
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "made", "deep")); err != nil || !fi.IsDir() {
		t.Errorf("DirectoryOrCreate did not create the directory: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sub", "new-file")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("FileOrCreate did not create the file: %v", err)
	}
}

func TestWriteProjected(t *testing.T) {
	data := map[string][]byte{"a": []byte("A"), "b": []byte("B"), "c": []byte("C")}
	mode := func(m int32) *int32 { return &m }
	// write is a configMap or secret volume: its data and items through
	// keyFiles, then the writer.
	write := func(dir string, data map[string][]byte, items []corev1.KeyToPath, defMode *int32, optional bool) error {
		files := map[string]volumeFile{}
		if err := keyFiles(files, data, items, fileMode(defMode), optional, "ConfigMap ns/conf"); err != nil {
			return err
		}
		return writeProjected(dir, files)
	}

	t.Run("every key, default mode", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vol")
		if err := write(dir, data, nil, mode(0o600), false); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{"a": {"A", 0o600}, "b": {"B", 0o600}, "c": {"C", 0o600}})
	})
	t.Run("items with paths and modes", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vol")
		items := []corev1.KeyToPath{{Key: "a", Path: "conf/a.txt", Mode: mode(0o400)}, {Key: "b", Path: "b.txt"}}
		if err := write(dir, data, items, nil, false); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{"conf/a.txt": {"A", 0o400}, "b.txt": {"B", 0o644}})
	})
	t.Run("missing key", func(t *testing.T) {
		err := write(filepath.Join(t.TempDir(), "vol"), data, []corev1.KeyToPath{{Key: "z", Path: "z"}}, nil, false)
		if err == nil || err.Error() != "couldn't find key z in ConfigMap ns/conf" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("optional source absent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vol")
		if err := write(dir, nil, []corev1.KeyToPath{{Key: "z", Path: "z"}}, nil, true); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{})
	})
	t.Run("optional source without the key", func(t *testing.T) {
		// The kubelet skips a missing key of an optional source, present or not.
		dir := filepath.Join(t.TempDir(), "vol")
		items := []corev1.KeyToPath{{Key: "z", Path: "z"}, {Key: "a", Path: "a"}}
		if err := write(dir, data, items, nil, true); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{"a": {"A", 0o644}})
	})
	t.Run("rewrite removes what is gone", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vol")
		keep := filepath.Join(dir, "subpath-dir") // an empty directory a subPath mount made
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		first := map[string]volumeFile{"x": {[]byte("1"), 0o644}, "d/e/f": {[]byte("2"), 0o644}, "g/h": {[]byte("3"), 0o644}, "i": {[]byte("4"), 0o644}}
		if err := writeProjected(dir, first); err != nil {
			t.Fatal(err)
		}
		// A temporary file of an interrupted write goes too.
		if err := os.WriteFile(filepath.Join(dir, "g", "..tmp-123"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		// "i" turns from a file into a directory, "d/e/f" goes with its
		// directories, "g" keeps a file.
		second := map[string]volumeFile{"x": {[]byte("1b"), 0o600}, "g/k": {[]byte("5"), 0o644}, "i/j": {[]byte("6"), 0o644}}
		if err := writeProjected(dir, second); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{"x": {"1b", 0o600}, "g/k": {"5", 0o644}, "i/j": {"6", 0o644}})
		if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
			t.Errorf("directory d of a removed file stayed: %v", err)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("an empty directory that held no file of the volume was removed: %v", err)
		}
		// And back: "i" is a file again.
		if err := writeProjected(dir, first); err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, map[string]wantFile{"x": {"1", 0o644}, "d/e/f": {"2", 0o644}, "g/h": {"3", 0o644}, "i": {"4", 0o644}})
	})
	t.Run("unchanged files are not replaced", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vol")
		files := map[string]volumeFile{"same": {[]byte("s"), 0o644}, "changes": {[]byte("c1"), 0o644}}
		if err := writeProjected(dir, files); err != nil {
			t.Fatal(err)
		}
		ino := func(name string) uint64 {
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(dir, name), &st); err != nil {
				t.Fatal(err)
			}
			return st.Ino
		}
		same, changes := ino("same"), ino("changes")
		files["changes"] = volumeFile{[]byte("c2"), 0o644}
		if err := writeProjected(dir, files); err != nil {
			t.Fatal(err)
		}
		if ino("same") != same {
			t.Errorf("an unchanged file was replaced")
		}
		if ino("changes") == changes {
			t.Errorf("a changed file was written in place, not renamed over")
		}
		checkFiles(t, dir, map[string]wantFile{"same": {"s", 0o644}, "changes": {"c2", 0o644}})
	})
	for _, bad := range []string{"../escape", "/etc/passwd", "a/../../escape", "..", "a/..", "..data", "", "."} {
		t.Run("rejects "+bad, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "vol")
			err := write(dir, data, []corev1.KeyToPath{{Key: "a", Path: bad}}, nil, false)
			if err == nil || !strings.Contains(err.Error(), "bad item path") {
				t.Errorf("err = %v, want the path rejected", err)
			}
			if _, err := os.Stat(filepath.Join(root, "escape")); !os.IsNotExist(err) {
				t.Errorf("a file was written outside the volume: %v", err)
			}
		})
	}
}

// wantFile is a file checkFiles expects: its content and mode.
type wantFile struct {
	data string
	mode os.FileMode
}

// checkFiles checks that the regular files under dir are exactly want.
func checkFiles(t *testing.T, dir string, want map[string]wantFile) {
	t.Helper()
	got := map[string]wantFile{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got[rel] = wantFile{string(b), fi.Mode()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(wantFile{})); diff != "" {
		t.Errorf("files under %s (-want +got):\n%s", dir, diff)
	}
}

func TestPickContainer(t *testing.T) {
	pod := func(annot string, names ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
		if annot != "" {
			p.Annotations = map[string]string{"kubectl.kubernetes.io/default-container": annot}
		}
		for _, n := range names {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n})
		}
		p.Spec.InitContainers = []corev1.Container{{Name: "setup"}}
		return p
	}
	tests := []struct {
		name     string
		pod      *corev1.Pod
		ask      string
		withInit bool
		want     string
		wantErr  string
	}{
		{"named", pod("", "a", "b"), "b", false, "b", ""},
		{"only one", pod("", "a"), "", false, "a", ""},
		{"annotation", pod("b", "a", "b"), "", false, "b", ""},
		{"named over annotation", pod("b", "a", "b"), "a", false, "a", ""},
		{"init container for logs", pod("", "a", "b"), "setup", true, "setup", ""},
		{"init container for exec", pod("", "a", "b"), "setup", false, "", "container setup is not valid for pod web"},
		{"unknown", pod("", "a"), "zzz", false, "", "container zzz is not valid for pod web"},
		{"choose", pod("", "a", "b"), "", false, "", "a container name must be specified for pod web, choose one of: [a b]"},
		{"choose with init", pod("", "a", "b"), "", true, "", "a container name must be specified for pod web, choose one of: [a b setup]"},
	}
	for _, tc := range tests {
		got, err := pickContainer(tc.pod, tc.ask, tc.withInit)
		if tc.wantErr != "" {
			if err == nil || err.ErrStatus.Message != tc.wantErr || err.ErrStatus.Code != 400 {
				t.Errorf("%s: %q, %v; want a bad request %q", tc.name, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestTailLog(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2024-05-01T10:00:00.123456789Z stdout F hello world", "hello world"},
		{"2024-05-01T10:00:00.123456789Z stderr P part of a line", "part of a line"},
		{"2024-05-01T10:00:00.123456789Z stdout F ", ""},
		{"raw output line", "raw output line"},
		{"2024-05-01T10:00:00Z other F x", "2024-05-01T10:00:00Z other F x"},
		{"2024-05-01T10:00:00Z stdout X x", "2024-05-01T10:00:00Z stdout X x"},
	} {
		if got := criContent(tc.in); got != tc.want {
			t.Errorf("criContent(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}

	dir := t.TempDir()
	write := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cri := write("cri.log",
		"2024-05-01T10:00:00Z stdout F one",
		"2024-05-01T10:00:01Z stderr F two",
		"2024-05-01T10:00:02Z stdout F three",
	)
	if got := tailLog(cri, 80, 2048); got != "one\ntwo\nthree" {
		t.Errorf("tailLog = %q", got)
	}
	if got := tailLog(cri, 2, 2048); got != "two\nthree" {
		t.Errorf("tailLog, 2 lines = %q", got)
	}
	raw := write("raw.log", "one", "two", "three")
	if got := tailLog(raw, 80, 7); got != "o\nthree" {
		t.Errorf("tailLog of a raw log, 7 bytes = %q", got)
	}
	if got := tailLog(filepath.Join(dir, "absent"), 80, 2048); got != "" {
		t.Errorf("tailLog of a missing file = %q", got)
	}
	// A long log is read from its end only; the cut first line is dropped.
	var long []string
	for i := range 1000 {
		long = append(long, "2024-05-01T10:00:00Z stdout F line "+strconv.Itoa(i))
	}
	if got := tailLog(write("long.log", long...), 3, 100); got != "line 997\nline 998\nline 999" {
		t.Errorf("tailLog of a long log = %q", got)
	}
}

func TestContainerID(t *testing.T) {
	uid := types.UID("0a1b2c3d-0000-4000-8000-00000000abcd")
	seen := map[string]bool{}
	for _, name := range []string{"app", "sidecar", strings.Repeat("n", 63)} {
		for _, attempt := range []int{0, 1, math.MaxInt32} {
			id := containerID(uid, name, attempt)
			if err := container.CheckID(id); err != nil {
				t.Errorf("containerID(%s, %d): %v", name, attempt, err)
			}
			if seen[id] {
				t.Errorf("containerID(%s, %d) = %s, taken", name, attempt, id)
			}
			seen[id] = true
		}
	}
	if id := containerID(uid, strings.Repeat("n", 63), math.MaxInt32); len(id) > container.MaxIDLength {
		t.Errorf("%s is longer than %d bytes", id, container.MaxIDLength)
	}
}

// TestServiceEnv: the kubelet's service variables, overridable, usable in
// $(VAR), and only the kubernetes service without service links.
func TestServiceEnv(t *testing.T) {
	store := state.NewStore(0)
	prop := state.NewLocalProposer(state.NewFSM(store, nil))
	svc := func(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
	}
	for _, s := range []*corev1.Service{
		svc("default", "kubernetes", "10.43.0.1", corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}),
		svc("app", "my-db", "10.43.0.7", corev1.ServicePort{Name: "sql", Port: 5432, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Name: "metrics-port", Port: 9187, Protocol: corev1.ProtocolUDP}),
		svc("app", "headless", "None", corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}),
		svc("other", "x", "10.43.0.8", corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}),
	} {
		if _, err := prop.Propose(context.Background(), state.Create(s)); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "DB", Value: "$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT_SQL)"},
		{Name: "MY_DB_SERVICE_PORT", Value: "mine"},
	}}
	env, err := buildEnv(&specContext{store: store, pod: pod}, c)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, want := range map[string]string{
		"DB":                              "10.43.0.7:5432",
		"MY_DB_SERVICE_PORT":              "mine",
		"MY_DB_SERVICE_HOST":              "10.43.0.7",
		"MY_DB_SERVICE_PORT_METRICS_PORT": "9187",
		"MY_DB_PORT":                      "tcp://10.43.0.7:5432",
		"MY_DB_PORT_9187_UDP":             "udp://10.43.0.7:9187",
		"MY_DB_PORT_9187_UDP_PROTO":       "udp",
		"MY_DB_PORT_5432_TCP_ADDR":        "10.43.0.7",
		"KUBERNETES_SERVICE_HOST":         "10.43.0.1",
		"KUBERNETES_SERVICE_PORT_HTTPS":   "443",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if _, ok := got["HEADLESS_SERVICE_HOST"]; ok {
		t.Error("headless service has variables")
	}
	if _, ok := got["X_SERVICE_HOST"]; ok {
		t.Error("another namespace's service has variables")
	}
	if env[0] != "DB=10.43.0.7:5432" || env[1] != "MY_DB_SERVICE_PORT=mine" {
		t.Errorf("the container's own variables come first: %v", env[:2])
	}
	off := false
	pod.Spec.EnableServiceLinks = &off
	env, _ = buildEnv(&specContext{store: store, pod: pod}, &corev1.Container{})
	for _, kv := range env {
		if !strings.HasPrefix(kv, "KUBERNETES_") {
			t.Errorf("enableServiceLinks=false still has %s", kv)
		}
	}
	if len(env) == 0 {
		t.Error("enableServiceLinks=false lost the kubernetes service")
	}
}
