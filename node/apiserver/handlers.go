package apiserver

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// maxUpdateAttempts bounds the read-modify-write retries of an update whose
// client did not pin a resourceVersion.
const maxUpdateAttempts = 16

// staleReadWarning tells a client its read came from a replica that could
// not confirm it is current.
const staleReadWarning = "served from this node's replica, which could not reach the raft leader: it may be stale"

// latest waits until the local replica is current when the request asks for
// the latest state; when that cannot be confirmed it serves the replica with
// a warning.
func (s *Server) latest(rq *request) {
	if s.consistentRead == nil || rq.query.Get("resourceVersion") != "" || rq.query.Get("continue") != "" {
		return
	}
	if err := s.consistentRead(rq.r.Context()); err != nil {
		rq.warnings = append(rq.warnings, staleReadWarning)
	}
}

func (s *Server) get(rq *request) {
	s.latest(rq)
	obj, ok := s.store.Get(rq.res.Key(), rq.namespace, rq.name)
	if !ok {
		rq.fail(apierrors.NewNotFound(rq.res.groupResource(), rq.name))
		return
	}
	rq.writeObject(http.StatusOK, obj)
}

// writeObject answers with obj, as a one-row Table when the client asked for one.
func (rq *request) writeObject(code int, obj state.Object) {
	if v := tableVersion(rq.r.Header.Get("Accept")); v != "" {
		t, err := rq.toTable([]state.Object{obj}, v)
		if err != nil {
			rq.fail(err)
			return
		}
		rq.writeJSON(code, t)
		return
	}
	rq.writeJSON(code, obj)
}

// rvOf parses an object's resourceVersion (0 if unset or malformed).
func rvOf(o interface{ GetResourceVersion() string }) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}

func (s *Server) list(rq *request) {
	s.latest(rq)
	filter, err := rq.listFilter()
	if err != nil {
		rq.fail(err)
		return
	}
	limit := int64(0)
	if v := rq.query.Get("limit"); v != "" {
		if limit, err = strconv.ParseInt(v, 10, 64); err != nil || limit < 0 {
			rq.fail(badRequest("limit must be a non-negative integer, not %q", v))
			return
		}
	}
	objs, rev := s.store.List(rq.res.Key(), rq.namespace)
	listRV := rev
	start := 0
	if c := rq.query.Get("continue"); c != "" {
		tok, err := decodeContinue(c)
		if err != nil {
			rq.fail(err)
			return
		}
		if oldest := s.store.OldestWatchRV(); tok.RV < oldest {
			rq.fail(apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."))
			return
		}
		listRV = tok.RV
		start = tok.after(objs)
	}
	page := make([]state.Object, 0, min(len(objs)-start, 512))
	next := ""
	remaining := int64(0)
	for i := start; i < len(objs); i++ {
		o := objs[i]
		if !filter.matches(o) {
			continue
		}
		if limit > 0 && int64(len(page)) == limit {
			next = encodeContinue(listRV, page[len(page)-1])
			if filter.empty() {
				remaining = int64(len(objs) - i)
			}
			break
		}
		page = append(page, o)
	}
	lm := metav1.ListMeta{ResourceVersion: strconv.FormatUint(listRV, 10), Continue: next}
	if remaining > 0 {
		lm.RemainingItemCount = &remaining
	}
	if v := tableVersion(rq.r.Header.Get("Accept")); v != "" {
		t, err := rq.toTable(page, v)
		if err != nil {
			rq.fail(err)
			return
		}
		t.ListMeta = lm
		rq.writeJSON(http.StatusOK, t)
		return
	}
	rq.writeList(page, &lm)
}

// writeList streams a typed list: {"kind":"ConfigMapList",...,"items":[...]}.
func (rq *request) writeList(items []state.Object, lm *metav1.ListMeta) {
	h := rq.w.Header()
	h.Set("Content-Type", mediaJSON)
	for _, w := range rq.warnings {
		h.Add("Warning", "299 - "+strconv.Quote(w))
	}
	rq.w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(rq.w, 32<<10)
	enc := json.NewEncoder(bw)
	apiVersion := rq.res.GroupVersion().String()
	fmt.Fprintf(bw, `{"kind":%q,"apiVersion":%q,"metadata":`, rq.res.Kind.Kind+"List", apiVersion)
	_ = enc.Encode(lm)
	_, _ = bw.WriteString(`,"items":[`)
	for i, o := range items {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if err := enc.Encode(o); err != nil {
			// The header is gone: end the document so the client sees a
			// truncated, undecodable body rather than a wrong one.
			_, _ = bw.WriteString("}")
			_ = bw.Flush()
			return
		}
	}
	_, _ = bw.WriteString("]}\n")
	_ = bw.Flush()
}

func (s *Server) create(rq *request) {
	if err := rq.checkFieldManager("CreateOptions"); err != nil {
		rq.fail(err)
		return
	}
	obj := rq.res.New()
	if err := rq.decodeBody(obj, rq.res.GVK()); err != nil {
		rq.fail(err)
		return
	}
	if err := rq.checkNamespace(obj); err != nil {
		rq.fail(err)
		return
	}
	if obj.GetResourceVersion() != "" {
		rq.fail(badRequest("resourceVersion should not be set on objects to be created"))
		return
	}
	rq.name = obj.GetName()
	out, err := s.createObject(rq, obj, false)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.writeObject(http.StatusCreated, out)
}

// createObject creates obj (named rq.name, or to be named from its
// generateName) and returns it as stored. applied says obj comes out of a
// server-side apply and carries its managedFields; otherwise the request's
// manager is recorded when it names one (tracksManagedFields).
func (s *Server) createObject(rq *request, obj state.Object, applied bool) (state.Object, error) {
	if rq.res.Namespaced {
		if err := s.namespaceWritable(rq.namespace); err != nil {
			return nil, err
		}
	}
	sent := obj.GetManagedFields()
	s.prepareCreate(rq.res, obj)
	generated := obj.GetName() == "" && obj.GetGenerateName() != ""
	if generated {
		obj.SetName(obj.GetGenerateName() + utilrand.String(5))
		rq.name = obj.GetName()
	}
	switch {
	case applied:
		obj.SetManagedFields(sent)
	case rq.tracksManagedFields(nil):
		// As kube-apiserver: the manager owns what it sent and the
		// defaults, not what admission and allocation add below.
		obj.SetManagedFields(sent)
		defaults.Apply(obj)
		obj = rq.recordUpdate(nil, obj)
	}
	if err := s.admitCreate(rq.r.Context(), obj); err != nil {
		return nil, err
	}
	svc, _ := obj.(*corev1.Service)
	var svcSpec *corev1.ServiceSpec // as requested, before allocation
	if svc != nil {
		svcSpec = svc.Spec.DeepCopy()
	}
	for attempt := 0; ; attempt++ {
		if generated && attempt > 0 {
			obj.SetName(obj.GetGenerateName() + utilrand.String(5))
			rq.name = obj.GetName()
		}
		defaults.Apply(obj)
		defaults.ApplyCreate(obj)
		var got allocated
		if svc != nil {
			svc.Spec = *svcSpec.DeepCopy()
			defaults.Apply(svc)
			var errs field.ErrorList
			if got, errs = s.svcAlloc.allocate(svc, nil); len(errs) > 0 {
				return nil, apierrors.NewInvalid(rq.res.GVK().GroupKind(), obj.GetName(), errs)
			}
		}
		if errs := s.validate(rq.res, obj, nil); len(errs) > 0 {
			return nil, apierrors.NewInvalid(rq.res.GVK().GroupKind(), obj.GetName(), errs)
		}
		if rq.dryRun() {
			return obj, nil
		}
		rs, err := s.prop.Propose(rq.writeContext(), state.Create(obj))
		if err != nil {
			if generated && attempt < 8 && state.IsCode(err, state.CodeAlreadyExists) {
				continue
			}
			if (got.ip || got.ports) && attempt < 8 && state.IsCode(err, state.CodeTaken) {
				continue // another writer took what we picked: pick again
			}
			return nil, s.explainTaken(rq.res, obj, err)
		}
		obj.SetResourceVersion(strconv.FormatUint(rs[0].RV, 10))
		return obj, nil
	}
}

// checkNamespace reconciles the object's namespace with the URL's.
func (rq *request) checkNamespace(obj state.Object) error {
	if !rq.res.Namespaced {
		obj.SetNamespace("")
		return nil
	}
	switch ns := obj.GetNamespace(); {
	case ns == "":
		obj.SetNamespace(rq.namespace)
	case ns != rq.namespace:
		return badRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return nil
}

// checkName verifies that the body names the object of the URL.
func (rq *request) checkName(name string) error {
	if name != rq.name {
		return badRequest("the name of the object (%s) does not match the name on the URL (%s)", name, rq.name)
	}
	return nil
}

// namespaceWritable reports whether objects may be created in ns.
func (s *Server) namespaceWritable(ns string) error {
	o, ok := s.store.Get("namespaces", "", ns)
	if !ok {
		return apierrors.NewNotFound(corev1.Resource("namespaces"), ns)
	}
	if n := o.(*corev1.Namespace); n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		return apierrors.NewForbidden(corev1.Resource("namespaces"), ns,
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	return nil
}

// prepareCreate sets what the server owns on a new object.
func (s *Server) prepareCreate(r *resource, obj state.Object) {
	obj.SetUID(s.newUID())
	obj.SetCreationTimestamp(metav1.NewTime(s.now().Truncate(time.Second)))
	obj.SetDeletionTimestamp(nil)
	obj.SetDeletionGracePeriodSeconds(nil)
	obj.SetManagedFields(nil)
	obj.SetSelfLink("")
	obj.SetGeneration(0)
	if r.hasSpec {
		obj.SetGeneration(1)
	}
	if r.HasStatus && r.Resource != "nodes" { // nodes may be created with their status
		r.clearStatus(obj)
	}
}

func (s *Server) update(rq *request) {
	switch rq.sub {
	case "scale":
		s.updateScale(rq)
		return
	}
	if err := rq.checkFieldManager("UpdateOptions"); err != nil {
		rq.fail(err)
		return
	}
	in := rq.res.New()
	if err := rq.decodeBody(in, rq.res.GVK()); err != nil {
		rq.fail(err)
		return
	}
	if err := rq.checkName(in.GetName()); err != nil {
		rq.fail(err)
		return
	}
	if err := rq.checkNamespace(in); err != nil {
		rq.fail(err)
		return
	}
	if in.GetResourceVersion() != "" && rvOf(in) == 0 {
		rq.fail(badRequest("invalid resourceVersion %q", in.GetResourceVersion()))
		return
	}
	first := true
	out, code, err := s.guaranteedUpdate(rq, func(cur state.Object) (state.Object, error) {
		obj := in
		if !first {
			obj = in.DeepCopyObject().(state.Object)
		}
		first = false
		if err := preconditionRV(rq, obj, cur); err != nil {
			return nil, err
		}
		return s.nextObject(rq, cur, obj, false)
	})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.writeObject(code, out)
}

// nextObject is what an update of cur to obj stores: only obj's status for
// the status subresource, else obj with the rules of prepareUpdate. applied
// says obj comes out of a server-side apply and carries the next
// managedFields; otherwise the request's manager is recorded when
// tracksManagedFields says so, and the stored managedFields are carried when
// it does not.
func (s *Server) nextObject(rq *request, cur, obj state.Object, applied bool) (state.Object, error) {
	if rq.sub == "status" {
		next := cur.DeepCopyObject().(state.Object)
		rq.res.copyStatus(next, obj)
		switch {
		case applied:
			next.SetManagedFields(obj.GetManagedFields())
		case rq.tracksManagedFields(cur):
			next = rq.recordUpdate(cur, next)
		}
		return next, nil
	}
	return s.prepareUpdate(rq, cur, obj, applied)
}

// preconditionRV fails with a conflict when the client pinned a
// resourceVersion that is not the stored one.
func preconditionRV(rq *request, obj, cur state.Object) error {
	if rv := obj.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return apierrors.NewConflict(rq.res.groupResource(), rq.name,
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	return nil
}

// prepareUpdate turns the client's object into the next stored version of cur:
// server-owned metadata and (on the main resource) the status are kept,
// defaults applied, managedFields as nextObject says, generation bumped when
// the spec changed.
func (s *Server) prepareUpdate(rq *request, cur, obj state.Object, applied bool) (state.Object, error) {
	r := rq.res
	if uid := obj.GetUID(); uid != "" && uid != cur.GetUID() {
		return nil, apierrors.NewConflict(r.groupResource(), cur.GetName(),
			fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", uid, cur.GetUID()))
	}
	obj.SetUID(cur.GetUID())
	obj.SetCreationTimestamp(cur.GetCreationTimestamp())
	obj.SetDeletionTimestamp(cur.GetDeletionTimestamp())
	obj.SetDeletionGracePeriodSeconds(cur.GetDeletionGracePeriodSeconds())
	sent := obj.GetManagedFields()
	obj.SetManagedFields(cur.GetManagedFields())
	obj.SetSelfLink("")
	obj.SetGeneration(cur.GetGeneration())
	if r.HasStatus {
		r.copyStatus(obj, cur)
	}
	defaults.Apply(obj)
	switch {
	case applied:
		obj.SetManagedFields(sent)
	case rq.tracksManagedFields(cur):
		// As kube-apiserver: after defaulting, before admission.
		obj.SetManagedFields(sent)
		obj = rq.recordUpdate(cur, obj)
	}
	admitUpdate(cur, obj)
	if svc, ok := obj.(*corev1.Service); ok {
		if _, errs := s.svcAlloc.allocate(svc, cur.(*corev1.Service)); len(errs) > 0 {
			return nil, apierrors.NewInvalid(r.GVK().GroupKind(), obj.GetName(), errs)
		}
	}
	if r.hasSpec && !r.specEqual(cur, obj) {
		obj.SetGeneration(cur.GetGeneration() + 1)
	}
	if errs := s.validate(r, obj, cur); len(errs) > 0 {
		return nil, apierrors.NewInvalid(r.GVK().GroupKind(), obj.GetName(), errs)
	}
	return obj, nil
}

// guaranteedUpdate reads the current object, asks mutate for the next
// version and writes it conditionally on the read resourceVersion, retrying on
// a conflict. mutate returning cur unchanged (semantically) is a no-op that
// writes nothing. An object being deleted whose finalizers become empty is
// deleted. It returns the stored object and the HTTP code to answer with.
func (s *Server) guaranteedUpdate(rq *request, mutate func(cur state.Object) (state.Object, error)) (state.Object, int, error) {
	for attempt := 0; ; attempt++ {
		cur, ok := s.store.Get(rq.res.Key(), rq.namespace, rq.name)
		if !ok {
			return nil, 0, apierrors.NewNotFound(rq.res.groupResource(), rq.name)
		}
		next, err := mutate(cur)
		if err != nil {
			return nil, 0, err
		}
		curRV := rvOf(cur)
		next.SetResourceVersion(cur.GetResourceVersion())
		if unchanged(next, cur) {
			return cur, http.StatusOK, nil
		}
		// An update that removes the last finalizer of an object being
		// deleted completes the deletion. (A pod terminating gracefully
		// with no finalizers is finished by its node's agent instead.)
		deleting := next.GetDeletionTimestamp() != nil && len(next.GetFinalizers()) == 0 && len(cur.GetFinalizers()) > 0
		if rq.dryRun() {
			return next, http.StatusOK, nil
		}
		var op state.Op
		if deleting {
			op = state.Delete(rq.res.Kind, rq.namespace, rq.name, curRV, string(cur.GetUID()))
		} else {
			next.SetResourceVersion("")
			op = state.Update(next, curRV)
		}
		rs, err := s.prop.Propose(rq.writeContext(), op)
		if err != nil {
			if state.IsCode(err, state.CodeConflict) && attempt+1 < maxUpdateAttempts {
				continue
			}
			return nil, 0, s.explainTaken(rq.res, next, err)
		}
		next.SetResourceVersion(strconv.FormatUint(rs[0].RV, 10))
		return next, http.StatusOK, nil
	}
}

// unchanged reports whether next is cur again. Newer timestamps in otherwise
// equal managedFields entries do not count, as in kube-apiserver
// (IgnoreManagedFieldsTimestampsTransformer): re-applying a manifest whose
// fields the server rewrites (a Secret's stringData) would otherwise write
// on every apply. next then keeps cur's entries.
func unchanged(next, cur state.Object) bool {
	if equality.Semantic.DeepEqual(next, cur) {
		return true
	}
	nm, cm := next.GetManagedFields(), cur.GetManagedFields()
	if len(nm) == 0 || len(nm) != len(cm) {
		return false
	}
	for i := range nm {
		a, b := nm[i], cm[i]
		a.Time, b.Time = nil, nil
		if !equality.Semantic.DeepEqual(a, b) {
			return false
		}
	}
	next.SetManagedFields(cm)
	if equality.Semantic.DeepEqual(next, cur) {
		return true
	}
	next.SetManagedFields(nm)
	return false
}
