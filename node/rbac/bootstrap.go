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

// viewRules are what view grants: read the namespaced workload objects,
// except Secrets.
func viewRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		rule(readVerbs, "", append(append([]string{}, coreWorkloads...), "pods/status", "pods/log", "services/status",
			"events", "namespaces", "namespaces/status", "persistentvolumeclaims/status")...),
		rule(readVerbs, "apps", append(append([]string{}, appsWorkloads...), "deployments/status", "replicasets/status",
			"statefulsets/status", "daemonsets/status")...),
		rule(readVerbs, "batch", "jobs", "cronjobs", "jobs/status", "cronjobs/status"),
		rule(readVerbs, "discovery.k8s.io", "endpointslices"),
	}
}

// editRules are what edit adds to view: change every namespaced workload
// object, read and write Secrets, run commands in pods, act as the
// namespace's service accounts.
func editRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		rule(allVerbs, "", append(append([]string{}, coreWorkloads...), "secrets")...),
		rule([]string{"get", "create"}, "", podVerbs...),
		rule([]string{"impersonate"}, "", "serviceaccounts"),
		rule(allVerbs, "apps", appsWorkloads...),
		rule(allVerbs, "batch", batchWorkloads...),
	}
}

// Bootstrap returns the built-in ClusterRoles and ClusterRoleBindings every
// cluster has, as Kubernetes' bootstrap policy defines them:
//   - cluster-admin: everything; bound to the group system:masters.
//   - admin, edit, view: aggregated roles (meant for RoleBindings). view
//     gathers the ClusterRoles labelled aggregate-to-view, edit those
//     labelled aggregate-to-edit (view is one), admin those labelled
//     aggregate-to-admin (edit is one); their base rules live in
//     system:aggregate-to-view, -edit and -admin. A user's ClusterRole with
//     one of these labels extends them (for a custom resource, say). The
//     rules come filled in, so a new cluster needs no aggregation pass
//     before they work.
//   - system:discovery and system:basic-user: discovery, health, version,
//     OpenAPI, and asking what one may do; bound to system:authenticated.
func Bootstrap() ([]*rbacv1.ClusterRole, []*rbacv1.ClusterRoleBinding) {
	meta := func(name string, aggregateTo ...string) metav1.ObjectMeta {
		m := metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"},
			Annotations: map[string]string{AnnotationAutoupdate: "true"},
		}
		for _, l := range aggregateTo {
			m.Labels[l] = "true"
		}
		return m
	}
	role := func(name string, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
		return &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: meta(name), Rules: rules,
		}
	}
	// part is a role whose rules others gather: labelled aggregateTo.
	part := func(name string, rules []rbacv1.PolicyRule, aggregateTo ...string) *rbacv1.ClusterRole {
		r := role(name, rules...)
		r.ObjectMeta = meta(name, aggregateTo...)
		return r
	}
	// aggregated gathers the roles labelled selects (and is itself a part
	// of those labelled aggregateTo).
	aggregated := func(name, selects string, aggregateTo ...string) *rbacv1.ClusterRole {
		r := part(name, nil, aggregateTo...)
		r.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{
			{MatchLabels: map[string]string{selects: "true"}}}}
		return r
	}
	roles := []*rbacv1.ClusterRole{
		role("cluster-admin",
			rbacv1.PolicyRule{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
			rbacv1.PolicyRule{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}),
		aggregated("admin", LabelAggregateToAdmin),
		aggregated("edit", LabelAggregateToEdit, LabelAggregateToAdmin),
		aggregated("view", LabelAggregateToView, LabelAggregateToEdit),
		part("system:aggregate-to-admin", []rbacv1.PolicyRule{rule(allVerbs, "rbac.authorization.k8s.io", "roles", "rolebindings")},
			LabelAggregateToAdmin),
		part("system:aggregate-to-edit", editRules(), LabelAggregateToEdit),
		part("system:aggregate-to-view", viewRules(), LabelAggregateToView),
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
	aggregateAll(roles)
	bindings := []*rbacv1.ClusterRoleBinding{
		bind("cluster-admin", "cluster-admin", GroupMasters),
		bind("system:discovery", "system:discovery", GroupAuthenticated),
		bind("system:basic-user", "system:basic-user", GroupAuthenticated),
	}
	return roles, bindings
}
