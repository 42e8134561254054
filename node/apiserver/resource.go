package apiserver

import (
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/shoal-dev/shoal/node/state"
)

// resource is a state.Kind plus what the API needs to serve it.
type resource struct {
	*state.Kind
	singular string
	// scale: the kind has a scale subresource (spec.replicas).
	scale bool
	// hasSpec: the kind has a spec; it gets metadata.generation.
	hasSpec bool
	// returnDeleted: an immediate delete answers with the object instead of a
	// Status, as Kubernetes does for these kinds.
	returnDeleted bool
	// statusField is the index of the Status field, -1 if none.
	statusField int
	// specFields are the indices of every field but TypeMeta, ObjectMeta and
	// Status: what a change of bumps metadata.generation.
	specFields []int
}

func newResource(k *state.Kind) *resource {
	r := &resource{Kind: k, singular: strings.ToLower(k.Kind), statusField: -1}
	switch k.Resource {
	case "deployments", "replicasets", "statefulsets":
		r.scale = true
	case "pods", "services", "namespaces", "nodes", "persistentvolumes":
		r.returnDeleted = true
	}
	t := reflect.TypeOf(k.New()).Elem()
	for i := 0; i < t.NumField(); i++ {
		switch f := t.Field(i); f.Name {
		case "TypeMeta", "ObjectMeta":
		case "Status":
			r.statusField = i
		default:
			if f.Name == "Spec" {
				r.hasSpec = true
			}
			r.specFields = append(r.specFields, i)
		}
	}
	return r
}

func (r *resource) groupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Resource}
}

// copyStatus sets dst's status to src's (both of this kind). The status is
// shared, not copied: callers never modify either afterwards.
func (r *resource) copyStatus(dst, src state.Object) {
	if r.statusField < 0 {
		return
	}
	reflect.ValueOf(dst).Elem().Field(r.statusField).Set(reflect.ValueOf(src).Elem().Field(r.statusField))
}

// clearStatus resets dst's status to its zero value.
func (r *resource) clearStatus(dst state.Object) {
	if r.statusField < 0 {
		return
	}
	f := reflect.ValueOf(dst).Elem().Field(r.statusField)
	f.Set(reflect.Zero(f.Type()))
}

// specEqual reports whether a and b agree outside metadata and status.
func (r *resource) specEqual(a, b state.Object) bool {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for _, i := range r.specFields {
		if !equality.Semantic.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return false
		}
	}
	return true
}
