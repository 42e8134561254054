package rbac

import (
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationAutoupdate marks a bootstrap role or binding the cluster keeps
// up to date; "false" (set by an administrator) leaves it as it is.
const AnnotationAutoupdate = "rbac.authorization.kubernetes.io/autoupdate"

// ReconcileClusterRole brings a stored bootstrap ClusterRole up to what
// this version's bootstrap policy expects, as kube-apiserver does at start:
// missing labels and annotations are added; an aggregated role gains the
// expected selectors it lacks (its rules are the aggregation controller's);
// any other role gains the expected rules it lacks. Nothing is removed, so
// what an administrator added stays. It returns the updated copy, or false
// when nothing is missing or the role says autoupdate "false".
func ReconcileClusterRole(stored, want *rbacv1.ClusterRole) (*rbacv1.ClusterRole, bool) {
	if stored.Annotations[AnnotationAutoupdate] == "false" {
		return nil, false
	}
	out := stored.DeepCopy()
	changed := mergeMissing(&out.Labels, want.Labels)
	changed = mergeMissing(&out.Annotations, want.Annotations) || changed
	if want.AggregationRule != nil {
		if out.AggregationRule == nil {
			out.AggregationRule = &rbacv1.AggregationRule{}
		}
		for _, sel := range want.AggregationRule.ClusterRoleSelectors {
			if !slices.ContainsFunc(out.AggregationRule.ClusterRoleSelectors, func(have metav1.LabelSelector) bool {
				return equality.Semantic.DeepEqual(have, sel)
			}) {
				out.AggregationRule.ClusterRoleSelectors = append(out.AggregationRule.ClusterRoleSelectors, sel)
				changed = true
			}
		}
	} else {
		for _, r := range want.Rules {
			if !hasRule(out.Rules, r) {
				out.Rules = append(out.Rules, r)
				changed = true
			}
		}
	}
	return out, changed
}

// ReconcileClusterRoleBinding adds the subjects, labels and annotations a
// stored bootstrap ClusterRoleBinding lacks (its roleRef cannot change).
func ReconcileClusterRoleBinding(stored, want *rbacv1.ClusterRoleBinding) (*rbacv1.ClusterRoleBinding, bool) {
	if stored.Annotations[AnnotationAutoupdate] == "false" {
		return nil, false
	}
	out := stored.DeepCopy()
	changed := mergeMissing(&out.Labels, want.Labels)
	changed = mergeMissing(&out.Annotations, want.Annotations) || changed
	for _, s := range want.Subjects {
		if !slices.Contains(out.Subjects, s) {
			out.Subjects = append(out.Subjects, s)
			changed = true
		}
	}
	return out, changed
}

// mergeMissing adds the keys of want that m lacks; it reports whether it
// added any.
func mergeMissing(m *map[string]string, want map[string]string) bool {
	changed := false
	for k, v := range want {
		if _, ok := (*m)[k]; ok {
			continue
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k], changed = v, true
	}
	return changed
}
