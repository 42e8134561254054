package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/state"
)

// Labels the agent puts on the containers it creates. They make a restarted
// agent able to adopt what runs.
const (
	labelPodUID       = "shoal.dev/pod-uid"
	labelPodName      = "shoal.dev/pod-name"
	labelPodNamespace = "shoal.dev/pod-namespace"
	labelContainer    = "shoal.dev/container"
	labelAttempt      = "shoal.dev/attempt"
	labelInit         = "shoal.dev/init"
)

// containerID derives a runtime container ID from the pod UID (unique on
// the machine), the container name and the attempt: at most 36+1+12+1+10
// bytes, well inside container.MaxIDLength.
func containerID(uid types.UID, name string, attempt int) string {
	sum := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%s-%s-%d", uid, hex.EncodeToString(sum[:6]), attempt)
}

// configError is a problem with a pod's spec or what it refers to: the
// container waits with reason CreateContainerConfigError and the message.
type configError struct {
	msg       string
	pullNever bool // the image is absent and imagePullPolicy is Never
	badImage  bool // the image name does not parse
}

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// specContext is what translating one container needs besides the pod.
type specContext struct {
	store     *state.Store
	pod       *corev1.Pod
	podIP     string
	hostIP    string
	netnsPath string
	image     container.ImageConfig
	mounts    map[string]string // volume name → host path
	readOnly  map[string]bool   // volumes that are always mounted read-only
	podFiles  podFiles
	attempt   int
	logPath   string
	termPath  string // host file behind the container's terminationMessagePath
	isInit    bool
	// allocatable is the node's, for resourceFieldRefs to unset limits.
	allocatable corev1.ResourceList
}

// buildSpec turns container c of the pod into a runtime ContainerSpec.
func buildSpec(sc *specContext, c *corev1.Container) (container.ContainerSpec, error) {
	pod := sc.pod
	env, err := buildEnv(sc, c)
	if err != nil {
		return container.ContainerSpec{}, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	spec := container.ContainerSpec{
		ID:         containerID(pod.UID, c.Name, sc.attempt),
		Image:      c.Image,
		Command:    expandAll(c.Command, vars),
		Args:       expandAll(c.Args, vars),
		Env:        env,
		WorkingDir: c.WorkingDir,
		Hostname:   podHostname(pod),
		NetNSPath:  sc.netnsPath,
		LogPath:    sc.logPath,
		Labels: map[string]string{
			labelPodUID:       string(pod.UID),
			labelPodName:      pod.Name,
			labelPodNamespace: pod.Namespace,
			labelContainer:    c.Name,
			labelAttempt:      strconv.Itoa(sc.attempt),
		},
		CgroupParent: podCgroup(pod.UID),
		Stdin:        c.Stdin,
		StdinOnce:    c.StdinOnce,
		TTY:          c.TTY,
	}
	if sc.isInit {
		spec.Labels[labelInit] = "true"
	}
	if spec.Mounts, err = buildMounts(sc, c); err != nil {
		return container.ContainerSpec{}, err
	}
	spec.Resources = buildResources(c)
	if spec.Security, err = buildSecurity(sc, c); err != nil {
		return container.ContainerSpec{}, err
	}
	if err := spec.Validate(); err != nil {
		return container.ContainerSpec{}, configErrorf("%v", trimInvalid(err))
	}
	return spec, nil
}

func trimInvalid(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+container.ErrInvalid.Error())
}

// podHostname is the pod's hostname: spec.hostname or its name, cut to a
// DNS label.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// buildEnv resolves a container's environment in Kubernetes order: envFrom
// sources first, then env entries (which may refer to earlier variables with
// $(NAME)).
func buildEnv(sc *specContext, c *corev1.Container) ([]string, error) {
	pod := sc.pod
	// Service variables come first so $(VAR) may use them, and go last in
	// the environment, unless the container sets them itself.
	vals := serviceEnv(sc.store, pod)
	fromService := make(map[string]bool, len(vals))
	for k := range vals {
		fromService[k] = true
	}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok || fromService[k] {
			order = append(order, k)
			delete(fromService, k)
		}
		vals[k] = v
	}
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := getConfigMap(sc.store, pod.Namespace, ef.ConfigMapRef.Name)
			if !ok {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, configErrorf("configmap %q not found", ef.ConfigMapRef.Name)
			}
			data = cm.Data
		case ef.SecretRef != nil:
			s, ok := getSecret(sc.store, pod.Namespace, ef.SecretRef.Name)
			if !ok {
				if ef.SecretRef.Optional != nil && *ef.SecretRef.Optional {
					continue
				}
				return nil, configErrorf("secret %q not found", ef.SecretRef.Name)
			}
			data = secretStrings(s)
		default:
			continue
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(ef.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals))
			continue
		}
		v, skip, err := envValueFrom(sc, c, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	svcKeys := make([]string, 0, len(fromService))
	for k := range fromService {
		svcKeys = append(svcKeys, k)
	}
	sort.Strings(svcKeys)
	out := make([]string, 0, len(order)+len(svcKeys))
	for _, k := range append(order, svcKeys...) {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

// serviceEnv is what the kubelet tells a container about services: for
// every service with a cluster IP in the pod's namespace (unless
// enableServiceLinks is false) and always the default namespace's
// `kubernetes` service, {NAME}_SERVICE_HOST, {NAME}_SERVICE_PORT(_{PORT}) and
// the Docker-link style {NAME}_PORT… variables.
func serviceEnv(store *state.Store, pod *corev1.Pod) map[string]string {
	env := map[string]string{}
	var svcs []*corev1.Service
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	if links {
		objs, _ := store.List("services", pod.Namespace)
		for _, o := range objs {
			svcs = append(svcs, o.(*corev1.Service))
		}
	}
	if !links || pod.Namespace != metav1.NamespaceDefault { // the API's own service, always
		if o, ok := store.Get("services", metav1.NamespaceDefault, "kubernetes"); ok {
			svcs = append(svcs, o.(*corev1.Service))
		}
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	for _, svc := range svcs {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Ports) == 0 {
			continue
		}
		name := envName(svc.Name)
		first := svc.Spec.Ports[0]
		env[name+"_SERVICE_HOST"] = ip
		env[name+"_SERVICE_PORT"] = strconv.Itoa(int(first.Port))
		env[name+"_PORT"] = fmt.Sprintf("%s://%s", strings.ToLower(string(first.Protocol)), net.JoinHostPort(ip, strconv.Itoa(int(first.Port))))
		for _, p := range svc.Spec.Ports {
			port := strconv.Itoa(int(p.Port))
			proto := strings.ToLower(string(p.Protocol))
			if p.Name != "" {
				env[name+"_SERVICE_PORT_"+envName(p.Name)] = port
			}
			prefix := name + "_PORT_" + port + "_" + strings.ToUpper(proto)
			env[prefix] = fmt.Sprintf("%s://%s", proto, net.JoinHostPort(ip, port))
			env[prefix+"_PROTO"] = proto
			env[prefix+"_PORT"] = port
			env[prefix+"_ADDR"] = ip
		}
	}
	return env
}

// envName turns a service or port name into a variable name part.
func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// envValueFrom resolves one valueFrom; skip is set for an optional source
// that is absent.
func envValueFrom(sc *specContext, c *corev1.Container, vf *corev1.EnvVarSource) (v string, skip bool, err error) {
	pod := sc.pod
	switch {
	case vf.FieldRef != nil:
		v, err := fieldValue(pod, sc, vf.FieldRef.FieldPath)
		return v, false, err
	case vf.ResourceFieldRef != nil:
		v, err := resourceValue(c, vf.ResourceFieldRef, sc.allocatable)
		return v, false, err
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, ok := getConfigMap(sc.store, pod.Namespace, ref.Name)
		if !ok {
			if optional {
				return "", true, nil
			}
			return "", false, configErrorf("configmap %q not found", ref.Name)
		}
		val, ok := cm.Data[ref.Key]
		if !ok {
			if b, ok := cm.BinaryData[ref.Key]; ok {
				return string(b), false, nil
			}
			if optional {
				return "", true, nil
			}
			return "", false, configErrorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return val, false, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, ok := getSecret(sc.store, pod.Namespace, ref.Name)
		if !ok {
			if optional {
				return "", true, nil
			}
			return "", false, configErrorf("secret %q not found", ref.Name)
		}
		val, ok := secretStrings(s)[ref.Key]
		if !ok {
			if optional {
				return "", true, nil
			}
			return "", false, configErrorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return val, false, nil
	}
	return "", false, configErrorf("valueFrom has no source")
}

// podIdentity is the pod's name, namespace or uid for their field paths
// (the downward API's fields for environment variables and volumes alike).
func podIdentity(pod *corev1.Pod, path string) (string, bool) {
	switch path {
	case "metadata.name":
		return pod.Name, true
	case "metadata.namespace":
		return pod.Namespace, true
	case "metadata.uid":
		return string(pod.UID), true
	}
	return "", false
}

// fieldValue is the downward API for environment variables.
func fieldValue(pod *corev1.Pod, sc *specContext, path string) (string, error) {
	if v, ok := podIdentity(pod, path); ok {
		return v, nil
	}
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return sc.hostIP, nil
	case "status.podIP", "status.podIPs":
		return sc.podIP, nil
	}
	for _, p := range []struct {
		prefix string
		m      map[string]string
	}{{"metadata.labels", pod.Labels}, {"metadata.annotations", pod.Annotations}} {
		if rest, ok := strings.CutPrefix(path, p.prefix); ok {
			if rest == "" {
				return formatMap(p.m), nil
			}
			if k, ok := strings.CutPrefix(rest, "['"); ok && strings.HasSuffix(k, "']") {
				return p.m[strings.TrimSuffix(k, "']")], nil
			}
		}
	}
	return "", configErrorf("unsupported fieldRef %q", path)
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceValue is a resourceFieldRef: limits and requests of the
// container, in units of the divisor, rounded up as Kubernetes does.
func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector, allocatable corev1.ResourceList) (string, error) {
	var q resource.Quantity
	var ok bool
	var name corev1.ResourceName
	switch ref.Resource {
	case "limits.cpu", "requests.cpu":
		name = corev1.ResourceCPU
	case "limits.memory", "requests.memory":
		name = corev1.ResourceMemory
	case "limits.ephemeral-storage", "requests.ephemeral-storage":
		name = corev1.ResourceEphemeralStorage
	default:
		return "", configErrorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	limit := strings.HasPrefix(ref.Resource, "limits.")
	if limit {
		q, ok = c.Resources.Limits[name]
	} else {
		q, ok = c.Resources.Requests[name]
	}
	if !ok {
		if !limit {
			return "0", nil
		}
		// An unset limit is the node's allocatable, as on a kubelet.
		if q, ok = allocatable[name]; !ok {
			return strconv.FormatInt(math.MaxInt32, 10), nil // not known (yet): "unlimited"
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		v := (q.MilliValue() + div.MilliValue() - 1) / div.MilliValue()
		return strconv.FormatInt(v, 10), nil
	}
	v := (q.Value() + div.Value() - 1) / div.Value()
	return strconv.FormatInt(v, 10), nil
}

// expand replaces $(NAME) with the value of NAME when it is defined, keeps
// unknown references as they are and turns $$ into $, as Kubernetes does.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, vars map[string]string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}

// buildResources maps requests and limits onto cgroup settings: memory
// limit → memory.limit, cpu limit → CFS quota, cpu request (the limit when
// only that is set) → shares.
func buildResources(c *corev1.Container) container.Resources {
	var r container.Resources
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimitBytes = q.Value()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok && !q.IsZero() {
		r.CPUPeriod = 100000
		r.CPUQuota = max(q.MilliValue()*100, 1000)
	}
	req, ok := c.Resources.Requests[corev1.ResourceCPU]
	if !ok {
		req, ok = c.Resources.Limits[corev1.ResourceCPU]
	}
	if ok {
		r.CPUShares = min(max(req.MilliValue()*1024/1000, 2), 262144)
	}
	return r
}

// buildSecurity merges the pod's and the container's securityContext.
func buildSecurity(sc *specContext, c *corev1.Container) (container.Security, error) {
	var s container.Security
	psc := sc.pod.Spec.SecurityContext
	csc := c.SecurityContext
	var nonRoot *bool
	if psc != nil {
		s.RunAsUser, s.RunAsGroup, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	}
	if csc != nil {
		if csc.RunAsUser != nil {
			s.RunAsUser = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			s.RunAsGroup = csc.RunAsGroup
		}
		if csc.RunAsNonRoot != nil {
			nonRoot = csc.RunAsNonRoot
		}
		s.Privileged = csc.Privileged != nil && *csc.Privileged
		s.ReadOnlyRootFS = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
		s.AllowPrivilegeEscalation = csc.AllowPrivilegeEscalation != nil && *csc.AllowPrivilegeEscalation
		if s.Privileged && csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation {
			return s, configErrorf("cannot set allowPrivilegeEscalation to false and privileged to true")
		}
		if caps := csc.Capabilities; caps != nil {
			for _, c := range caps.Add {
				s.CapAdd = append(s.CapAdd, string(c))
			}
			for _, c := range caps.Drop {
				s.CapDrop = append(s.CapDrop, string(c))
			}
		}
	}
	if nonRoot != nil && *nonRoot {
		if err := checkNonRoot(s.RunAsUser, sc.image.User); err != nil {
			return s, err
		}
	}
	return s, nil
}

// checkNonRoot is runAsNonRoot with kubelet's messages.
func checkNonRoot(uid *int64, imageUser string) error {
	if uid != nil {
		if *uid == 0 {
			return configErrorf("container's runAsUser breaks non-root policy")
		}
		return nil
	}
	user, _, _ := strings.Cut(imageUser, ":")
	if user == "" || user == "root" {
		return configErrorf("container has runAsNonRoot and image will run as root")
	}
	n, err := strconv.ParseInt(user, 10, 64)
	if err != nil {
		return configErrorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", user)
	}
	if n == 0 {
		return configErrorf("container has runAsNonRoot and image will run as root")
	}
	return nil
}

// buildMounts mounts the pod's files and the container's volumeMounts.
func buildMounts(sc *specContext, c *corev1.Container) ([]container.Mount, error) {
	var ms []container.Mount
	have := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		src, ok := sc.mounts[vm.Name]
		if !ok {
			return nil, configErrorf("volumeMount %q: no volume of that name in the pod", vm.Name)
		}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			sub := vm.SubPath
			if vm.SubPathExpr != "" {
				vars := map[string]string{}
				env, _ := buildEnv(sc, c)
				for _, kv := range env {
					k, v, _ := strings.Cut(kv, "=")
					vars[k] = v
				}
				sub = expand(vm.SubPathExpr, vars)
			}
			p, err := subPath(src, sub)
			if err != nil {
				return nil, configErrorf("volumeMount %q: %v", vm.Name, err)
			}
			src = p
		}
		ms = append(ms, container.Mount{Source: src, Destination: vm.MountPath, ReadOnly: vm.ReadOnly || sc.readOnly[vm.Name]})
		have[vm.MountPath] = true
	}
	for dst, src := range map[string]string{
		"/etc/hosts":       sc.podFiles.hosts,
		"/etc/resolv.conf": sc.podFiles.resolv,
		"/etc/hostname":    sc.podFiles.hostname,
	} {
		if src != "" && !have[dst] {
			ms = append(ms, container.Mount{Source: src, Destination: dst})
		}
	}
	if sc.termPath != "" && c.TerminationMessagePath != "" && !have[c.TerminationMessagePath] {
		ms = append(ms, container.Mount{Source: sc.termPath, Destination: c.TerminationMessagePath})
	}
	sort.SliceStable(ms, func(i, j int) bool {
		return strings.Count(ms[i].Destination, "/") < strings.Count(ms[j].Destination, "/")
	})
	return ms, nil
}

var errSubPath = errors.New("subPath must be a relative path inside the volume")

// subPath resolves a volumeMount's subPath inside the volume directory:
// an existing file or directory (a configMap key mounted as one file, say)
// is used as it is, a missing one is created as a directory (Kubernetes
// does the same). Symbolic links are followed only while they stay inside
// the volume: a container must not be able to plant a link in an emptyDir
// that makes a later mount expose a host path (CVE-2017-1002101).
func subPath(volDir, sub string) (string, error) {
	if strings.HasPrefix(sub, "/") {
		return "", errSubPath
	}
	for _, part := range strings.Split(sub, "/") {
		if part == ".." {
			return "", errSubPath
		}
	}
	root, err := filepath.EvalSymlinks(volDir)
	if err != nil {
		return "", err
	}
	inside := func(p string) (string, error) {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", err
		}
		if real != root && !strings.HasPrefix(real, root+"/") {
			return "", fmt.Errorf("subPath %q resolves to %s, outside the volume", sub, real)
		}
		return real, nil
	}
	p := filepath.Join(root, sub)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		// Check the deepest part that exists before creating the rest:
		// a link there must not carry the new directories out.
		base := filepath.Dir(p)
		for _, err := os.Lstat(base); errors.Is(err, fs.ErrNotExist); _, err = os.Lstat(base) {
			base = filepath.Dir(base)
		}
		if _, err := inside(base); err != nil {
			return "", err
		}
		if err := mkdirIfMissing(p); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	return inside(p)
}

func getConfigMap(s *state.Store, ns, name string) (*corev1.ConfigMap, bool) {
	o, ok := s.Get("configmaps", ns, name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.ConfigMap), true
}

func getSecret(s *state.Store, ns, name string) (*corev1.Secret, bool) {
	o, ok := s.Get("secrets", ns, name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.Secret), true
}

func secretStrings(s *corev1.Secret) map[string]string {
	out := make(map[string]string, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}
