package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-dev/shoal/node/state"
)

// filter is a list or watch's label and field selection.
type filter struct {
	res    *resource
	labels labels.Selector // nil = everything
	fields fields.Selector // nil = everything
}

// commonFields are the field selectors every kind supports.
var commonFields = []string{"metadata.name", "metadata.namespace"}

// kindFields are the extra field selectors per resource, as in Kubernetes.
var kindFields = map[string][]string{
	"pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
		"spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
	"events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
		"involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
		"reason", "reportingComponent", "source", "type"},
	"secrets":                {"type"},
	"namespaces":             {"status.phase"},
	"nodes":                  {"spec.unschedulable"},
	"replicasets":            {"status.replicas"},
	"jobs":                   {"status.successful"},
	"services":               {"spec.clusterIP", "spec.type"},
	"persistentvolumeclaims": {"spec.volumeName"},
}

func (rq *request) listFilter() (*filter, error) {
	f := &filter{res: rq.res}
	if v := rq.query.Get("labelSelector"); v != "" {
		sel, err := labels.Parse(v)
		if err != nil {
			return nil, badRequest("unable to parse requirement: %v", err)
		}
		if !sel.Empty() {
			f.labels = sel
		}
	}
	if v := rq.query.Get("fieldSelector"); v != "" {
		sel, err := fields.ParseSelector(v)
		if err != nil {
			return nil, badRequest("invalid field selector: %v", err)
		}
		allowed := kindFields[rq.res.Resource]
		for _, req := range sel.Requirements() {
			if !contains(commonFields, req.Field) && !contains(allowed, req.Field) {
				return nil, badRequest("field label not supported: %s", req.Field)
			}
		}
		if !sel.Empty() {
			f.fields = sel
		}
	}
	return f, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (f *filter) empty() bool { return f.labels == nil && f.fields == nil }

func (f *filter) matches(o state.Object) bool {
	if f.labels != nil && !f.labels.Matches(labels.Set(o.GetLabels())) {
		return false
	}
	if f.fields != nil && !f.fields.Matches(fieldSet(o)) {
		return false
	}
	return true
}

// fieldSet is what field selectors match an object against.
func fieldSet(o state.Object) fields.Set {
	s := fields.Set{"metadata.name": o.GetName(), "metadata.namespace": o.GetNamespace()}
	switch t := o.(type) {
	case *corev1.Pod:
		s["spec.nodeName"] = t.Spec.NodeName
		s["spec.restartPolicy"] = string(t.Spec.RestartPolicy)
		s["spec.schedulerName"] = t.Spec.SchedulerName
		s["spec.serviceAccountName"] = t.Spec.ServiceAccountName
		s["spec.hostNetwork"] = strconv.FormatBool(t.Spec.HostNetwork)
		s["status.phase"] = string(t.Status.Phase)
		s["status.podIP"] = t.Status.PodIP
		s["status.nominatedNodeName"] = t.Status.NominatedNodeName
	case *corev1.Event:
		s["involvedObject.kind"] = t.InvolvedObject.Kind
		s["involvedObject.namespace"] = t.InvolvedObject.Namespace
		s["involvedObject.name"] = t.InvolvedObject.Name
		s["involvedObject.uid"] = string(t.InvolvedObject.UID)
		s["involvedObject.apiVersion"] = t.InvolvedObject.APIVersion
		s["involvedObject.resourceVersion"] = t.InvolvedObject.ResourceVersion
		s["involvedObject.fieldPath"] = t.InvolvedObject.FieldPath
		s["reason"] = t.Reason
		s["reportingComponent"] = t.ReportingController
		s["source"] = t.Source.Component
		s["type"] = t.Type
	case *corev1.Secret:
		s["type"] = string(t.Type)
	case *corev1.Namespace:
		s["status.phase"] = string(t.Status.Phase)
	case *corev1.Node:
		s["spec.unschedulable"] = strconv.FormatBool(t.Spec.Unschedulable)
	case *corev1.Service:
		s["spec.clusterIP"] = t.Spec.ClusterIP
		s["spec.type"] = string(t.Spec.Type)
	case *corev1.PersistentVolumeClaim:
		s["spec.volumeName"] = t.Spec.VolumeName
	case *appsv1.ReplicaSet:
		s["status.replicas"] = strconv.Itoa(int(t.Status.Replicas))
	case *batchv1.Job:
		s["status.successful"] = strconv.Itoa(int(t.Status.Succeeded))
	}
	return s
}

// continueToken is the opaque list continuation, shaped like Kubernetes'.
type continueToken struct {
	APIVersion string `json:"v"`
	RV         uint64 `json:"rv"`
	Start      string `json:"start"` // "namespace/name" of the last item returned
}

func encodeContinue(rv uint64, last state.Object) string {
	b, _ := json.Marshal(continueToken{APIVersion: "meta.k8s.io/v1", RV: rv, Start: last.GetNamespace() + "/" + last.GetName()})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (*continueToken, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, badContinue(err)
	}
	var t continueToken
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, badContinue(err)
	}
	if t.APIVersion != "meta.k8s.io/v1" || t.RV == 0 || !strings.Contains(t.Start, "/") {
		return nil, badContinue(fmt.Errorf("unrecognized token"))
	}
	return &t, nil
}

func badContinue(err error) error {
	return apierrors.NewBadRequest(fmt.Sprintf("continue key is not valid: %v", err))
}

// after returns the index of the first object (sorted by namespace, name) that
// comes after the token's start.
func (t *continueToken) after(objs []state.Object) int {
	ns, name, _ := strings.Cut(t.Start, "/")
	return sort.Search(len(objs), func(i int) bool {
		o := objs[i]
		if o.GetNamespace() != ns {
			return o.GetNamespace() > ns
		}
		return o.GetName() > name
	})
}
