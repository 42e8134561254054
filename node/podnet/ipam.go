package podnet

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
)

// ErrNoFreeIP is returned (wrapped) by Setup when every address of the pod
// CIDR is allocated.
var ErrNoFreeIP = errors.New("podnet: no free pod IP")

// ErrStateDirInUse is returned by New when another Network holds the StateDir.
var ErrStateDirInUse = errors.New("podnet: state dir in use by another Network")

const (
	stateFileName = "podnet.json"
	stateVersion  = 1
)

// podRecord is what podnet remembers about one pod: enough to tear it down
// after a restart.
type podRecord struct {
	IP    string `json:"ip"`
	NetNS string `json:"netns"`
	Veth  string `json:"veth"`

	seq uint64 // in memory only: when the record was made (0 = loaded)
}

type stateFile struct {
	Version int                  `json:"version"`
	PodCIDR string               `json:"podCIDR"`
	Last    string               `json:"last,omitempty"` // last address handed out (next-fit cursor)
	Pods    map[string]podRecord `json:"pods"`
}

// ipam is the persisted allocation table of one node. It is not safe for
// concurrent use; Network.mu guards it. Changes are made in memory and
// numbered (gen); Network.commit makes them durable, for many callers at
// once. Nothing may use a record before a commit covers it.
type ipam struct {
	path   string
	cidr   *net.IPNet
	lo, hi uint32 // usable range, inclusive: network+2 .. broadcast-1
	last   uint32 // cursor: allocation resumes after it
	pods   map[string]podRecord
	byIP   map[uint32]string // address → pod ID, for addresses inside cidr
	byVeth map[string]string // host veth name → pod ID
	gen    uint64            // bumped by every change
	saved  uint64            // the gen the file on disk holds
}

func ip4ToU32(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func u32ToIP4(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// cidrRange returns the first and last address of n.
func cidrRange(n *net.IPNet) (first, last uint32) {
	first = ip4ToU32(n.IP)
	ones, _ := n.Mask.Size()
	return first, first | (1<<(32-ones) - 1)
}

// gatewayOf returns the bridge address of a pod CIDR: the first host address.
func gatewayOf(n *net.IPNet) net.IP {
	first, _ := cidrRange(n)
	return u32ToIP4(first + 1)
}

// openIPAM loads the allocation table at dir/podnet.json (empty if absent).
// A file that cannot be read or parsed is an error, never a reset: resetting
// would hand out addresses that live pods still use.
func openIPAM(dir string, cidr *net.IPNet) (*ipam, error) {
	first, last := cidrRange(cidr)
	a := &ipam{
		path:   filepath.Join(dir, stateFileName),
		cidr:   cidr,
		lo:     first + 2,
		hi:     last - 1,
		pods:   map[string]podRecord{},
		byIP:   map[uint32]string{},
		byVeth: map[string]string{},
	}
	a.last = a.hi
	b, err := os.ReadFile(a.path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading pod IP allocations: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parsing pod IP allocations %s: %w", a.path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("pod IP allocations %s: unknown version %d", a.path, st.Version)
	}
	if ip := net.ParseIP(st.Last).To4(); ip != nil && cidr.Contains(ip) {
		a.last = ip4ToU32(ip)
	}
	for id, r := range st.Pods {
		ip := net.ParseIP(r.IP).To4()
		if ip == nil {
			return nil, fmt.Errorf("pod IP allocations %s: pod %s has bad IP %q", a.path, id, r.IP)
		}
		if cidr.Contains(ip) {
			// A record outside the CIDR (the node's PodCIDR changed) is
			// kept so Teardown can still clean up, but reserves nothing.
			if other, dup := a.byIP[ip4ToU32(ip)]; dup {
				return nil, fmt.Errorf("pod IP allocations %s: %s given to both %s and %s", a.path, ip, other, id)
			}
			a.byIP[ip4ToU32(ip)] = id
		}
		if r.Veth != "" {
			a.byVeth[r.Veth] = id
		}
		a.pods[id] = podRecord{IP: r.IP, NetNS: r.NetNS, Veth: r.Veth}
	}
	return a, nil
}

// get returns the record of a pod.
func (a *ipam) get(podID string) (podRecord, bool) {
	r, ok := a.pods[podID]
	return r, ok
}

// inRange reports whether a pod's recorded address is reserved for it in the
// current CIDR.
func (a *ipam) inRange(podID string, r podRecord) bool {
	ip := net.ParseIP(r.IP).To4()
	return ip != nil && a.cidr.Contains(ip) && a.byIP[ip4ToU32(ip)] == podID
}

// nextFree returns the next free address after the cursor (next-fit, so a
// just-released address is the last to be reused).
func (a *ipam) nextFree() (uint32, error) {
	size := a.hi - a.lo + 1
	cur := a.last
	for range size {
		if cur >= a.hi || cur < a.lo {
			cur = a.lo
		} else {
			cur++
		}
		if _, used := a.byIP[cur]; !used {
			return cur, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d addresses of %s are allocated", ErrNoFreeIP, size, a.cidr)
}

// vethNameFor derives the host-side veth name of a pod, unique among the
// records. Deterministic for salt 0, so a pod without a record can still be
// found.
func vethNameFor(podID string, salt int) string {
	s := podID
	if salt > 0 {
		s = fmt.Sprintf("%s#%d", podID, salt)
	}
	sum := sha256.Sum256([]byte(s))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:12]
}

// put reserves (or rewrites) a pod's record in memory and returns it with
// the generation that holds it. If allocate is set, a new address is taken;
// otherwise r.IP is kept. On error nothing changes.
func (a *ipam) put(podID string, r podRecord, allocate bool) (podRecord, uint64, error) {
	old, hadOld := a.pods[podID]
	if allocate {
		v, err := a.nextFree()
		if err != nil {
			return podRecord{}, 0, err
		}
		r.IP = u32ToIP4(v).String()
		a.last = v
	}
	if r.Veth == "" {
		for salt := 0; ; salt++ {
			name := vethNameFor(podID, salt)
			if owner, taken := a.byVeth[name]; !taken || owner == podID {
				r.Veth = name
				break
			}
		}
	}
	a.apply(podID, old, hadOld, r, true)
	a.gen++
	return r, a.gen, nil
}

// remove forgets a pod in memory and returns the generation without it.
// Unknown pods change nothing.
func (a *ipam) remove(podID string) uint64 {
	if old, ok := a.pods[podID]; ok {
		a.apply(podID, old, true, podRecord{}, false)
		a.gen++
	}
	return a.gen
}

// apply swaps a pod's record in the in-memory indexes.
func (a *ipam) apply(podID string, from podRecord, hadFrom bool, to podRecord, hasTo bool) {
	if hadFrom {
		if ip := net.ParseIP(from.IP).To4(); ip != nil && a.byIP[ip4ToU32(ip)] == podID {
			delete(a.byIP, ip4ToU32(ip))
		}
		if a.byVeth[from.Veth] == podID {
			delete(a.byVeth, from.Veth)
		}
		delete(a.pods, podID)
	}
	if hasTo {
		if ip := net.ParseIP(to.IP).To4(); ip != nil && a.cidr.Contains(ip) {
			a.byIP[ip4ToU32(ip)] = podID
		}
		if to.Veth != "" {
			a.byVeth[to.Veth] = podID
		}
		a.pods[podID] = to
	}
}

// encode returns the table as the file holds it, and its generation.
func (a *ipam) encode() ([]byte, uint64, error) {
	st := stateFile{Version: stateVersion, PodCIDR: a.cidr.String(), Pods: a.pods}
	if a.last >= a.lo && a.last <= a.hi {
		st.Last = u32ToIP4(a.last).String()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, 0, err
	}
	return append(b, '\n'), a.gen, nil
}

// snapshot returns pod ID → address for every record.
func (a *ipam) snapshot() map[string]net.IP {
	out := make(map[string]net.IP, len(a.pods))
	for id, r := range a.pods {
		out[id] = net.ParseIP(r.IP).To4()
	}
	return out
}

// ids returns the pod IDs in order.
func (a *ipam) ids() []string {
	out := make([]string, 0, len(a.pods))
	for id := range a.pods {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
