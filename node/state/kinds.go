package state

import (
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Object is a Kubernetes API object as the store keeps it. Objects handed out by
// the store are shared and read-only: callers that want to change one DeepCopy it.
type Object interface {
	metav1.Object
	runtime.Object
}

// protoObject is implemented by every generated k8s.io/api type; the store uses
// protobuf for its log entries and snapshots because it is several times faster
// than JSON to decode on every replica.
type protoObject interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// Kind describes one resource the store holds.
type Kind struct {
	Group, Version, Kind string
	Resource             string // plural, lower case: "configmaps"
	Namespaced           bool
	ShortNames           []string
	Categories           []string
	HasStatus            bool // has a status subresource
	Sealed               bool // encrypted before it enters the raft log or a snapshot
	New                  func() Object
	NewList              func() runtime.Object
	// Unique lists the unique keys an object holds (see unique.go); nil
	// for kinds without any.
	Unique func(Object) []string
}

// Key is the name the store and the log use for a resource: "pods",
// "deployments.apps".
func (k *Kind) Key() string {
	if k.Group == "" {
		return k.Resource
	}
	return k.Resource + "." + k.Group
}

// GroupVersion is the API group/version the kind is served at.
func (k *Kind) GroupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: k.Group, Version: k.Version}
}

// GVK is the group/version/kind of the objects of this kind.
func (k *Kind) GVK() schema.GroupVersionKind { return k.GroupVersion().WithKind(k.Kind) }

// GroupVersionResource identifies the kind's REST collection.
func (k *Kind) GroupVersionResource() schema.GroupVersionResource {
	return k.GroupVersion().WithResource(k.Resource)
}

func kind[T any, PT interface {
	*T
	Object
}, L any, PL interface {
	*L
	runtime.Object
}](group, version, name, resource string, namespaced, status bool, short, categories []string) *Kind {
	return &Kind{
		Group: group, Version: version, Kind: name, Resource: resource,
		Namespaced: namespaced, HasStatus: status, ShortNames: short, Categories: categories,
		New:     func() Object { return PT(new(T)) },
		NewList: func() runtime.Object { return PL(new(L)) },
	}
}

var all = []string{"all"}

// Kinds is every resource Shoal stores, in discovery order.
var Kinds = func() []*Kind {
	ks := []*Kind{
		kind[corev1.Namespace, *corev1.Namespace, corev1.NamespaceList, *corev1.NamespaceList]("", "v1", "Namespace", "namespaces", false, true, []string{"ns"}, nil),
		kind[corev1.Node, *corev1.Node, corev1.NodeList, *corev1.NodeList]("", "v1", "Node", "nodes", false, true, []string{"no"}, nil),
		kind[corev1.Pod, *corev1.Pod, corev1.PodList, *corev1.PodList]("", "v1", "Pod", "pods", true, true, []string{"po"}, all),
		kind[corev1.Service, *corev1.Service, corev1.ServiceList, *corev1.ServiceList]("", "v1", "Service", "services", true, true, []string{"svc"}, all),
		kind[corev1.Endpoints, *corev1.Endpoints, corev1.EndpointsList, *corev1.EndpointsList]("", "v1", "Endpoints", "endpoints", true, false, []string{"ep"}, nil),
		kind[corev1.ConfigMap, *corev1.ConfigMap, corev1.ConfigMapList, *corev1.ConfigMapList]("", "v1", "ConfigMap", "configmaps", true, false, []string{"cm"}, nil),
		kind[corev1.Secret, *corev1.Secret, corev1.SecretList, *corev1.SecretList]("", "v1", "Secret", "secrets", true, false, nil, nil),
		kind[corev1.ServiceAccount, *corev1.ServiceAccount, corev1.ServiceAccountList, *corev1.ServiceAccountList]("", "v1", "ServiceAccount", "serviceaccounts", true, false, []string{"sa"}, nil),
		kind[corev1.Event, *corev1.Event, corev1.EventList, *corev1.EventList]("", "v1", "Event", "events", true, false, []string{"ev"}, nil),
		kind[corev1.PersistentVolume, *corev1.PersistentVolume, corev1.PersistentVolumeList, *corev1.PersistentVolumeList]("", "v1", "PersistentVolume", "persistentvolumes", false, true, []string{"pv"}, nil),
		kind[corev1.PersistentVolumeClaim, *corev1.PersistentVolumeClaim, corev1.PersistentVolumeClaimList, *corev1.PersistentVolumeClaimList]("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, true, []string{"pvc"}, nil),
		kind[appsv1.Deployment, *appsv1.Deployment, appsv1.DeploymentList, *appsv1.DeploymentList]("apps", "v1", "Deployment", "deployments", true, true, []string{"deploy"}, all),
		kind[appsv1.ReplicaSet, *appsv1.ReplicaSet, appsv1.ReplicaSetList, *appsv1.ReplicaSetList]("apps", "v1", "ReplicaSet", "replicasets", true, true, []string{"rs"}, all),
		kind[appsv1.DaemonSet, *appsv1.DaemonSet, appsv1.DaemonSetList, *appsv1.DaemonSetList]("apps", "v1", "DaemonSet", "daemonsets", true, true, []string{"ds"}, all),
		kind[appsv1.StatefulSet, *appsv1.StatefulSet, appsv1.StatefulSetList, *appsv1.StatefulSetList]("apps", "v1", "StatefulSet", "statefulsets", true, true, []string{"sts"}, all),
		kind[batchv1.Job, *batchv1.Job, batchv1.JobList, *batchv1.JobList]("batch", "v1", "Job", "jobs", true, true, nil, all),
		kind[batchv1.CronJob, *batchv1.CronJob, batchv1.CronJobList, *batchv1.CronJobList]("batch", "v1", "CronJob", "cronjobs", true, true, []string{"cj"}, all),
		kind[discoveryv1.EndpointSlice, *discoveryv1.EndpointSlice, discoveryv1.EndpointSliceList, *discoveryv1.EndpointSliceList]("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, false, nil, nil),
		kind[schedulingv1.PriorityClass, *schedulingv1.PriorityClass, schedulingv1.PriorityClassList, *schedulingv1.PriorityClassList]("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, false, []string{"pc"}, nil),
		kind[rbacv1.ClusterRole, *rbacv1.ClusterRole, rbacv1.ClusterRoleList, *rbacv1.ClusterRoleList]("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false, nil, nil),
		kind[rbacv1.ClusterRoleBinding, *rbacv1.ClusterRoleBinding, rbacv1.ClusterRoleBindingList, *rbacv1.ClusterRoleBindingList]("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false, nil, nil),
		kind[rbacv1.Role, *rbacv1.Role, rbacv1.RoleList, *rbacv1.RoleList]("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false, nil, nil),
		kind[rbacv1.RoleBinding, *rbacv1.RoleBinding, rbacv1.RoleBindingList, *rbacv1.RoleBindingList]("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false, nil, nil),
	}
	for _, k := range ks {
		switch k.Resource {
		case "secrets":
			k.Sealed = true
		case "services":
			k.Unique = serviceUniqueKeys
		case "priorityclasses":
			k.Unique = priorityClassUniqueKeys
		}
	}
	return ks
}()

// GlobalDefaultPriorityClassKey is the unique key of the PriorityClass
// marked globalDefault: at most one class holds it, so the FSM refuses a
// second default (CodeTaken) even when two writers race.
const GlobalDefaultPriorityClassKey = "globalDefault=true"

// priorityClassUniqueKeys is GlobalDefaultPriorityClassKey for a
// globalDefault PriorityClass, none for any other.
func priorityClassUniqueKeys(o Object) []string {
	if pc, ok := o.(*schedulingv1.PriorityClass); ok && pc.GlobalDefault {
		return []string{GlobalDefaultPriorityClassKey}
	}
	return nil
}

var kindsByKey = func() map[string]*Kind {
	m := make(map[string]*Kind, len(Kinds))
	for _, k := range Kinds {
		m[k.Key()] = k
	}
	return m
}()

// KindFor returns the kind stored under key ("pods", "deployments.apps").
func KindFor(key string) (*Kind, bool) {
	k, ok := kindsByKey[key]
	return k, ok
}

var kindsByType = func() map[reflect.Type]*Kind {
	m := make(map[reflect.Type]*Kind, len(Kinds))
	for _, k := range Kinds {
		m[reflect.TypeOf(k.New())] = k
	}
	return m
}()

// KindOf returns the kind of a typed object.
func KindOf(obj runtime.Object) (*Kind, bool) {
	k, ok := kindsByType[reflect.TypeOf(obj)]
	return k, ok
}
