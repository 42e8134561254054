package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/validation/field"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/structured-merge-diff/v4/fieldpath"

	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/state"
)

// This file is server-side apply (PATCH with application/apply-patch+yaml)
// and the managedFields of the other writes, done as kube-apiserver does them
// with k8s.io/apimachinery's managedfields: one FieldManager per kind and
// subresource, over the structured-merge-diff schemas client-go embeds (the
// served types' part of them: typeconv.go).
//
// kube-apiserver records an Update entry in managedFields on every create,
// update and patch. That costs a conversion of both objects to
// structured-merge-diff values on every write, and Shoal's write throughput
// is a tracked target, so Shoal records them only when the request names a
// fieldManager or the stored object already has managedFields (an object
// that was ever applied, or written by kubectl, stays consistent). Other
// writes — controllers, client-go without a fieldManager — take the fast path
// and carry the stored managedFields (none) as before. An Update by a
// manager on an object without managedFields records nothing in Kubernetes
// either (its skip-non-applied rule); only creates start the tracking.

type fieldManagerKey struct {
	kind *state.Kind
	sub  string // "", "status" or "scale"
}

// fieldManagers caches one FieldManager per fieldManagerKey: they are
// stateless and safe for concurrent use, as kube-apiserver shares one per
// resource across all requests.
var fieldManagers sync.Map // fieldManagerKey → *managedfields.FieldManager

// fieldManagerFor returns the FieldManager of kind k's resource or subresource.
func fieldManagerFor(k *state.Kind, sub string) (*managedfields.FieldManager, error) {
	key := fieldManagerKey{k, sub}
	if fm, ok := fieldManagers.Load(key); ok {
		return fm.(*managedfields.FieldManager), nil
	}
	tc, err := typeConverter()
	if err != nil {
		return nil, err
	}
	fm, err := managedfields.NewDefaultFieldManager(tc, objectConvertor{}, objectDefaulter{}, scheme,
		k.GVK(), k.GroupVersion(), sub, resetFields(k, sub))
	if err != nil {
		return nil, fmt.Errorf("building the field manager of %s: %w", k.GVK(), err)
	}
	got, _ := fieldManagers.LoadOrStore(key, fm)
	return got.(*managedfields.FieldManager), nil
}

// resetFields are the fields a write through (sub)resource sub never
// changes, so its managers never own them: the status on the main resource of
// a kind with a status subresource (prepareUpdate keeps the stored one), and
// everything but the status on the status subresource (nextObject keeps only
// the status), as Kubernetes' strategies declare them.
func resetFields(k *state.Kind, sub string) map[fieldpath.APIVersion]fieldpath.Filter {
	var reset *fieldpath.Set
	switch {
	case sub == "status":
		reset = fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata"))
	case sub == "" && k.HasStatus:
		reset = fieldpath.NewSet(fieldpath.MakePathOrDie("status"))
	default:
		return nil
	}
	return map[fieldpath.APIVersion]fieldpath.Filter{
		fieldpath.APIVersion(k.GroupVersion().String()): fieldpath.NewExcludeSetFilter(reset),
	}
}

// objectConvertor is the scheme as the field manager uses it. Shoal serves
// one version of each kind, so a typed object that already carries its
// kind is returned as it is: never copied, and never written to (the scheme
// sets the kind of what it converts, and objects read from the store are
// shared by concurrent requests). Unstructured objects (what an apply
// merges) become typed.
type objectConvertor struct{}

func (objectConvertor) Convert(in, out, context any) error { return scheme.Convert(in, out, context) }

func (objectConvertor) ConvertToVersion(in runtime.Object, gv runtime.GroupVersioner) (runtime.Object, error) {
	if _, ok := in.(runtime.Unstructured); ok {
		return scheme.UnsafeConvertToVersion(in, gv) // a new typed object
	}
	if gvk := in.GetObjectKind().GroupVersionKind(); gvk.Kind != "" {
		if want, ok := gv.KindForGroupVersionKinds([]schema.GroupVersionKind{gvk}); ok && want == gvk {
			return in, nil
		}
	}
	return scheme.ConvertToVersion(in, gv) // a copy with its kind set
}

func (objectConvertor) ConvertFieldLabel(gvk schema.GroupVersionKind, label, value string) (string, string, error) {
	return scheme.ConvertFieldLabel(gvk, label, value)
}

// objectDefaulter applies Shoal's defaults to what an apply merged, as
// kube-apiserver's decoder defaults what it decodes.
type objectDefaulter struct{}

func (objectDefaulter) Default(in runtime.Object) {
	if o, ok := in.(state.Object); ok {
		defaults.Apply(o)
	}
}

// checkFieldManager validates the fieldManager parameter of a write as
// kube-apiserver does (at most 128 printable characters); options names the
// options kind in the error ("CreateOptions").
func (rq *request) checkFieldManager(options string) error {
	m := rq.query.Get("fieldManager")
	if m == "" {
		return nil // the common case, without a field.Path allocation
	}
	if errs := metav1validation.ValidateFieldManager(m, field.NewPath("fieldManager")); len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: options}, "", errs)
	}
	return nil
}

// tracksManagedFields reports whether a create (cur nil), update or
// non-apply patch of cur records its manager in managedFields; see the top
// of this file.
func (rq *request) tracksManagedFields(cur state.Object) bool {
	return rq.query.Get("fieldManager") != "" || cur != nil && len(cur.GetManagedFields()) > 0
}

// manager is who a write records in managedFields: the fieldManager
// parameter, else the start of the User-Agent ("kubectl" for
// "kubectl/v1.33.0 (linux/amd64) …"), as kube-apiserver names it.
func (rq *request) manager() string {
	if m := rq.query.Get("fieldManager"); m != "" {
		return m
	}
	ua, _, _ := strings.Cut(rq.r.UserAgent(), "/")
	var b strings.Builder
	for _, r := range ua {
		if !unicode.IsPrint(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > metav1validation.FieldManagerMaxLength {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// recordUpdate records the request's manager in obj's managedFields as an
// Update that turned cur (nil on create) into obj, and returns obj. obj's
// managedFields are what the client sent: the field manager takes them when
// they decode, so a client may edit or reset them (`managedFields: [{}]`),
// and the stored ones otherwise. If the entries cannot be computed they
// are dropped, as kube-apiserver does (UpdateNoErrors).
func (rq *request) recordUpdate(cur, obj state.Object) state.Object {
	fm, err := fieldManagerFor(rq.res.Kind, rq.sub)
	if err != nil {
		obj.SetManagedFields(nil)
		return obj
	}
	if cur == nil {
		cur = rq.res.New()
		cur.GetObjectKind().SetGroupVersionKind(rq.res.GVK())
	}
	out, ok := fm.UpdateNoErrors(cur, obj, rq.manager()).(state.Object)
	if !ok {
		obj.SetManagedFields(nil)
		return obj
	}
	return out
}

// applyOptions validates the parameters of an apply patch as kube-apiserver
// does: fieldManager is required (422), force is true or false (400).
func (rq *request) applyOptions() (force bool, err error) {
	var errs field.ErrorList
	if rq.query.Get("fieldManager") == "" {
		// kubectl sends "kubectl" unless told otherwise; controllers must
		// name themselves.
		errs = append(errs, field.Required(field.NewPath("fieldManager"), "is required for apply patch"))
	}
	errs = append(errs, metav1validation.ValidateFieldManager(rq.query.Get("fieldManager"), field.NewPath("fieldManager"))...)
	if len(errs) > 0 {
		return false, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "PatchOptions"}, "", errs)
	}
	if v := rq.query.Get("force"); v != "" {
		if force, err = strconv.ParseBool(v); err != nil {
			return false, badRequest("force must be true or false, not %q", v)
		}
	}
	return force, nil
}

// checkPatchOptions validates the parameters of a patch that is not an
// apply: force belongs to apply alone.
func (rq *request) checkPatchOptions() error {
	m := rq.query.Get("fieldManager")
	_, force := rq.query["force"]
	if m == "" && !force {
		return nil
	}
	errs := metav1validation.ValidateFieldManager(m, field.NewPath("fieldManager"))
	if force {
		errs = append(errs, field.Forbidden(field.NewPath("force"), "may not be specified for non-apply patch"))
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "PatchOptions"}, "", errs)
	}
	return nil
}

// decodeApplyPatch parses an apply patch: a YAML (or JSON) object of the
// request's kind and version naming the request's object. A duplicate key is
// a 400 with fieldValidation=Strict and a warning with Warn, as in
// kube-apiserver; unknown fields are refused by the schema whatever
// fieldValidation says. A missing name or namespace is the URL's.
func (rq *request) decodeApplyPatch(body []byte, fv fieldValidation) (*unstructured.Unstructured, error) {
	m := map[string]any{}
	if fv == validationIgnore {
		if err := yamlutil.Unmarshal(body, &m); err != nil {
			return nil, badRequest("error decoding YAML: %v", err)
		}
	} else if strictErr := yamlutil.UnmarshalStrict(body, &m); strictErr != nil {
		m = map[string]any{}
		if err := yamlutil.Unmarshal(body, &m); err != nil {
			return nil, badRequest("error decoding YAML: %v", err)
		}
		if fv == validationStrict {
			return nil, badRequest("error strict decoding YAML: %v", strictErr)
		}
		rq.warnings = append(rq.warnings, strictErr.Error())
	}
	if len(m) == 0 {
		return nil, badRequest("the apply patch is empty: it must be an object with apiVersion, kind and metadata")
	}
	u := &unstructured.Unstructured{Object: m}
	want := rq.res.GVK()
	switch got := u.GroupVersionKind(); {
	case u.GetAPIVersion() == "" || got.Kind == "":
		return nil, badRequest("an apply patch must set apiVersion and kind: expected apiVersion %q and kind %q", want.GroupVersion().String(), want.Kind)
	case got.Kind != want.Kind:
		return nil, badRequest("the kind in the apply patch (%s) does not match the expected kind (%s)", got.Kind, want.Kind)
	case got.GroupVersion() != want.GroupVersion():
		return nil, badRequest("the API version in the apply patch (%s) does not match the expected API version (%s)", u.GetAPIVersion(), want.GroupVersion().String())
	}
	if _, ok := m["metadata"].(map[string]any); !ok && m["metadata"] != nil {
		return nil, badRequest("metadata in the apply patch must be an object")
	}
	switch name := u.GetName(); {
	case name == "":
		u.SetName(rq.name)
	case name != rq.name:
		return nil, badRequest("the name of the object (%s) does not match the name on the URL (%s)", name, rq.name)
	}
	switch ns := u.GetNamespace(); {
	case !rq.res.Namespaced:
		unstructured.RemoveNestedField(m, "metadata", "namespace")
	case ns == "":
		u.SetNamespace(rq.namespace)
	case ns != rq.namespace:
		return nil, badRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return u, nil
}

// applyTo merges patch into cur for manager and returns the result with its
// managedFields, or the conflicts (409 with a cause per field, which kubectl
// prints with its --force-conflicts advice).
func applyTo(fm *managedfields.FieldManager, cur state.Object, patch *unstructured.Unstructured, manager string, force bool) (out state.Object, err error) {
	defer func() {
		if r := recover(); r != nil { // third-party merge code: never take the server down
			out, err = nil, badRequest("the apply patch could not be applied: %v", r)
		}
	}()
	obj, err := fm.Apply(cur, patch, manager, force)
	if err != nil {
		var se *apierrors.StatusError
		if errors.As(err, &se) {
			return nil, se
		}
		// The stored object and its managedFields are the server's own and
		// always convert, so what fails is the patch: a field the kind does
		// not have, a value of the wrong type, a duplicate list key.
		// (kube-apiserver answers these with a 500.)
		return nil, badRequest("the apply patch is not a valid %s: %v", cur.GetObjectKind().GroupVersionKind().Kind, err)
	}
	o, ok := obj.(state.Object)
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("apply returned a %T", obj))
	}
	return o, nil
}

// applyPatch serves server-side apply: patch merges into the stored object
// (or a new one: apply creates) under the request's field manager, then goes
// the way of every update or create — defaults, admission, validation, an
// optimistic commit through the proposer, dry run.
func (s *Server) applyPatch(rq *request, body []byte, fv fieldValidation) {
	if rq.sub == "scale" {
		rq.fail(unsupportedMediaType("server-side apply to the scale subresource is not supported by Shoal: apply spec.replicas on the object itself, or patch the scale with application/merge-patch+json"))
		return
	}
	force, err := rq.applyOptions()
	if err != nil {
		rq.fail(err)
		return
	}
	patch, err := rq.decodeApplyPatch(body, fv)
	if err != nil {
		rq.fail(err)
		return
	}
	fm, err := fieldManagerFor(rq.res.Kind, rq.sub)
	if err != nil {
		rq.fail(apierrors.NewInternalError(err))
		return
	}
	manager := rq.query.Get("fieldManager")
	for attempt := 0; ; attempt++ {
		retry := attempt+1 < maxUpdateAttempts
		if _, ok := s.store.Get(rq.res.Key(), rq.namespace, rq.name); !ok && rq.sub == "" {
			out, err := s.applyCreate(rq, fm, patch, manager, force)
			if err != nil {
				if retry && state.IsCode(err, state.CodeAlreadyExists) {
					continue // created meanwhile: apply to it
				}
				rq.fail(err)
				return
			}
			rq.writeObject(http.StatusCreated, out)
			return
		}
		out, code, err := s.guaranteedUpdate(rq, func(cur state.Object) (state.Object, error) {
			obj, err := applyTo(fm, cur, patch, manager, force)
			if err != nil {
				return nil, err
			}
			if err := preconditionRV(rq, obj, cur); err != nil {
				return nil, err
			}
			return s.nextObject(rq, cur, obj, true)
		})
		if err != nil {
			if retry && rq.sub == "" && (apierrors.IsNotFound(err) || state.IsCode(err, state.CodeNotFound)) {
				continue // deleted meanwhile: create it
			}
			rq.fail(err)
			return
		}
		rq.writeObject(code, out)
		return
	}
}

// applyCreate creates the object an apply names when it does not exist: the
// patch merged into an empty object, then the create path.
func (s *Server) applyCreate(rq *request, fm *managedfields.FieldManager, patch *unstructured.Unstructured, manager string, force bool) (state.Object, error) {
	// Preconditions on an object that does not exist fail, as in Kubernetes.
	if patch.GetResourceVersion() != "" {
		return nil, apierrors.NewConflict(rq.res.groupResource(), rq.name,
			errors.New("the apply patch sets metadata.resourceVersion but the object does not exist"))
	}
	if uid := patch.GetUID(); uid != "" {
		return nil, apierrors.NewConflict(rq.res.groupResource(), rq.name,
			fmt.Errorf("uid mismatch: the provided object specified uid %s, and no existing object was found", uid))
	}
	empty := rq.res.New()
	empty.GetObjectKind().SetGroupVersionKind(rq.res.GVK())
	obj, err := applyTo(fm, empty, patch, manager, force)
	if err != nil {
		return nil, err
	}
	return s.createObject(rq, obj, true)
}
