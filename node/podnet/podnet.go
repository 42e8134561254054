package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by calls on a closed Network.
var ErrClosed = errors.New("podnet: network closed")

// PodNet is the network of one pod as Setup left it.
type PodNet struct {
	IP        net.IP // the pod's address (prefix length is the PodCIDR's)
	Gateway   net.IP // the bridge address, the pod's default route
	NetNSPath string // the pod's network namespace
	HostVeth  string // host-side veth name
}

// Network is one node's pod network. Create it with New; see the package
// doc for its concurrency rules.
type Network struct {
	cfg        Config // defaults applied; never mutated after New
	podNet     *net.IPNet
	clusterNet *net.IPNet // nil: no masquerade
	gateway    net.IP
	nodeIP     net.IP // nil if not configured

	hostFd   int             // the host namespace, open for the Network's life
	host     *netlink.Handle // rtnetlink socket inside the host namespace; safe for concurrent use
	lockFile *os.File        // holds the flock on StateDir

	pods keyedMutex // per pod ID: serializes Setup, Teardown and GC of one pod

	bridgeMu sync.Mutex // serializes convergence of the bridge and other node-level objects
	peersMu  sync.Mutex // serializes SetPeers

	saveMu sync.Mutex // held while the allocation table is written (see commit)
	writes uint64     // table writes by commit; saveMu guards it
	mu     sync.Mutex // guards ipam, seq and closed
	ipam   *ipam
	seq    uint64 // bumped for every new pod record
	closed bool
}

// New validates cfg, takes ownership of cfg.StateDir (loading earlier
// allocations) and converges the node-level objects inside cfg.HostNS:
// ip_forward=1, the bridge with the gateway address, and the masquerade
// table. It does not touch pods or peers.
func New(cfg Config) (_ *Network, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg, hostFd: -1}
	n.podNet, _ = parseCIDR4(cfg.PodCIDR)
	n.gateway = gatewayOf(n.podNet)
	if cfg.ClusterCIDR != "" {
		n.clusterNet, _ = parseCIDR4(cfg.ClusterCIDR)
	}
	if cfg.NodeIP != "" {
		n.nodeIP = net.ParseIP(cfg.NodeIP).To4()
	}
	defer func() {
		if err != nil {
			n.release()
		}
	}()

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("podnet: state dir: %w", err)
	}
	n.lockFile, err = os.OpenFile(filepath.Join(cfg.StateDir, "podnet.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("podnet: state dir lock: %w", err)
	}
	if err := unix.Flock(int(n.lockFile.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrStateDirInUse, cfg.StateDir)
		}
		return nil, fmt.Errorf("podnet: locking state dir: %w", err)
	}
	if n.ipam, err = openIPAM(cfg.StateDir, n.podNet); err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	if n.hostFd, err = openNetNS(cfg.HostNS); err != nil {
		return nil, fmt.Errorf("podnet: host namespace: %w", err)
	}
	if n.host, err = netlinkIn(n.hostFd); err != nil {
		return nil, fmt.Errorf("podnet: host namespace: %w", err)
	}
	if err := n.ensureNode(); err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	return n, nil
}

// Close releases the Network's sockets, namespace handle and StateDir lock.
// It leaves every host object in place (a restarted agent re-adopts them).
// Call it after all other calls have returned.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.release()
	return nil
}

func (n *Network) release() {
	if n.host != nil {
		n.host.Close()
		n.host = nil
	}
	if n.hostFd >= 0 {
		unix.Close(n.hostFd)
		n.hostFd = -1
	}
	if n.lockFile != nil {
		n.lockFile.Close() // drops the flock
		n.lockFile = nil
	}
}

func (n *Network) checkOpen() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	return nil
}

// DefaultNetNSPath is where Setup puts a pod's namespace when given no path:
// Config.NetNSDir/<podID> (podIDs that are not plain file names are hashed).
func (n *Network) DefaultNetNSPath(podID string) string {
	name := podID
	if !plainName(podID) {
		sum := sha256.Sum256([]byte(podID))
		name = "pod-" + hex.EncodeToString(sum[:16])
	}
	return filepath.Join(n.cfg.NetNSDir, name)
}

func plainName(s string) bool {
	if s == "" || len(s) > 200 || s == "." || s == ".." || strings.HasPrefix(s, ".") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Allocated returns pod ID → address for every pod holding an address.
func (n *Network) Allocated() map[string]net.IP {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ipam.snapshot()
}

// Setup gives a pod its network and returns it. It is idempotent for the
// same podID and repairs whatever is missing or wrong: it creates the
// namespace at netnsPath if none is mounted there ("" means
// DefaultNetNSPath), the veth pair (host side on the bridge, pod side eth0),
// the pod's address (kept across calls and restarts), loopback and the
// default route via the bridge. The address is persisted before any host
// object is created. If Setup fails for a pod it had no record of, it removes
// what it created and frees the address; if the pod was known, its
// reservation stays until Teardown or GC.
func (n *Network) Setup(ctx context.Context, podID, netnsPath string) (PodNet, error) {
	if podID == "" {
		return PodNet{}, errors.New("podnet: setup: empty pod ID")
	}
	if netnsPath == "" {
		netnsPath = n.DefaultNetNSPath(podID)
	}
	if !filepath.IsAbs(netnsPath) {
		return PodNet{}, fmt.Errorf("podnet: setup of pod %s: namespace path %q is not absolute", podID, netnsPath)
	}
	netnsPath = filepath.Clean(netnsPath)

	defer n.pods.lock(podID)()
	if err := ctx.Err(); err != nil {
		return PodNet{}, fmt.Errorf("setting up network of pod %s: %w", podID, err)
	}
	rec, prev, fresh, gen, err := n.reserve(podID, netnsPath)
	if err == nil {
		err = n.commit(gen) // the address is durable before anything uses it
	}
	if err != nil {
		return PodNet{}, fmt.Errorf("setting up network of pod %s: %w", podID, err)
	}
	if prev != nil && prev.NetNS != "" && prev.NetNS != rec.NetNS {
		// The pod moved to another namespace: its old one is stale.
		if err := n.deleteLink(prev.Veth); err != nil {
			return PodNet{}, fmt.Errorf("setting up network of pod %s: removing old veth: %w", podID, err)
		}
		if err := removeNetNS(prev.NetNS); err != nil {
			return PodNet{}, fmt.Errorf("setting up network of pod %s: removing old namespace: %w", podID, err)
		}
	}
	pn, err := n.wire(ctx, rec)
	if err != nil {
		err = fmt.Errorf("setting up network of pod %s: %w", podID, err)
		if fresh {
			if uerr := n.teardownLocked(podID); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing: %w", uerr))
			}
		}
		return PodNet{}, err
	}
	return pn, nil
}

// reserve finds or makes the pod's record for netnsPath, in memory: gen is
// the table generation to commit before the record is used. prev is the
// record it replaced, if any; fresh is set if the pod had no record.
func (n *Network) reserve(podID, netnsPath string) (rec podRecord, prev *podRecord, fresh bool, gen uint64, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return podRecord{}, nil, false, 0, ErrClosed
	}
	old, ok := n.ipam.get(podID)
	switch {
	case ok && n.ipam.inRange(podID, old) && old.NetNS == netnsPath:
		// Known; a failed commit may have left it only in memory.
		return old, nil, false, n.ipam.gen, nil
	case ok && n.ipam.inRange(podID, old):
		r := old
		r.NetNS = netnsPath
		r, gen, err = n.ipam.put(podID, r, false)
		return r, &old, false, gen, err
	case ok: // address outside the current PodCIDR: re-address
		r := podRecord{NetNS: netnsPath, Veth: old.Veth, seq: old.seq}
		r, gen, err = n.ipam.put(podID, r, true)
		return r, &old, false, gen, err
	default:
		n.seq++
		r, gen, err := n.ipam.put(podID, podRecord{NetNS: netnsPath, seq: n.seq}, true)
		return r, nil, true, gen, err
	}
}

// commit makes the allocation table durable up to generation gen. Writes
// are group commits: the caller holding saveMu writes every change made so
// far, so the callers queued behind it usually find theirs already on disk,
// and a burst of pod starts costs a few fsyncs instead of two per pod. A
// failed write leaves the changes in memory for the next commit.
func (n *Network) commit(gen uint64) error {
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	if n.ipam.saved >= gen {
		n.mu.Unlock()
		return nil
	}
	data, upto, err := n.ipam.encode()
	path := n.ipam.path
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.writes++
	if err := writeFileAtomic(path, data); err != nil {
		return fmt.Errorf("saving pod IP allocations: %w", err)
	}
	n.mu.Lock()
	n.ipam.saved = max(n.ipam.saved, upto)
	n.mu.Unlock()
	return nil
}

// wire converges the host and pod objects of one reserved pod.
func (n *Network) wire(ctx context.Context, rec podRecord) (PodNet, error) {
	ip := net.ParseIP(rec.IP).To4()
	br, err := n.ensureBridge()
	if err != nil {
		return PodNet{}, err
	}
	if err := ctx.Err(); err != nil {
		return PodNet{}, err
	}
	ok, err := isNetNS(rec.NetNS)
	if err != nil {
		return PodNet{}, err
	}
	if !ok {
		if err := createNetNS(rec.NetNS); err != nil {
			return PodNet{}, fmt.Errorf("creating namespace: %w", err)
		}
	}
	podFd, err := openNetNS(rec.NetNS)
	if err != nil {
		return PodNet{}, err
	}
	defer unix.Close(podFd)
	ph, err := netlinkIn(podFd)
	if err != nil {
		return PodNet{}, err
	}
	defer ph.Close()

	hostLink, podLink, err := n.ensureVeth(br, ph, podFd, rec.Veth)
	if err != nil {
		return PodNet{}, err
	}
	if err := ctx.Err(); err != nil {
		return PodNet{}, err
	}
	// Host side: on the bridge, right MTU, up.
	if hostLink.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.host.LinkSetMasterByIndex(hostLink, br.Attrs().Index); err != nil {
			return PodNet{}, fmt.Errorf("attaching %s to %s: %w", rec.Veth, n.cfg.Bridge, err)
		}
	}
	if err := setMTUAndUp(n.host, hostLink, n.cfg.MTU); err != nil {
		return PodNet{}, err
	}
	// Hairpin: a pod reaching itself through a service address has its
	// DNAT'd packet bridged back out of the port it came in on.
	if err := n.host.LinkSetHairpin(hostLink, true); err != nil {
		return PodNet{}, fmt.Errorf("hairpin mode on %s: %w", rec.Veth, err)
	}
	// Pod side: loopback, address, MTU, up, default route.
	if err := n.configurePod(ph, podLink, ip); err != nil {
		return PodNet{}, err
	}
	return PodNet{IP: ip, Gateway: n.gateway, NetNSPath: rec.NetNS, HostVeth: rec.Veth}, nil
}

// ensureVeth returns the pod's veth pair, (re)creating it unless the
// host-side link and the pod's eth0 are each other's peer.
func (n *Network) ensureVeth(br netlink.Link, ph *netlink.Handle, podFd int, name string) (host, pod netlink.Link, err error) {
	host, err = lookupLink(n.host, name)
	if err != nil {
		return nil, nil, err
	}
	pod, err = lookupLink(ph, PodInterface)
	if err != nil {
		return nil, nil, err
	}
	if host != nil && pod != nil {
		if _, isVeth := host.(*netlink.Veth); isVeth &&
			host.Attrs().ParentIndex == pod.Attrs().Index && pod.Attrs().ParentIndex == host.Attrs().Index {
			return host, pod, nil
		}
	}
	if host != nil {
		if err := delLink(n.host, host); err != nil {
			return nil, nil, fmt.Errorf("removing stale %s: %w", name, err)
		}
	}
	// Deleting one end of a veth removes the other: look again.
	if pod, err = lookupLink(ph, PodInterface); err != nil {
		return nil, nil, err
	}
	if pod != nil {
		if err := delLink(ph, pod); err != nil {
			return nil, nil, fmt.Errorf("removing stale pod %s: %w", PodInterface, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, MTU: n.cfg.MTU, MasterIndex: br.Attrs().Index},
		PeerName:      PodInterface,
		PeerNamespace: netlink.NsFd(podFd),
	}
	if err := n.host.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("creating veth %s: %w", name, err)
	}
	if host, err = n.host.LinkByName(name); err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", name, err)
	}
	if pod, err = ph.LinkByName(PodInterface); err != nil {
		return nil, nil, fmt.Errorf("pod side of veth %s: %w", name, err)
	}
	return host, pod, nil
}

func (n *Network) configurePod(ph *netlink.Handle, eth0 netlink.Link, ip net.IP) error {
	lo, err := ph.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("pod loopback: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := ph.LinkSetUp(lo); err != nil {
			return fmt.Errorf("pod loopback up: %w", err)
		}
	}
	want := &net.IPNet{IP: ip, Mask: n.podNet.Mask}
	if err := syncAddrs(ph, eth0, []*net.IPNet{want}); err != nil {
		return fmt.Errorf("pod %s: %w", PodInterface, err)
	}
	if err := setMTUAndUp(ph, eth0, n.cfg.MTU); err != nil {
		return fmt.Errorf("pod %s: %w", PodInterface, err)
	}
	def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: n.gateway}
	if err := ph.RouteReplace(def); err != nil {
		return fmt.Errorf("pod default route via %s: %w", n.gateway, err)
	}
	return nil
}

// Teardown removes a pod's veth and the namespace mounted at its recorded
// path (whoever created it), then frees its address. What is already gone
// is success. If an object cannot be removed the address
// stays reserved and the error says why.
func (n *Network) Teardown(ctx context.Context, podID string) error {
	defer n.pods.lock(podID)()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tearing down network of pod %s: %w", podID, err)
	}
	return n.teardownLocked(podID)
}

// teardownLocked is Teardown with the pod's lock held.
func (n *Network) teardownLocked(podID string) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	rec, known := n.ipam.get(podID)
	veth := rec.Veth
	if !known {
		veth = vethNameFor(podID, 0)
		if owner, taken := n.ipam.byVeth[veth]; taken && owner != podID {
			veth = ""
		}
	}
	n.mu.Unlock()

	var errs []error
	if veth != "" {
		if err := n.deleteLink(veth); err != nil {
			errs = append(errs, err)
		}
	}
	nsPath := rec.NetNS
	if !known {
		nsPath = n.DefaultNetNSPath(podID)
	}
	if nsPath != "" {
		if err := removeNetNS(nsPath); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && known {
		n.mu.Lock()
		gen := n.ipam.remove(podID)
		n.mu.Unlock()
		if err := n.commit(gen); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("tearing down network of pod %s: %w", podID, errors.Join(errs...))
	}
	return nil
}

// GC removes the network of every pod not in keep: pods with a record are
// torn down; host veths named like podnet's and namespaces in NetNSDir that
// belong to no record are removed. keep must hold every pod that should
// exist on this node; pods whose Setup starts after GC began are never
// collected. It carries on past errors and returns them joined.
func (n *Network) GC(ctx context.Context, keep map[string]bool) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	start := n.seq
	var victims []string
	for _, id := range n.ipam.ids() {
		if !keep[id] && n.ipam.pods[id].seq <= start {
			victims = append(victims, id)
		}
	}
	n.mu.Unlock()

	var errs []error
	for _, id := range victims {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := n.collect(id, start); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, n.collectOrphans()...)
	if len(errs) > 0 {
		return fmt.Errorf("podnet: gc: %w", errors.Join(errs...))
	}
	return nil
}

// collect tears one pod down unless a Setup made it anew since GC started.
func (n *Network) collect(podID string, start uint64) error {
	defer n.pods.lock(podID)()
	n.mu.Lock()
	rec, ok := n.ipam.get(podID)
	n.mu.Unlock()
	if !ok || rec.seq > start {
		return nil
	}
	return n.teardownLocked(podID)
}

// collectOrphans removes podnet-named veths and NetNSDir namespaces that no
// record owns. It holds n.mu throughout, so no record can appear meanwhile;
// records are written before their objects are created and removed after
// they are gone, so anything unowned here is truly orphaned.
func (n *Network) collectOrphans() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	links, err := retryDump(n.host.LinkList)
	if err != nil {
		return []error{fmt.Errorf("listing links: %w", err)}
	}
	for _, l := range links {
		name := l.Attrs().Name
		if _, isVeth := l.(*netlink.Veth); !isVeth || !strings.HasPrefix(name, hostVethPrefix) {
			continue
		}
		if _, owned := n.ipam.byVeth[name]; owned {
			continue
		}
		if err := delLink(n.host, l); err != nil {
			errs = append(errs, fmt.Errorf("removing orphan veth %s: %w", name, err))
		}
	}
	entries, err := os.ReadDir(n.cfg.NetNSDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return append(errs, err)
	}
	owned := map[string]bool{}
	for _, r := range n.ipam.pods {
		owned[r.NetNS] = true
	}
	for _, e := range entries {
		p := filepath.Join(n.cfg.NetNSDir, e.Name())
		if owned[p] || !e.Type().IsRegular() {
			continue
		}
		if err := removeNetNS(p); err != nil {
			errs = append(errs, fmt.Errorf("removing orphan namespace: %w", err))
		}
	}
	return errs
}

// ensureNode converges the node-level objects: ip_forward, the bridge and
// the masquerade table.
func (n *Network) ensureNode() error {
	var errs []error
	if err := writeSysctl(n.hostFd, "net/ipv4/ip_forward", "1"); err != nil {
		errs = append(errs, err)
	}
	if br, err := n.ensureBridge(); err != nil {
		errs = append(errs, err)
	} else if err := n.reattachPods(br); err != nil {
		errs = append(errs, err)
	}
	if err := n.ensureMasquerade(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ensureBridge converges the bridge: present, fixed MAC (so the pods'
// gateway MAC never changes as ports come and go), MTU, exactly the gateway
// address, up.
func (n *Network) ensureBridge() (netlink.Link, error) {
	n.bridgeMu.Lock()
	defer n.bridgeMu.Unlock()
	name := n.cfg.Bridge
	mac := macFor(n.gateway)
	l, err := lookupLink(n.host, name)
	if err != nil {
		return nil, err
	}
	if l == nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.cfg.MTU, HardwareAddr: mac}}
		if err := n.host.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		if l, err = n.host.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s exists and is a %s, not a bridge", name, l.Type())
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := n.host.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("bridge %s MAC: %w", name, err)
		}
	}
	want := []*net.IPNet{{IP: n.gateway, Mask: n.podNet.Mask}}
	for _, a := range n.cfg.ExtraAddrs {
		ip, ipn, err := net.ParseCIDR(a)
		if err != nil {
			return nil, fmt.Errorf("extra bridge address %q: %w", a, err)
		}
		want = append(want, &net.IPNet{IP: ip, Mask: ipn.Mask})
	}
	if err := syncAddrs(n.host, l, want); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := setMTUAndUp(n.host, l, n.cfg.MTU); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	return l, nil
}

// reattachPods puts every recorded pod's host veth back on the bridge and
// up, for when the bridge was recreated under live pods.
func (n *Network) reattachPods(br netlink.Link) error {
	n.mu.Lock()
	owned := make(map[string]bool, len(n.ipam.byVeth))
	for name := range n.ipam.byVeth {
		owned[name] = true
	}
	n.mu.Unlock()
	if len(owned) == 0 {
		return nil
	}
	links, err := retryDump(n.host.LinkList)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if !owned[l.Attrs().Name] {
			continue
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			if err := n.host.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
				errs = append(errs, fmt.Errorf("attaching %s to %s: %w", l.Attrs().Name, n.cfg.Bridge, err))
				continue
			}
		}
		if err := setMTUAndUp(n.host, l, n.cfg.MTU); err != nil {
			errs = append(errs, err)
		}
		if err := n.host.LinkSetHairpin(l, true); err != nil {
			errs = append(errs, fmt.Errorf("hairpin mode on %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// deleteLink deletes a host link by name; gone is success.
func (n *Network) deleteLink(name string) error {
	l, err := lookupLink(n.host, name)
	if err != nil || l == nil {
		return err
	}
	if err := delLink(n.host, l); err != nil {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// macFor derives a stable, locally administered MAC from an IPv4 address.
func macFor(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	return net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
}

// lookupLink returns the named link, or nil if there is none.
func lookupLink(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err == nil {
		return l, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	return nil, fmt.Errorf("looking up %s: %w", name, err)
}

// delLink deletes a link by index; gone is success.
func delLink(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func setMTUAndUp(h *netlink.Handle, l netlink.Link, mtu int) error {
	if l.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("MTU of %s: %w", l.Attrs().Name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// syncAddrs leaves exactly want as the IPv4 address of l.
func syncAddrs(h *netlink.Handle, l netlink.Link, want []*net.IPNet) error {
	have, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	found := map[string]bool{}
	for _, a := range have {
		keep := false
		for _, w := range want {
			keep = keep || a.IPNet.String() == w.String()
		}
		if keep {
			found[a.IPNet.String()] = true
			continue
		}
		if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing stale address %s: %w", a.IPNet, err)
		}
	}
	for _, w := range want {
		if found[w.String()] {
			continue
		}
		if err := h.AddrReplace(l, &netlink.Addr{IPNet: w}); err != nil {
			return fmt.Errorf("adding address %s: %w", w, err)
		}
	}
	return nil
}

// retryDump retries a netlink dump that the kernel interrupted because the
// table changed under it.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// keyedMutex is a set of mutexes keyed by string, created on demand and
// dropped when unused.
type keyedMutex struct {
	mu sync.Mutex // guards m
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int // guarded by keyedMutex.mu
}

// lock locks key and returns its unlock function.
func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
