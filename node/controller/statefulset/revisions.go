package statefulset

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
)

// historyPrefix starts the keys of the revision records in the store's
// internal records: statefulsets/revisions/<namespace>/<set>/<revision>.
const historyPrefix = "statefulsets/revisions/"

func historyKey(namespace, set, revision string) string {
	return historyPrefix + namespace + "/" + set + "/" + revision
}

// revision is one version of a StatefulSet's pod template.
type revision struct {
	name     string // <set>-<hash>: the pods' controller-revision-hash
	number   int64  // order of appearance (ControllerRevision.revision)
	template *corev1.PodTemplateSpec
}

// history is what a sync knows of a StatefulSet's revisions.
type history struct {
	current, update *revision
	collisionCount  int32
	// records are set's revision records by name, as stored.
	records map[string]*appsv1.ControllerRevision
	// foreign are the keys of records under set's name that belong to an
	// earlier StatefulSet of that name (another UID).
	foreign []string
}

// templateHash is the hash of a pod template, as Kubernetes computes
// controller hashes (controller.ComputeHash, the Deployment's
// pod-template-hash): FNV-32a over the template dumped for hashing, then
// the collision count if any, safe-encoded.
func templateHash(template *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*template))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// revisionName is the name of set's revision for its template now. The
// collision count is always hashed (0 when unset), as Kubernetes does for
// revisions: status.collisionCount going from unset to 0 must not look
// like a new template.
func revisionName(set *appsv1.StatefulSet) string {
	var collisions int32
	if set.Status.CollisionCount != nil {
		collisions = *set.Status.CollisionCount
	}
	return set.Name + "-" + templateHash(&set.Spec.Template, &collisions)
}

// revisions returns set's current and update revisions, recording the
// update revision first if it is new (or renumbering it when the template
// went back to an earlier revision's, as a rollback does). The current
// revision is status.currentRevision when its record exists, else the
// update revision (a new StatefulSet, or history lost).
//
// Hash collisions (two templates, one name) are not detected: the records
// are trusted by name. status.collisionCount is honoured if set.
func (sc *Controller) revisions(ctx context.Context, set *appsv1.StatefulSet) (*history, error) {
	h := &history{records: map[string]*appsv1.ControllerRevision{}}
	if set.Status.CollisionCount != nil {
		h.collisionCount = *set.Status.CollisionCount
	}
	var newest int64
	for key, raw := range sc.c.Store.ListKV(historyPrefix + set.Namespace + "/" + set.Name + "/") {
		cr := &appsv1.ControllerRevision{}
		if err := cr.Unmarshal(raw); err != nil {
			sc.c.Log.Warn("statefulset: dropping an unreadable revision record", "key", key, "err", err)
			h.foreign = append(h.foreign, key)
			continue
		}
		if ref := controller.ControllerOf(cr); ref == nil || ref.UID != set.UID {
			h.foreign = append(h.foreign, key)
			continue
		}
		h.records[cr.Name] = cr
		newest = max(newest, cr.Revision)
	}
	name := revisionName(set)
	h.update = &revision{name: name, template: &set.Spec.Template}
	switch cr := h.records[name]; {
	case cr == nil:
		cr, err := newRevisionRecord(sc.c, set, name, newest+1)
		if err != nil {
			return nil, err
		}
		if err := sc.putRecord(ctx, set, cr); err != nil {
			return nil, err
		}
		h.records[name] = cr
		h.update.number = cr.Revision
	case cr.Revision < newest:
		next := cr.DeepCopy()
		next.Revision = newest + 1
		if err := sc.putRecord(ctx, set, next); err != nil {
			return nil, err
		}
		h.records[name] = next
		h.update.number = next.Revision
	default:
		h.update.number = cr.Revision
	}
	h.current = h.update
	if cur := set.Status.CurrentRevision; cur != "" && cur != name {
		if cr := h.records[cur]; cr != nil {
			t, err := templateOf(cr)
			if err != nil {
				sc.c.Log.Warn("statefulset: unreadable current revision; using the update revision", "statefulset", set.Namespace+"/"+set.Name, "revision", cur, "err", err)
			} else {
				h.current = &revision{name: cur, number: cr.Revision, template: t}
			}
		}
	}
	return h, nil
}

func (sc *Controller) putRecord(ctx context.Context, set *appsv1.StatefulSet, cr *appsv1.ControllerRevision) error {
	b, err := cr.Marshal()
	if err != nil {
		return fmt.Errorf("encoding revision %s: %w", cr.Name, err)
	}
	if _, err := sc.c.Proposer.Propose(ctx, state.PutKV(historyKey(set.Namespace, set.Name, cr.Name), b)); err != nil {
		return fmt.Errorf("recording revision %s of statefulset %s/%s: %w", cr.Name, set.Namespace, set.Name, err)
	}
	return nil
}

// newRevisionRecord is the ControllerRevision Kubernetes would store for
// set's template: data is a strategic merge patch that replaces
// spec.template.
func newRevisionRecord(c controller.Context, set *appsv1.StatefulSet, name string, number int64) (*appsv1.ControllerRevision, error) {
	raw, err := json.Marshal(set.Spec.Template)
	if err != nil {
		return nil, fmt.Errorf("encoding the template of statefulset %s/%s: %w", set.Namespace, set.Name, err)
	}
	var tmpl map[string]any
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		return nil, err
	}
	tmpl["$patch"] = "replace"
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
	if err != nil {
		return nil, err
	}
	return &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			Namespace:         set.Namespace,
			UID:               c.NewUID(),
			CreationTimestamp: c.MetaNow(),
			Labels:            copyMap(set.Spec.Template.Labels),
			OwnerReferences:   []metav1.OwnerReference{*controller.NewControllerRef(set, GVK)},
		},
		Data:     runtime.RawExtension{Raw: patch},
		Revision: number,
	}, nil
}

// templateOf reads the pod template back from a revision record.
func templateOf(cr *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	var patch struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &patch); err != nil {
		return nil, fmt.Errorf("decoding revision %s: %w", cr.Name, err)
	}
	return &patch.Spec.Template, nil
}

// truncateHistory deletes the records of earlier StatefulSets of set's
// name and set's oldest revisions beyond revisionHistoryLimit among those
// no longer live (live: the current and update revisions and every
// revision a pod is at).
func (sc *Controller) truncateHistory(ctx context.Context, set *appsv1.StatefulSet, h *history, pods []*corev1.Pod) error {
	live := map[string]bool{h.current.name: true, h.update.name: true}
	for _, p := range pods {
		live[revisionOf(p)] = true
	}
	var old []*appsv1.ControllerRevision
	for name, cr := range h.records {
		if !live[name] {
			old = append(old, cr)
		}
	}
	limit := 10
	if set.Spec.RevisionHistoryLimit != nil {
		limit = max(int(*set.Spec.RevisionHistoryLimit), 0)
	}
	ops := make([]state.Op, 0, len(h.foreign))
	for _, key := range h.foreign {
		ops = append(ops, state.DeleteKV(key))
	}
	if len(old) > limit {
		sort.Slice(old, func(i, j int) bool { return old[i].Revision < old[j].Revision })
		for _, cr := range old[:len(old)-limit] {
			ops = append(ops, state.DeleteKV(historyKey(set.Namespace, set.Name, cr.Name)))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := sc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("trimming the revisions of statefulset %s/%s: %w", set.Namespace, set.Name, err)
	}
	return nil
}

// dropHistory deletes every revision record of the StatefulSet
// namespace/name (it is gone).
func (sc *Controller) dropHistory(ctx context.Context, namespace, name string) error {
	recs := sc.c.Store.ListKV(historyPrefix + namespace + "/" + name + "/")
	if len(recs) == 0 {
		return nil
	}
	ops := make([]state.Op, 0, len(recs))
	for key := range recs {
		ops = append(ops, state.DeleteKV(key))
	}
	if _, err := sc.c.Proposer.Propose(ctx, ops...); err != nil {
		return fmt.Errorf("dropping the revisions of statefulset %s/%s: %w", namespace, name, err)
	}
	return nil
}

// historyOwners are the keys of the StatefulSets that have revision
// records.
func historyOwners(store *state.Store) []string {
	seen := map[string]bool{}
	var out []string
	for key := range store.ListKV(historyPrefix) {
		parts := strings.SplitN(strings.TrimPrefix(key, historyPrefix), "/", 3)
		if len(parts) != 3 {
			continue
		}
		k := controller.Key(parts[0], parts[1])
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
