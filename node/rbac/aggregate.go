package rbac

import (
	"fmt"
	"sort"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels the bootstrap policy aggregates by: a ClusterRole carrying one of
// them lends its rules to admin, edit or view (and so to the roles that
// aggregate those).
const (
	LabelAggregateToAdmin = "rbac.authorization.k8s.io/aggregate-to-admin"
	LabelAggregateToEdit  = "rbac.authorization.k8s.io/aggregate-to-edit"
	LabelAggregateToView  = "rbac.authorization.k8s.io/aggregate-to-view"
)

// AggregatedRules returns the rules of the ClusterRole named name with
// aggregation rule agg, as Kubernetes' clusterrole-aggregation controller
// computes them: for each selector in turn, every rule of every other
// ClusterRole whose labels it matches, in the order of the roles' names,
// each rule once. (An empty selector matches every role, as it does there.)
// A selector that does not parse is an error; validation refuses them.
func AggregatedRules(name string, agg *rbacv1.AggregationRule, roles []*rbacv1.ClusterRole) ([]rbacv1.PolicyRule, error) {
	sorted := append([]*rbacv1.ClusterRole(nil), roles...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	out := []rbacv1.PolicyRule{}
	for i := range agg.ClusterRoleSelectors {
		sel, err := metav1.LabelSelectorAsSelector(&agg.ClusterRoleSelectors[i])
		if err != nil {
			return nil, fmt.Errorf("clusterRoleSelectors[%d]: %w", i, err)
		}
		for _, r := range sorted {
			if r.Name == name || !sel.Matches(labels.Set(r.Labels)) {
				continue
			}
			for _, rule := range r.Rules {
				if !hasRule(out, rule) {
					out = append(out, rule)
				}
			}
		}
	}
	return out, nil
}

func hasRule(rules []rbacv1.PolicyRule, r rbacv1.PolicyRule) bool {
	for _, have := range rules {
		if equality.Semantic.DeepEqual(have, r) {
			return true
		}
	}
	return false
}

// aggregateAll fills in the rules of every aggregated role in roles, until
// nothing changes (aggregated roles may select each other, as edit selects
// view and admin selects edit).
func aggregateAll(roles []*rbacv1.ClusterRole) {
	for changed := true; changed; {
		changed = false
		for _, r := range roles {
			if r.AggregationRule == nil {
				continue
			}
			rules, err := AggregatedRules(r.Name, r.AggregationRule, roles)
			if err != nil {
				panic("bootstrap aggregation rule: " + err.Error()) // static input
			}
			if !equality.Semantic.DeepEqual(rules, r.Rules) {
				r.Rules, changed = rules, true
			}
		}
	}
}
