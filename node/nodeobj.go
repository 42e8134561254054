package node

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
)

var nodeKind, _ = state.KindFor("nodes")

func newUID() types.UID { return types.UID(uuid.NewString()) }

func rvOf(o state.Object) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}

// KubeletVersion is what Node objects report as their kubelet version.
const KubeletVersion = "v1.33.0-shoal"

// registerNode creates or refreshes this node's Node object: addresses,
// capacity and node info. Conditions and spec.podCIDR belong to the leader.
func (n *Node) registerNode(ctx context.Context) error {
	want := n.nodeStatus()
	want.Images = n.nodeImages(ctx)
	cur, ok := n.store.Get("nodes", "", n.id.NodeName)
	if !ok {
		obj := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: n.id.NodeName, UID: newUID(), CreationTimestamp: metav1.NewTime(n.now()),
				Labels: map[string]string{
					"kubernetes.io/hostname": n.id.NodeName,
					"kubernetes.io/os":       runtime.GOOS,
					"kubernetes.io/arch":     runtime.GOARCH,
				},
				Annotations: map[string]string{annNodeID: n.id.NodeID},
			},
			Status: want,
		}
		_, err := n.proposer.Propose(ctx, state.Create(obj))
		return err
	}
	node := cur.(*corev1.Node)
	if node.Annotations[annNodeID] != n.id.NodeID {
		return errNameTaken(n.id.NodeName, node.Annotations[annNodeID])
	}
	if equality.Semantic.DeepEqual(node.Status.Addresses, want.Addresses) &&
		equality.Semantic.DeepEqual(node.Status.Capacity, want.Capacity) &&
		node.Status.NodeInfo == want.NodeInfo &&
		equality.Semantic.DeepEqual(node.Status.Images, want.Images) {
		return nil
	}
	upd := node.DeepCopy()
	upd.Status.Addresses, upd.Status.Capacity, upd.Status.Allocatable = want.Addresses, want.Capacity, want.Allocatable
	upd.Status.NodeInfo = want.NodeInfo
	upd.Status.Images = want.Images
	_, err := n.proposer.Propose(ctx, state.Update(upd, rvOf(node)))
	return err
}

type nameTakenError struct{ name, other string }

func (e nameTakenError) Error() string {
	return "node name " + strconv.Quote(e.name) + " is registered by another node (ID " + e.other + ")"
}

func errNameTaken(name, other string) error { return nameTakenError{name, other} }

// nodeStatus describes this machine.
func (n *Node) nodeStatus() corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
	}
	var st syscall.Statfs_t
	if syscall.Statfs(n.cfg.DataDir, &st) == nil {
		capacity[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(st.Blocks)*int64(st.Bsize), resource.BinarySI)
	}
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.cfg.AdvertiseAddr},
			{Type: corev1.NodeHostName, Address: n.id.NodeName},
		},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               readTrim("/etc/machine-id"),
			BootID:                  readTrim("/proc/sys/kernel/random/boot_id"),
			SystemUUID:              n.id.NodeID,
			KernelVersion:           utsString(uts.Release[:]),
			OSImage:                 osImage(),
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: n.runtimeVersion,
			KubeletVersion:          KubeletVersion,
			KubeProxyVersion:        KubeletVersion,
		},
	}
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func osImage() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// nodeByID finds the Node object a node registered, by its ID.
func (n *Node) nodeByID(id string) *corev1.Node {
	objs, _ := n.store.List("nodes", "")
	for _, o := range objs {
		if o.GetAnnotations()[annNodeID] == id {
			return o.(*corev1.Node)
		}
	}
	return nil
}
