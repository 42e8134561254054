package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// podFiles are the host files a pod's containers see as /etc/hosts,
// /etc/resolv.conf and /etc/hostname.
type podFiles struct {
	hosts, resolv, hostname string
}

// writePodFiles writes the pod's /etc files into dir.
func (a *Agent) writePodFiles(dir string, pod *corev1.Pod, podIP string) (podFiles, error) {
	f := podFiles{
		hosts:    filepath.Join(dir, "etc-hosts"),
		resolv:   filepath.Join(dir, "resolv.conf"),
		hostname: filepath.Join(dir, "hostname"),
	}
	if pod.Spec.HostNetwork {
		f.hosts = "" // the node's own files, as in the image: nothing to add
	}
	host := podHostname(pod)
	if f.hosts != "" {
		var b strings.Builder
		b.WriteString("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		if podIP != "" {
			if sd := pod.Spec.Subdomain; sd != "" {
				fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, host, sd, pod.Namespace, a.cfg.ClusterDomain, host)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", podIP, host)
			}
		}
		if len(pod.Spec.HostAliases) > 0 {
			b.WriteString("\n# Entries added by HostAliases.\n")
			for _, ha := range pod.Spec.HostAliases {
				fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
			}
		}
		if err := writeFile(f.hosts, b.String()); err != nil {
			return f, err
		}
	}
	resolv, err := a.resolvConf(pod)
	if err != nil {
		return f, err
	}
	if err := writeFile(f.resolv, resolv); err != nil {
		return f, err
	}
	if err := writeFile(f.hostname, host+"\n"); err != nil {
		return f, err
	}
	return f, nil
}

// resolvConf is the pod's resolv.conf for its dnsPolicy and dnsConfig.
func (a *Agent) resolvConf(pod *corev1.Pod) (string, error) {
	var servers, search, options []string
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		d := a.cfg.ClusterDomain
		servers = []string{a.cfg.ClusterDNS}
		search = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
		options = []string{"ndots:5"}
	case corev1.DNSDefault:
		servers, search, options = hostResolvConf()
	case corev1.DNSNone:
	default:
		return "", configErrorf("unsupported dnsPolicy %q", policy)
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		search = append(search, dc.Searches...)
		for _, o := range dc.Options {
			name := o.Name
			if o.Value != nil {
				name += ":" + *o.Value
			}
			options = mergeOption(options, name)
		}
	}
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
	return b.String(), nil
}

func mergeOption(opts []string, o string) []string {
	key, _, _ := strings.Cut(o, ":")
	for i, have := range opts {
		if k, _, _ := strings.Cut(have, ":"); k == key {
			opts[i] = o
			return opts
		}
	}
	return append(opts, o)
}

// hostResolvConf reads the node's resolv.conf (dnsPolicy Default).
func hostResolvConf() (servers, search, options []string) {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil, nil, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			servers = append(servers, fields[1])
		case "search", "domain":
			search = fields[1:]
		case "options":
			options = append(options, fields[1:]...)
		}
	}
	return servers, search, options
}

// prepareVolumes makes every volume of the pod ready under dir/volumes and
// returns volume name → host path, and the volumes that mount read-only.
func (a *Agent) prepareVolumes(dir string, pod *corev1.Pod) (map[string]string, map[string]bool, error) {
	mounts := map[string]string{}
	ro := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		p := filepath.Join(dir, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := mkdirIfMissing(p); err != nil {
				return nil, nil, err
			}
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				if err := mountTmpfs(p, v.EmptyDir.SizeLimit); err != nil {
					return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			_ = os.Chmod(p, 0o777)
			mounts[v.Name] = p
		case v.HostPath != nil:
			if err := checkHostPath(v.HostPath); err != nil {
				return nil, nil, configErrorf("volume %q: %v", v.Name, err)
			}
			mounts[v.Name] = v.HostPath.Path
		case apiVolume(v):
			if holdsSecret(v) {
				// Secrets live in memory only, as on a kubelet.
				if err := mkdirIfMissing(p); err != nil {
					return nil, nil, err
				}
				if err := mountTmpfs(p, nil); err != nil {
					return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			if _, err := a.writeSourceVolume(p, pod, v); err != nil {
				return nil, nil, err
			}
			mounts[v.Name], ro[v.Name] = p, true
		case v.PersistentVolumeClaim != nil:
			p, err := a.claimPath(pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			mounts[v.Name] = p
			if v.PersistentVolumeClaim.ReadOnly {
				ro[v.Name] = true
			}
		default:
			return nil, nil, configErrorf("volume %q: %s volumes are not supported by Shoal (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim of local or hostPath volumes)", v.Name, volumeType(v))
		}
	}
	return mounts, ro, nil
}

// volumeType names the source of a volume, for messages.
func volumeType(v corev1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.NFS != nil:
		return "nfs"
	case v.CSI != nil:
		return "csi"
	case v.Ephemeral != nil:
		return "ephemeral"
	case v.ISCSI != nil:
		return "iscsi"
	case v.Image != nil:
		return "image"
	}
	return "these"
}

// apiVolume reports whether v is a configMap, secret, downwardAPI or
// projected volume: files the agent writes from API objects and from the
// pod itself, mounted read-only and kept up to date while the pod runs.
func apiVolume(v corev1.Volume) bool {
	return v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil
}

// holdsSecret reports whether an API volume has secret data, which must
// live in a tmpfs.
func holdsSecret(v corev1.Volume) bool {
	if v.Secret != nil {
		return true
	}
	if v.Projected != nil {
		for _, s := range v.Projected.Sources {
			if s.Secret != nil || s.ServiceAccountToken != nil {
				return true
			}
		}
	}
	return false
}

// volumeFile is one file of an API volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

// fileMode is a defaultMode or an item's mode; unset means the API's
// default, 0644.
func fileMode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m) & 0o777
}

// volumeSources reads what an API volume is made of and returns the
// version of those inputs: the resourceVersions of its configMaps and
// secrets ("" for an optional one that is absent) and a fingerprint of the
// pod fields it shows that can change (see downwardVersion). With files
// non-nil it also adds the volume's files to it, path → file, as the
// kubelet's configMap, secret, downwardAPI and projected plugins make
// them; with files nil it only reads versions, which is cheap enough for
// every sync.
func (a *Agent) volumeSources(pod *corev1.Pod, v corev1.Volume, files map[string]volumeFile) (string, error) {
	ns := pod.Namespace
	switch {
	case v.ConfigMap != nil:
		s := v.ConfigMap
		return a.configMapFiles(files, ns, s.Name, s.Items, s.Optional, fileMode(s.DefaultMode))
	case v.Secret != nil:
		s := v.Secret
		return a.secretFiles(files, ns, s.SecretName, s.Items, s.Optional, fileMode(s.DefaultMode))
	case v.DownwardAPI != nil:
		return downwardFiles(files, pod, v.DownwardAPI.Items, fileMode(v.DownwardAPI.DefaultMode), a.allocatable())
	case v.Projected == nil:
		return "", fmt.Errorf("volume %q has no configMap, secret, downwardAPI or projected source", v.Name)
	}
	// A source Shoal cannot serve fails the volume before anything is read:
	// that is the error that will not go away by itself.
	for i, s := range v.Projected.Sources {
		switch {
		case s.ServiceAccountToken != nil && a.cfg.ServiceAccountToken == nil:
			return "", configErrorf("projected serviceAccountToken sources are not supported: this node issues no service-account tokens")
		case s.ClusterTrustBundle != nil:
			return "", configErrorf("projected clusterTrustBundle sources are not supported by Shoal: it has no ClusterTrustBundle API")
		case s.ConfigMap == nil && s.Secret == nil && s.DownwardAPI == nil && s.ServiceAccountToken == nil:
			return "", configErrorf("projected source %d has no configMap, secret, downwardAPI or serviceAccountToken (the sources Shoal supports)", i)
		}
	}
	// Every source writes into the one directory with the volume's
	// defaultMode (the sources have none of their own); a later source's
	// file wins a path, as in the kubelet's payload.
	mode := fileMode(v.Projected.DefaultMode)
	versions := make([]string, len(v.Projected.Sources))
	for i, s := range v.Projected.Sources {
		var err error
		switch {
		case s.ConfigMap != nil:
			versions[i], err = a.configMapFiles(files, ns, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, mode)
		case s.Secret != nil:
			versions[i], err = a.secretFiles(files, ns, s.Secret.Name, s.Secret.Items, s.Secret.Optional, mode)
		case s.DownwardAPI != nil:
			versions[i], err = downwardFiles(files, pod, s.DownwardAPI.Items, mode, a.allocatable())
		case s.ServiceAccountToken != nil:
			versions[i], err = a.tokenFile(files, pod, s.ServiceAccountToken, mode)
		}
		if err != nil {
			return "", err
		}
	}
	return strings.Join(versions, ","), nil
}

// tokenFile adds a service-account token file to files (when not nil) and
// returns its version: the refresh period the clock is in, so that a sync
// writes a fresh token once 80% of the lifetime has passed (as the kubelet
// refreshes them). A token minted anywhere in a period outlives the next
// period's start by a quarter of a period.
func (a *Agent) tokenFile(files map[string]volumeFile, pod *corev1.Pod, s *corev1.ServiceAccountTokenProjection, mode os.FileMode) (string, error) {
	secs := int64(3600)
	if s.ExpirationSeconds != nil {
		secs = *s.ExpirationSeconds
	}
	period := max(secs*8/10, 1)
	version := "t" + strconv.FormatInt(a.cfg.Now().Unix()/period, 36)
	if files == nil {
		return version, nil
	}
	tok, err := a.cfg.ServiceAccountToken(pod, s.Audience, secs)
	if err != nil {
		return "", fmt.Errorf("service-account token: %w", err)
	}
	files[s.Path] = volumeFile{data: []byte(tok), mode: mode}
	return version, nil
}

// configMapFiles adds the files of a configMap source to files (when not
// nil) and returns the ConfigMap's resourceVersion.
func (a *Agent) configMapFiles(files map[string]volumeFile, ns, name string, items []corev1.KeyToPath, optional *bool, mode os.FileMode) (string, error) {
	opt := optional != nil && *optional
	cm, ok := getConfigMap(a.cfg.Store, ns, name)
	if !ok {
		if !opt {
			return "", configErrorf("configmap %q not found", name)
		}
		return "", nil // absent and optional: no files
	}
	if files != nil {
		data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		if err := keyFiles(files, data, items, mode, opt, "ConfigMap "+ns+"/"+name); err != nil {
			return "", err
		}
	}
	return cm.ResourceVersion, nil
}

// secretFiles adds the files of a secret source to files (when not nil)
// and returns the Secret's resourceVersion.
func (a *Agent) secretFiles(files map[string]volumeFile, ns, name string, items []corev1.KeyToPath, optional *bool, mode os.FileMode) (string, error) {
	opt := optional != nil && *optional
	s, ok := getSecret(a.cfg.Store, ns, name)
	if !ok {
		if !opt {
			return "", configErrorf("secret %q not found", name)
		}
		return "", nil
	}
	if files != nil {
		strs := secretStrings(s)
		data := make(map[string][]byte, len(strs))
		for k, v := range strs {
			data[k] = []byte(v)
		}
		if err := keyFiles(files, data, items, mode, opt, "Secret "+ns+"/"+name); err != nil {
			return "", err
		}
	}
	return s.ResourceVersion, nil
}

// keyFiles adds the files of configMap or secret data: one per key, or the
// items' keys at their paths with their modes. A key the data lacks is an
// error unless the source is optional, as on a kubelet.
func keyFiles(files map[string]volumeFile, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, optional bool, source string) error {
	if len(items) == 0 {
		for k, d := range data {
			files[k] = volumeFile{d, mode}
		}
		return nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return configErrorf("couldn't find key %s in %s", it.Key, source)
		}
		m := mode
		if it.Mode != nil {
			m = fileMode(it.Mode)
		}
		files[it.Path] = volumeFile{d, m}
	}
	return nil
}

// downwardFiles adds the files of a downwardAPI source to files (when not
// nil) and returns its version (downwardVersion).
func downwardFiles(files map[string]volumeFile, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode os.FileMode, allocatable corev1.ResourceList) (string, error) {
	if files != nil {
		for _, it := range items {
			var val string
			var err error
			switch {
			case it.FieldRef != nil:
				val, err = downwardField(pod, it.FieldRef.FieldPath)
			case it.ResourceFieldRef != nil:
				val, err = downwardResource(pod, it.ResourceFieldRef, allocatable)
			default:
				err = errors.New("needs a fieldRef or a resourceFieldRef")
			}
			if err != nil {
				return "", configErrorf("downwardAPI item %q: %v", it.Path, err)
			}
			m := mode
			if it.Mode != nil {
				m = fileMode(it.Mode)
			}
			files[it.Path] = volumeFile{[]byte(val), m}
		}
	}
	return downwardVersion(pod, items), nil
}

// downwardField is a downwardAPI volume item's fieldRef, as the kubelet's
// fieldpath.ExtractFieldPathAsString has it: the pod's metadata only (the
// spec and status fields are for environment variables). Labels and
// annotations are sorted key="value" lines with Go-quoted values, without
// a final newline.
func downwardField(pod *corev1.Pod, fieldPath string) (string, error) {
	if field, key, ok := splitSubscript(fieldPath); ok {
		switch field {
		case "metadata.labels":
			if errs := validation.IsQualifiedName(key); len(errs) > 0 {
				return "", fmt.Errorf("invalid key subscript in %s: %s", fieldPath, strings.Join(errs, "; "))
			}
			return pod.Labels[key], nil
		case "metadata.annotations":
			if errs := validation.IsQualifiedName(strings.ToLower(key)); len(errs) > 0 {
				return "", fmt.Errorf("invalid key subscript in %s: %s", fieldPath, strings.Join(errs, "; "))
			}
			return pod.Annotations[key], nil
		}
		return "", fmt.Errorf("fieldPath %q does not support a subscript", fieldPath)
	}
	if v, ok := podIdentity(pod, fieldPath); ok {
		return v, nil
	}
	switch fieldPath {
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	return "", fmt.Errorf("fieldPath %q is not supported in a volume (supported: metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['KEY'], metadata.annotations['KEY'])", fieldPath)
}

// splitSubscript splits "metadata.labels['key']" into the field and the
// key, as the kubelet's fieldpath.SplitMaybeSubscriptedPath does.
func splitSubscript(fieldPath string) (field, key string, ok bool) {
	s, ok := strings.CutSuffix(fieldPath, "']")
	if !ok {
		return fieldPath, "", false
	}
	field, key, ok = strings.Cut(s, "['")
	if !ok || field == "" {
		return fieldPath, "", false
	}
	return field, key, true
}

// downwardResource is a downwardAPI volume item's resourceFieldRef: the
// container is named (there is no "this container" for a volume), and the
// value is computed as for environment variables.
func downwardResource(pod *corev1.Pod, ref *corev1.ResourceFieldSelector, allocatable corev1.ResourceList) (string, error) {
	if ref.ContainerName == "" {
		return "", errors.New("a resourceFieldRef in a volume needs a containerName")
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == ref.ContainerName {
				return resourceValue(&cs[i], ref, allocatable)
			}
		}
	}
	return "", fmt.Errorf("resourceFieldRef: container %q not found in the pod", ref.ContainerName)
}

// downwardVersion fingerprints what a downwardAPI source shows of the pod
// that can change while it runs: its labels and annotations. Name,
// namespace and UID are fixed, and so are resources (pod updates may not
// change them).
func downwardVersion(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) string {
	var labels, annotations bool
	for _, it := range items {
		if it.FieldRef != nil {
			labels = labels || strings.HasPrefix(it.FieldRef.FieldPath, "metadata.labels")
			annotations = annotations || strings.HasPrefix(it.FieldRef.FieldPath, "metadata.annotations")
		}
	}
	var v string
	if labels {
		v = "l" + strconv.FormatUint(mapFingerprint(pod.Labels), 36)
	}
	if annotations {
		v += "a" + strconv.FormatUint(mapFingerprint(pod.Annotations), 36)
	}
	return v
}

// fingerprintSeed seeds mapFingerprint; fingerprints are only compared
// within one process.
var fingerprintSeed = maphash.MakeSeed()

// mapFingerprint hashes a map whatever its iteration order, so that a sync
// notices a change without sorting or formatting the map.
func mapFingerprint(m map[string]string) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	sum := uint64(len(m))
	for k, v := range m {
		h.Reset()
		h.WriteString(k)
		h.WriteByte(0) // keys hold no NUL: "a"+"bc" and "ab"+"c" differ
		h.WriteString(v)
		sum += h.Sum64()
	}
	return sum
}

// writeSourceVolume writes an API volume into dir and returns the version
// of what it wrote (see volumeSources).
func (a *Agent) writeSourceVolume(dir string, pod *corev1.Pod, v corev1.Volume) (string, error) {
	files := map[string]volumeFile{}
	version, err := a.volumeSources(pod, v, files)
	if err == nil {
		err = writeProjected(dir, files)
	}
	if err != nil {
		return "", fmt.Errorf("volume %q: %w", v.Name, err)
	}
	return version, nil
}

// refreshSourceVolumes rewrites the API volumes (configMap, secret,
// downwardAPI, projected) whose inputs changed since they were last written
// (seen: volume → version written): a source's resourceVersion, or the
// pod's labels or annotations that a downwardAPI source shows. So running
// containers see new data (except through subPath mounts), as on a kubelet.
// An unchanged volume costs a look-up per source and no I/O. Errors are
// left for the next sync.
func (a *Agent) refreshSourceVolumes(dir string, pod *corev1.Pod, seen map[string]string) {
	for _, v := range pod.Spec.Volumes {
		if !apiVolume(v) {
			continue
		}
		version, err := a.volumeSources(pod, v, nil)
		if err != nil || version == seen[v.Name] {
			continue
		}
		if version, err := a.writeSourceVolume(filepath.Join(dir, "volumes", v.Name), pod, v); err == nil {
			seen[v.Name] = version
		}
	}
}

// provisionedByShoal marks the volumes of Shoal's local provisioner.
const provisionedByShoal = "shoal.dev/local"

// claimPath is the host directory behind a PersistentVolumeClaim: a
// volume of Shoal's local provisioner lives in this agent's data dir
// (volumes/<name>, created on first use); another local or hostPath volume
// at its path. An unbound claim is an error the pod waits on.
func (a *Agent) claimPath(ns, claim string) (string, error) {
	o, ok := a.cfg.Store.Get("persistentvolumeclaims", ns, claim)
	if !ok {
		return "", configErrorf("persistentvolumeclaim %q not found", claim)
	}
	pvc := o.(*corev1.PersistentVolumeClaim)
	if pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("persistentvolumeclaim %q is not bound yet", claim)
	}
	po, ok := a.cfg.Store.Get("persistentvolumes", "", pvc.Spec.VolumeName)
	if !ok {
		return "", fmt.Errorf("persistentvolume %q of claim %q not found", pvc.Spec.VolumeName, claim)
	}
	pv := po.(*corev1.PersistentVolume)
	switch {
	case pv.Annotations["pv.kubernetes.io/provisioned-by"] == provisionedByShoal:
		p := filepath.Join(a.volumesDir(), pv.Name)
		if err := os.MkdirAll(p, 0o777); err != nil {
			return "", err
		}
		return p, nil
	case pv.Spec.Local != nil:
		if _, err := os.Stat(pv.Spec.Local.Path); err != nil {
			return "", configErrorf("local volume %q: %v", pv.Name, err)
		}
		return pv.Spec.Local.Path, nil
	case pv.Spec.HostPath != nil:
		if err := checkHostPath(pv.Spec.HostPath); err != nil {
			return "", configErrorf("volume %q: %v", pv.Name, err)
		}
		return pv.Spec.HostPath.Path, nil
	}
	return "", configErrorf("persistentvolume %q: only local and hostPath volumes can be mounted by Shoal", pv.Name)
}

// checkHostPath applies a hostPath volume's type, creating what *OrCreate asks for.
func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	if !filepath.IsAbs(hp.Path) {
		return fmt.Errorf("hostPath %q is not absolute", hp.Path)
	}
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if err != nil {
			return os.MkdirAll(hp.Path, 0o755)
		}
		if !fi.IsDir() {
			return fmt.Errorf("hostPath %q is not a directory", hp.Path)
		}
		return nil
	case corev1.HostPathFileOrCreate:
		if err != nil {
			if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		if fi.IsDir() {
			return fmt.Errorf("hostPath %q is a directory, not a file", hp.Path)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, t)
	}
	ok := false
	switch t {
	case corev1.HostPathDirectory:
		ok = fi.IsDir()
	case corev1.HostPathFile:
		ok = fi.Mode().IsRegular()
	case corev1.HostPathSocket:
		ok = fi.Mode()&os.ModeSocket != 0
	case corev1.HostPathCharDev:
		ok = fi.Mode()&os.ModeCharDevice != 0
	case corev1.HostPathBlockDev:
		ok = fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	default:
		return fmt.Errorf("unknown hostPath type %q", t)
	}
	if !ok {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, t)
	}
	return nil
}

// writeProjected writes an API volume's files (path in the volume → file)
// into dir: the one writer of configMap, secret, downwardAPI and projected
// volumes. Files of an earlier write that are not in files go first (and
// the directories that leaves empty); then each file whose content or mode
// differs is replaced through a rename, so that a reader sees its old or
// its new content, never a part. Unchanged files are left alone, which
// spares readers that watch them.
func writeProjected(dir string, files map[string]volumeFile) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		if err := checkItemPath(p); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	if err := mkdirIfMissing(dir); err != nil {
		return err
	}
	if err := removeStale(dir, files); err != nil {
		return err
	}
	for _, p := range paths {
		if err := replaceFile(filepath.Join(dir, p), files[p]); err != nil {
			return err
		}
	}
	return nil
}

// checkItemPath refuses a file path that is empty, absolute, leaves the
// volume or starts with "..", as the kubelet's atomic writer does (names
// starting with ".." are the writer's own: its temporary files).
func checkItemPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "..") ||
		strings.Contains("/"+p+"/", "/../") || filepath.Clean(p) == "." {
		return configErrorf("bad item path %q", p)
	}
	return nil
}

// removeStale removes what dir holds besides files (a key gone from a
// ConfigMap, a temporary file of an interrupted write) and then the
// directories that leaves empty, unless a file goes there. Other empty
// directories stay: a subPath mount may have made them.
func removeStale(dir string, files map[string]volumeFile) error {
	keep := make(map[string]bool, len(files))    // the files, by clean path
	keepDir := make(map[string]bool, len(files)) // the directories they are in
	for p := range files {
		p = filepath.Clean(p)
		keep[p] = true
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			keepDir[d] = true
		}
	}
	emptied := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || keep[rel] {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		for d := filepath.Dir(rel); d != "." && !keepDir[d]; d = filepath.Dir(d) {
			emptied[d] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	dirs := make([]string, 0, len(emptied))
	for d := range emptied {
		dirs = append(dirs, d)
	}
	// Deepest first, so that a parent is empty when its turn comes. One
	// that still holds something stays: os.Remove fails on it.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = os.Remove(filepath.Join(dir, d))
	}
	return nil
}

// replaceFile gives the file at p f's content and mode, unless it has them
// already, by renaming a new file over it.
func replaceFile(p string, f volumeFile) error {
	if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == f.mode && fi.Size() == int64(len(f.data)) {
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.data) {
			return nil
		}
	}
	d := filepath.Dir(p)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d, "..tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(f.data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), f.mode) // exactly the mode, whatever the umask
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}

func writeFile(p, content string) error {
	if err := os.WriteFile(p+".tmp", []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

func mkdirIfMissing(p string) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", p, err)
	}
	return nil
}

// mountTmpfs mounts a tmpfs on dir unless one is there already.
func mountTmpfs(dir string, sizeLimit interface{ Value() int64 }) error {
	if mounted, err := isMountPoint(dir); err != nil {
		return err
	} else if mounted {
		return nil
	}
	opts := "mode=0777"
	if sizeLimit != nil {
		if v := sizeLimit.Value(); v > 0 {
			opts += ",size=" + strconv.FormatInt(v, 10)
		}
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mounting tmpfs on %s: %w", dir, err)
	}
	return nil
}

// isMountPoint reports whether something is mounted exactly at dir.
func isMountPoint(dir string) (bool, error) {
	ms, err := mountsUnder(dir)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m == dir {
			return true, nil
		}
	}
	return false, nil
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removePodDir unmounts whatever is mounted under a pod's directory and
// removes it.
func removePodDir(dir string) error {
	ms, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return nil
}
