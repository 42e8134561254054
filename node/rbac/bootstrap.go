package rbac

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	readVerbs = []string{"get", "list", "watch"}
	allVerbs  = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)

// The namespaced workload resources the user-facing roles cover.
var (
	coreWorkloads = []string{"pods", "services", "endpoints", "configmaps", "persistentvolumeclaims", "serviceaccounts"}
	appsWorkloads = []string{"deployments", "deployments/scale", "replicasets", "replicasets/scale",
		"statefulsets", "statefulsets/scale", "daemonsets"}
	batchWorkloads = []string{"jobs", "cronjobs"}
	// What a pod's user does to it besides the object itself.
	podVerbs = []string{"pods/log", "pods/exec", "pods/attach", "pods/portforward"}
)

func rule(verbs []string, group string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, APIGroups: []string{group}, Resources: resources}
}

// editRules are what edit grants: change every namespaced workload object,
// read and write Secrets, run commands in pods; read the rest.
func editRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		rule(allVerbs, "", append(append([]string{}, coreWorkloads...), "secrets")...),
		rule([]string{"get", "create"}, "", podVerbs...),
		rule(readVerbs, "", "pods/status", "services/status", "events", "namespaces", "namespaces/status", "persistentvolumeclaims/status"),
		rule(allVerbs, "apps", appsWorkloads...),
		rule(readVerbs, "apps", "deployments/status", "replicasets/status", "statefulsets/status", "daemonsets/status"),
		rule(allVerbs, "batch", batchWorkloads...),
		rule(readVerbs, "batch", "jobs/status", "cronjobs/status"),
		rule(readVerbs, "discovery.k8s.io", "endpointslices"),
	}
}

// Bootstrap returns the built-in ClusterRoles and ClusterRoleBindings every
// cluster has, as Kubernetes' bootstrap policy defines them (with the rules
// written out rather than aggregated):
//   - cluster-admin: everything; bound to the group system:masters.
//   - admin: edit, plus Roles and RoleBindings (meant for a RoleBinding).
//   - edit: change the namespaced workload objects and Secrets.
//   - view: read them, except Secrets.
//   - system:discovery and system:basic-user: discovery, health, version,
//     OpenAPI, and asking what one may do; bound to system:authenticated.
func Bootstrap() ([]*rbacv1.ClusterRole, []*rbacv1.ClusterRoleBinding) {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"},
			Annotations: map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "true"},
		}
	}
	role := func(name string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		return &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: meta(name), Rules: rules,
		}
	}
	view := []rbacv1.PolicyRule{
		rule(readVerbs, "", append(append([]string{}, coreWorkloads...), "pods/status", "pods/log", "services/status",
			"events", "namespaces", "namespaces/status", "persistentvolumeclaims/status")...),
		rule(readVerbs, "apps", append(append([]string{}, appsWorkloads...), "deployments/status", "replicasets/status",
			"statefulsets/status", "daemonsets/status")...),
		rule(readVerbs, "batch", "jobs", "cronjobs", "jobs/status", "cronjobs/status"),
		rule(readVerbs, "discovery.k8s.io", "endpointslices"),
	}
	admin := append(editRules(), rule(allVerbs, "rbac.authorization.k8s.io", "roles", "rolebindings"))
	roles := []*rbacv1.ClusterRole{
		role("cluster-admin",
			rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
			rbacv1.PolicyRule{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}),
		role("admin", admin...),
		role("edit", editRules()...),
		role("view", view...),
		role("system:discovery", rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{
			"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/",
			"/openapi", "/openapi/*"}}),
		role("system:basic-user",
			rule([]string{"create"}, "authorization.k8s.io", "selfsubjectaccessreviews", "selfsubjectrulesreviews"),
			rule([]string{"create"}, "authentication.k8s.io", "selfsubjectreviews")),
	}
	bind := func(name, role, group string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: meta(name),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: group}},
		}
	}
	bindings := []*rbacv1.ClusterRoleBinding{
		bind("cluster-admin", "cluster-admin", GroupMasters),
		bind("system:discovery", "system:discovery", GroupAuthenticated),
		bind("system:basic-user", "system:basic-user", GroupAuthenticated),
	}
	return roles, bindings
}
