// Package localpv is Shoal's built-in local volume provisioner. It gives
// each PersistentVolumeClaim a directory on the node where the claim's
// first pod lands:
//
//   - A claim that is Pending, names no volume, and is used by a pod the
//     scheduler has placed (spec.nodeName set, not finished, not being
//     deleted) gets a PersistentVolume pvc-<claim UID> of type local:
//     path <BaseDir>/<volume name> on that node (the node's agent makes the
//     directory), node affinity kubernetes.io/hostname In [<node>],
//     capacity the claim's storage request, the claim's access modes and
//     volume mode, its storage class (Config.StorageClass when it names
//     none, which is then set on the claim too), reclaim policy from the
//     claim's annotation shoal.dev/reclaim-policy (Delete or Retain) or
//     Config.ReclaimPolicy, and a claimRef to the claim. The volume is
//     created and the claim bound to it — spec.volumeName, phase Bound,
//     capacity and access modes, the pv.kubernetes.io bind annotations,
//     the pvc-protection finalizer — in one atomic proposal, both Bound or
//     neither there. The scheduler follows a bound claim's volume affinity,
//     so the pod's later incarnations return to that node and its data.
//   - A claim it bound is protected as Kubernetes' pvc-protection
//     controller protects claims: deleting it only marks it while a placed,
//     unfinished pod still uses it; the finalizer is removed (and the claim
//     with it) once none does.
//   - A volume whose claim is gone (or replaced by another of that name)
//     is reclaimed: Delete removes the volume object (its node's agent
//     removes the directory; only volumes this provisioner made are
//     deleted, others fail with a message), Retain marks it Released, data
//     kept. A bound claim whose volume disappeared becomes Lost.
//
// Not supported (the claim stays Pending with a ProvisioningFailed event):
// claims with a selector or a data source, block volume mode, claims with
// no storage request. Shoal has no StorageClass kind: every claim is
// provisioned here, whatever class it names. Existing (statically made)
// volumes are not bound to claims. Capacity is not enforced on the node.
//
// It runs on the leader only; all its state is in the store (the claims,
// the volumes and their claimRefs), so a new leader carries on.
package localpv

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// Names this provisioner uses on the objects it handles.
const (
	// ProvisionerName marks the volumes it made (annotation
	// pv.kubernetes.io/provisioned-by) and the claims it provisions for.
	ProvisionerName = "shoal.dev/local"
	// ReclaimPolicyAnnotation on a claim chooses its volume's reclaim
	// policy: "Delete" or "Retain".
	ReclaimPolicyAnnotation = "shoal.dev/reclaim-policy"
	// ProtectionFinalizer keeps a bound claim while pods use it.
	ProtectionFinalizer = "kubernetes.io/pvc-protection"
)

// Annotations Kubernetes' volume controllers set, set here the same way.
const (
	annProvisionedBy      = "pv.kubernetes.io/provisioned-by"
	annBindCompleted      = "pv.kubernetes.io/bind-completed"
	annBoundByController  = "pv.kubernetes.io/bound-by-controller"
	annStorageProvisioner = "volume.kubernetes.io/storage-provisioner"
	annSelectedNode       = "volume.kubernetes.io/selected-node"
)

// Event reasons.
const (
	reasonProvisioningSucceeded = "ProvisioningSucceeded"
	reasonProvisioningFailed    = "ProvisioningFailed"
	reasonClaimLost             = "ClaimLost"
	reasonVolumeFailedDelete    = "VolumeFailedDelete"
	reasonVolumeFailedRecycle   = "VolumeFailedRecycle"
)

// Store keys.
const (
	resourceClaims  = "persistentvolumeclaims"
	resourceVolumes = "persistentvolumes"
)

// DefaultWorkers is how many keys are synced at once.
const DefaultWorkers = 2

// Config configures the provisioner.
type Config struct {
	// BaseDir is the directory of the volumes on every node: a volume's
	// path is BaseDir/<volume name>. Absolute.
	BaseDir string
	// ReclaimPolicy is the reclaim policy of volumes whose claim does not
	// choose one (ReclaimPolicyAnnotation): Delete or Retain.
	ReclaimPolicy corev1.PersistentVolumeReclaimPolicy
	// StorageClass is the class of volumes whose claim names none.
	StorageClass string
}

// DefaultConfig is usable as is: /var/lib/shoal/volumes, Delete, "local".
func DefaultConfig() Config {
	return Config{BaseDir: "/var/lib/shoal/volumes", ReclaimPolicy: corev1.PersistentVolumeReclaimDelete, StorageClass: "local"}
}

// Validate reports a configuration New refuses.
func (c Config) Validate() error {
	var errs []error
	if !path.IsAbs(c.BaseDir) || path.Clean(c.BaseDir) != c.BaseDir {
		errs = append(errs, fmt.Errorf("localpv: base directory %q is not a clean absolute path", c.BaseDir))
	}
	if _, err := parsePolicy(string(c.ReclaimPolicy)); err != nil {
		errs = append(errs, fmt.Errorf("localpv: default %w", err))
	}
	if c.StorageClass == "" {
		errs = append(errs, errors.New("localpv: no storage class"))
	}
	return errors.Join(errs...)
}

func parsePolicy(s string) (corev1.PersistentVolumeReclaimPolicy, error) {
	switch p := corev1.PersistentVolumeReclaimPolicy(s); p {
	case corev1.PersistentVolumeReclaimDelete, corev1.PersistentVolumeReclaimRetain:
		return p, nil
	}
	return "", fmt.Errorf("reclaim policy %q is not Delete or Retain", s)
}

// Controller is the local volume provisioner. Create it with New, then
// call Run once (a new leader term makes a new one).
type Controller struct {
	c     controller.Context
	cfg   Config
	queue controller.Queue
	// Workers is how many keys are synced concurrently (DefaultWorkers);
	// set it before Run.
	Workers int
}

// New returns a provisioner; cfg is not changed afterwards.
func New(c controller.Context, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c = c.WithDefaults()
	return &Controller{c: c, cfg: cfg, queue: controller.NewQueue("localpv", c.Clock), Workers: DefaultWorkers}, nil
}

// Queue keys: a claim or a volume.
const (
	claimPrefix  = "claim:"
	volumePrefix = "volume:"
)

func claimKey(namespace, name string) string { return claimPrefix + controller.Key(namespace, name) }
func volumeKey(name string) string           { return volumePrefix + name }

// Run watches claims, volumes and pods, and syncs claims and volumes until
// ctx ends.
func (lp *Controller) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for resource, handle := range map[string]func(state.Event){
		resourceClaims:          lp.onClaim,
		resourceVolumes:         lp.onVolume,
		controller.ResourcePods: lp.onPod,
	} {
		wg.Add(1)
		go func() { defer wg.Done(); controller.Watch(ctx, lp.c.Store, resource, handle) }()
	}
	controller.Run(ctx, lp.queue, lp.Workers, lp.c.Log, lp.sync)
	cancel()
	wg.Wait()
}

// onClaim enqueues the claim and the volume it names (a deleted claim's
// volume is reclaimed).
func (lp *Controller) onClaim(ev state.Event) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		if pvc, ok := o.(*corev1.PersistentVolumeClaim); ok {
			lp.queue.Add(claimKey(pvc.Namespace, pvc.Name))
			if pvc.Spec.VolumeName != "" {
				lp.queue.Add(volumeKey(pvc.Spec.VolumeName))
			}
		}
	}
}

// onVolume enqueues the volume and its claim (a bound claim whose volume
// went is Lost).
func (lp *Controller) onVolume(ev state.Event) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			lp.queue.Add(volumeKey(pv.Name))
			if ref := pv.Spec.ClaimRef; ref != nil {
				lp.queue.Add(claimKey(ref.Namespace, ref.Name))
			}
		}
	}
}

// onPod enqueues the claims a pod uses: placing it may provision them,
// its end may release their protection.
func (lp *Controller) onPod(ev state.Event) {
	for _, o := range []state.Object{ev.Prev, ev.Object} {
		if pod, ok := o.(*corev1.Pod); ok {
			for _, name := range claimsOf(pod) {
				lp.queue.Add(claimKey(pod.Namespace, name))
			}
		}
	}
}

// claimsOf lists the claims pod uses: its persistentVolumeClaim volumes
// and the claims of its ephemeral volumes (<pod>-<volume>).
func claimsOf(pod *corev1.Pod) []string {
	var out []string
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			out = append(out, pod.Name+"-"+v.Name)
		}
	}
	return out
}

// sync reconciles one claim ("claim:<namespace>/<name>") or volume
// ("volume:<name>").
func (lp *Controller) sync(ctx context.Context, key string) error {
	switch {
	case strings.HasPrefix(key, claimPrefix):
		ns, name := controller.SplitKey(strings.TrimPrefix(key, claimPrefix))
		return lp.syncClaim(ctx, ns, name)
	case strings.HasPrefix(key, volumePrefix):
		return lp.syncVolume(ctx, strings.TrimPrefix(key, volumePrefix))
	}
	return nil
}

// Sync reconciles one key once, now, as a worker would: "claim:<namespace>/
// <name>" or "volume:<name>". For tests and tools.
func (lp *Controller) Sync(ctx context.Context, key string) error { return lp.sync(ctx, key) }

func (lp *Controller) syncClaim(ctx context.Context, namespace, name string) error {
	o, ok := lp.c.Store.Get(resourceClaims, namespace, name)
	if !ok {
		return nil
	}
	pvc := o.(*corev1.PersistentVolumeClaim)
	switch {
	case pvc.DeletionTimestamp != nil:
		return lp.releaseProtection(ctx, pvc)
	case pvc.Spec.VolumeName != "":
		return lp.checkBound(ctx, pvc)
	case pvc.Status.Phase != "" && pvc.Status.Phase != corev1.ClaimPending:
		return nil
	}
	node := lp.placedOn(pvc)
	if node == "" {
		return nil // wait for its first pod to be placed
	}
	if msg := unsupported(pvc); msg != "" {
		lp.c.Events.Eventf(pvc, "PersistentVolumeClaim", corev1.EventTypeWarning, reasonProvisioningFailed, "%s", msg)
		return nil
	}
	return lp.provision(ctx, pvc, node)
}

// unsupported says why pvc cannot be provisioned here, or "".
func unsupported(pvc *corev1.PersistentVolumeClaim) string {
	switch s := &pvc.Spec; {
	case s.Selector != nil:
		return "the claim has a selector: it asks for an existing volume, which the local provisioner does not bind"
	case s.DataSource != nil || s.DataSourceRef != nil:
		return "the claim has a data source: the local provisioner makes empty volumes only"
	case s.VolumeMode != nil && *s.VolumeMode == corev1.PersistentVolumeBlock:
		return "the claim asks for a block volume: the local provisioner makes filesystem volumes only"
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
		return "the claim requests no storage"
	}
	return ""
}

// placedOn is the node of the oldest pod using pvc that the scheduler has
// placed and that neither finished nor is being deleted; "" if none.
func (lp *Controller) placedOn(pvc *corev1.PersistentVolumeClaim) string {
	objs, _ := lp.c.Store.List(controller.ResourcePods, pvc.Namespace)
	var first *corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil || finished(p) || !slices.Contains(claimsOf(p), pvc.Name) {
			continue
		}
		if first == nil || p.CreationTimestamp.Before(&first.CreationTimestamp) {
			first = p
		}
	}
	if first == nil {
		return ""
	}
	return first.Spec.NodeName
}

func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// inUse reports whether a placed pod that has not finished uses pvc (as
// Kubernetes' pvc-protection controller decides).
func (lp *Controller) inUse(pvc *corev1.PersistentVolumeClaim) bool {
	objs, _ := lp.c.Store.List(controller.ResourcePods, pvc.Namespace)
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName != "" && !finished(p) && slices.Contains(claimsOf(p), pvc.Name) {
			return true
		}
	}
	return false
}

// volumeName is the name of the volume provisioned for pvc.
func volumeName(pvc *corev1.PersistentVolumeClaim) string { return "pvc-" + string(pvc.UID) }

// provision creates pvc's volume on node and binds pvc to it, atomically.
func (lp *Controller) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim, node string) error {
	policy := lp.cfg.ReclaimPolicy
	if a, ok := pvc.Annotations[ReclaimPolicyAnnotation]; ok {
		p, err := parsePolicy(a)
		if err != nil {
			lp.c.Events.Eventf(pvc, "PersistentVolumeClaim", corev1.EventTypeWarning, reasonProvisioningFailed,
				"annotation %s: %v", ReclaimPolicyAnnotation, err)
			return nil
		}
		policy = p
	}
	name := volumeName(pvc)
	var ops []state.Op
	pv := lp.newVolume(pvc, name, node, policy)
	if o, ok := lp.c.Store.Get(resourceVolumes, "", name); ok {
		// An earlier attempt made it (its outcome was unknown) and the
		// claim was changed since: bind the claim alone.
		cur := o.(*corev1.PersistentVolume)
		if ref := cur.Spec.ClaimRef; ref == nil || ref.UID != pvc.UID {
			return fmt.Errorf("provisioning for claim %s/%s: volume %s exists for another claim", pvc.Namespace, pvc.Name, name)
		}
		pv = cur
	} else {
		ops = append(ops, state.Create(pv))
	}
	next := pvc.DeepCopy()
	bindClaim(next, pv, node)
	ops = append(ops, state.Update(next, controller.RV(pvc)))
	if _, err := lp.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("provisioning volume %s for claim %s/%s: %w", name, pvc.Namespace, pvc.Name, err)
	}
	lp.c.Events.Eventf(pvc, "PersistentVolumeClaim", corev1.EventTypeNormal, reasonProvisioningSucceeded,
		"Successfully provisioned volume %s on node %s", name, node)
	return nil
}

// newVolume is the local volume for pvc on node, bound to it.
func (lp *Controller) newVolume(pvc *corev1.PersistentVolumeClaim, name, node string, policy corev1.PersistentVolumeReclaimPolicy) *corev1.PersistentVolume {
	hostname := node
	if o, ok := lp.c.Store.Get(controller.ResourceNodes, "", node); ok {
		if v := o.GetLabels()[corev1.LabelHostname]; v != "" {
			hostname = v
		}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			UID:               lp.c.NewUID(),
			CreationTimestamp: lp.c.MetaNow(),
			Generation:        1,
			Annotations:       map[string]string{annProvisionedBy: ProvisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				Local: &corev1.LocalVolumeSource{Path: path.Join(lp.cfg.BaseDir, name)},
			},
			AccessModes: append([]corev1.PersistentVolumeAccessMode(nil), pvc.Spec.AccessModes...),
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
			},
			PersistentVolumeReclaimPolicy: policy,
			StorageClassName:              lp.classOf(pvc),
			VolumeMode:                    pvc.Spec.VolumeMode,
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname},
				}}}},
			}},
		},
	}
	now := lp.c.MetaNow()
	pv.Status = corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound, LastPhaseTransitionTime: &now}
	defaults.Apply(pv)
	defaults.ApplyCreate(pv)
	return pv
}

func (lp *Controller) classOf(pvc *corev1.PersistentVolumeClaim) string {
	if c := pvc.Spec.StorageClassName; c != nil && *c != "" {
		return *c
	}
	return lp.cfg.StorageClass
}

// bindClaim binds pvc (a copy) to pv as Kubernetes' volume controller
// does, and protects it.
func bindClaim(pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, node string) {
	pvc.Spec.VolumeName = pv.Name
	if pvc.Spec.StorageClassName == nil {
		class := pv.Spec.StorageClassName
		pvc.Spec.StorageClassName = &class
	}
	ann := make(map[string]string, len(pvc.Annotations)+4)
	for k, v := range pvc.Annotations {
		ann[k] = v
	}
	ann[annBindCompleted], ann[annBoundByController] = "yes", "yes"
	ann[annStorageProvisioner], ann[annSelectedNode] = ProvisionerName, node
	pvc.Annotations = ann
	if !slices.Contains(pvc.Finalizers, ProtectionFinalizer) {
		pvc.Finalizers = append(slices.Clip(pvc.Finalizers), ProtectionFinalizer)
	}
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.AccessModes = append([]corev1.PersistentVolumeAccessMode(nil), pv.Spec.AccessModes...)
	pvc.Status.Capacity = pv.Spec.Capacity.DeepCopy()
}

// checkBound marks a claim Lost when the volume it was bound to is gone.
func (lp *Controller) checkBound(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if _, ok := lp.c.Store.Get(resourceVolumes, "", pvc.Spec.VolumeName); ok ||
		pvc.Annotations[annBindCompleted] != "yes" || pvc.Status.Phase == corev1.ClaimLost {
		return nil
	}
	uid := pvc.UID
	_, err := controller.Modify(ctx, lp.c, resourceClaims, pvc.Namespace, pvc.Name, func(o state.Object) error {
		cur := o.(*corev1.PersistentVolumeClaim)
		if cur.UID != uid || cur.Status.Phase == corev1.ClaimLost {
			return controller.ErrUnchanged
		}
		cur.Status.Phase = corev1.ClaimLost
		return nil
	})
	if err != nil {
		if state.IsCode(err, state.CodeNotFound) {
			return nil
		}
		return fmt.Errorf("marking claim %s/%s lost: %w", pvc.Namespace, pvc.Name, err)
	}
	lp.c.Events.Eventf(pvc, "PersistentVolumeClaim", corev1.EventTypeWarning, reasonClaimLost,
		"Bound claim has lost its PersistentVolume. Data on the volume is lost!")
	return nil
}

// releaseProtection removes the protection finalizer from a claim being
// deleted once no pod uses it; the claim goes with its last finalizer.
func (lp *Controller) releaseProtection(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	if !slices.Contains(pvc.Finalizers, ProtectionFinalizer) || lp.inUse(pvc) {
		return nil
	}
	var kept []string
	for _, f := range pvc.Finalizers {
		if f != ProtectionFinalizer {
			kept = append(kept, f)
		}
	}
	var op state.Op
	if len(kept) == 0 {
		k, _ := state.KindFor(resourceClaims)
		op = state.Delete(k, pvc.Namespace, pvc.Name, controller.RV(pvc), string(pvc.UID))
	} else {
		next := pvc.DeepCopy()
		next.Finalizers = kept
		op = state.Update(next, controller.RV(pvc))
	}
	_, err := lp.c.Proposer.Propose(ctx, op)
	if err != nil && !state.IsCode(err, state.CodeNotFound) {
		return fmt.Errorf("releasing claim %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	return nil
}

// syncVolume reclaims a volume whose claim is gone.
func (lp *Controller) syncVolume(ctx context.Context, name string) error {
	o, ok := lp.c.Store.Get(resourceVolumes, "", name)
	if !ok {
		return nil
	}
	pv := o.(*corev1.PersistentVolume)
	ref := pv.Spec.ClaimRef
	if pv.DeletionTimestamp != nil || ref == nil || ref.UID == "" {
		return nil // being deleted, available, or pre-bound by name
	}
	if c, ok := lp.c.Store.Get(resourceClaims, ref.Namespace, ref.Name); ok && c.GetUID() == ref.UID {
		return nil // bound
	}
	switch policy := pv.Spec.PersistentVolumeReclaimPolicy; {
	case policy == corev1.PersistentVolumeReclaimDelete && pv.Annotations[annProvisionedBy] == ProvisionerName:
		k, _ := state.KindFor(resourceVolumes)
		_, err := lp.c.Proposer.Propose(ctx, state.Delete(k, "", pv.Name, controller.RV(pv), string(pv.UID)))
		if err != nil && !state.IsCode(err, state.CodeNotFound) {
			return fmt.Errorf("deleting volume %s: %w", pv.Name, err)
		}
		lp.c.Log.Info("localpv: deleted the volume of a deleted claim", "volume", pv.Name, "claim", ref.Namespace+"/"+ref.Name)
		return nil
	case policy == corev1.PersistentVolumeReclaimDelete:
		return lp.setPhase(ctx, pv, corev1.VolumeFailed, reasonVolumeFailedDelete, "the local provisioner deletes only the volumes it provisioned")
	case policy == corev1.PersistentVolumeReclaimRetain:
		return lp.setPhase(ctx, pv, corev1.VolumeReleased, "", "")
	default:
		return lp.setPhase(ctx, pv, corev1.VolumeFailed, reasonVolumeFailedRecycle, fmt.Sprintf("reclaim policy %s is not supported", policy))
	}
}

// setPhase sets pv's phase and message; a Failed volume gets a Warning
// event with reason.
func (lp *Controller) setPhase(ctx context.Context, pv *corev1.PersistentVolume, phase corev1.PersistentVolumePhase, reason, msg string) error {
	if pv.Status.Phase == phase && pv.Status.Message == msg {
		return nil
	}
	uid := pv.UID
	_, err := controller.Modify(ctx, lp.c, resourceVolumes, "", pv.Name, func(o state.Object) error {
		cur := o.(*corev1.PersistentVolume)
		if cur.UID != uid || (cur.Status.Phase == phase && cur.Status.Message == msg) {
			return controller.ErrUnchanged
		}
		if cur.Status.Phase != phase {
			now := lp.c.MetaNow()
			cur.Status.LastPhaseTransitionTime = &now
		}
		cur.Status.Phase, cur.Status.Message = phase, msg
		return nil
	})
	if err != nil {
		if state.IsCode(err, state.CodeNotFound) {
			return nil
		}
		return fmt.Errorf("updating volume %s: %w", pv.Name, err)
	}
	if phase == corev1.VolumeFailed {
		lp.c.Events.Eventf(pv, "PersistentVolume", corev1.EventTypeWarning, reason, "%s", msg)
	}
	return nil
}
