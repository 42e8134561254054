package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
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
		case v.ConfigMap != nil || v.Secret != nil:
			if v.Secret != nil {
				// Secrets live in memory only, as on a kubelet.
				if err := mkdirIfMissing(p); err != nil {
					return nil, nil, err
				}
				if err := mountTmpfs(p, nil); err != nil {
					return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			if _, err := a.writeSourceVolume(p, pod.Namespace, v); err != nil {
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
			return nil, nil, configErrorf("volume %q: %s volumes are not supported by Shoal (supported: emptyDir, hostPath, configMap, secret, persistentVolumeClaim of local or hostPath volumes)", v.Name, volumeType(v))
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
	case v.Projected != nil:
		return "projected"
	case v.DownwardAPI != nil:
		return "downwardAPI"
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

// sourceVolume reads the data of a configMap or secret volume and its
// source's resourceVersion ("" when an optional source is absent).
func (a *Agent) sourceVolume(ns string, v corev1.Volume) (data map[string][]byte, rv string, items []corev1.KeyToPath, mode *int32, err error) {
	switch {
	case v.ConfigMap != nil:
		items, mode = v.ConfigMap.Items, v.ConfigMap.DefaultMode
		cm, ok := getConfigMap(a.cfg.Store, ns, v.ConfigMap.Name)
		if !ok {
			if v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional {
				return nil, "", nil, nil, configErrorf("configmap %q not found", v.ConfigMap.Name)
			}
			return nil, "", items, mode, nil
		}
		data = map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		for k, b := range cm.BinaryData {
			data[k] = b
		}
		return data, cm.ResourceVersion, items, mode, nil
	case v.Secret != nil:
		items, mode = v.Secret.Items, v.Secret.DefaultMode
		s, ok := getSecret(a.cfg.Store, ns, v.Secret.SecretName)
		if !ok {
			if v.Secret.Optional == nil || !*v.Secret.Optional {
				return nil, "", nil, nil, configErrorf("secret %q not found", v.Secret.SecretName)
			}
			return nil, "", items, mode, nil
		}
		data = map[string][]byte{}
		for k, val := range secretStrings(s) {
			data[k] = []byte(val)
		}
		return data, s.ResourceVersion, items, mode, nil
	}
	return nil, "", nil, nil, fmt.Errorf("volume %q has no configMap or secret", v.Name)
}

// writeSourceVolume writes a configMap or secret volume into dir, removing
// files of keys that are gone, and returns the source's resourceVersion.
func (a *Agent) writeSourceVolume(dir, ns string, v corev1.Volume) (string, error) {
	data, rv, items, mode, err := a.sourceVolume(ns, v)
	if err != nil {
		return "", err
	}
	if err := writeProjected(dir, data, items, mode); err != nil {
		return "", fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if len(items) == 0 {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if _, ok := data[e.Name()]; !ok && !e.IsDir() {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return rv, nil
}

// refreshSourceVolumes rewrites the configMap and secret volumes whose
// source changed since they were last written (seen: volume →
// resourceVersion), as the kubelet does, so running containers see new
// data (except through subPath mounts). Errors are left for the next sync.
func (a *Agent) refreshSourceVolumes(dir string, pod *corev1.Pod, seen map[string]string) {
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap == nil && v.Secret == nil {
			continue
		}
		_, rv, _, _, err := a.sourceVolume(pod.Namespace, v)
		if err != nil || rv == seen[v.Name] {
			continue
		}
		if rv, err := a.writeSourceVolume(filepath.Join(dir, "volumes", v.Name), pod.Namespace, v); err == nil {
			seen[v.Name] = rv
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

// writeProjected writes configMap or secret data as files into dir.
func writeProjected(dir string, data map[string][]byte, items []corev1.KeyToPath, defMode *int32) error {
	if err := mkdirIfMissing(dir); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if defMode != nil {
		mode = os.FileMode(*defMode) & 0o777
	}
	type file struct {
		path string
		data []byte
		mode os.FileMode
	}
	var files []file
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			files = append(files, file{k, data[k], mode})
		}
	} else {
		for _, it := range items {
			d, ok := data[it.Key]
			if !ok {
				if data == nil {
					continue // optional source that is absent
				}
				return configErrorf("couldn't find key %s", it.Key)
			}
			m := mode
			if it.Mode != nil {
				m = os.FileMode(*it.Mode) & 0o777
			}
			files = append(files, file{it.Path, d, m})
		}
	}
	for _, f := range files {
		if strings.HasPrefix(f.path, "/") || strings.Contains("/"+f.path+"/", "/../") {
			return configErrorf("bad item path %q", f.path)
		}
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p+".tmp", f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p+".tmp", f.mode); err != nil {
			return err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
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
