package apiserver

import (
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateRBACName checks an RBAC object's name as Kubernetes does: any
// path segment ("system:discovery" is a valid name).
func validateRBACName(name string, _ bool) []string { return path.IsValidPathSegmentName(name) }

// validateRules checks the rules of a Role (namespaced) or ClusterRole.
func validateRules(rules []rbacv1.PolicyRule, namespaced bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		rp := p.Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(rp.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(rp.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(rp.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(rp.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(rp.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

// validateAggregationRule checks a ClusterRole's aggregation rule as
// Kubernetes does: at least one selector, each a valid label selector.
func validateAggregationRule(agg *rbacv1.AggregationRule) field.ErrorList {
	if agg == nil {
		return nil
	}
	p := field.NewPath("aggregationRule", "clusterRoleSelectors")
	if len(agg.ClusterRoleSelectors) == 0 {
		return field.ErrorList{field.Required(p, "at least one clusterRoleSelector required if aggregationRule is non-nil")}
	}
	var errs field.ErrorList
	for i := range agg.ClusterRoleSelectors {
		errs = append(errs, metavalidation.ValidateLabelSelector(&agg.ClusterRoleSelectors[i], metavalidation.LabelSelectorValidationOptions{}, p.Index(i))...)
	}
	return errs
}

// validateBinding checks a RoleBinding (namespaced) or ClusterRoleBinding;
// old is the stored binding on update: its roleRef cannot change.
func validateBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool, oldRef *rbacv1.RoleRef) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	kinds := []string{"ClusterRole"}
	if namespaced {
		kinds = []string{"Role", "ClusterRole"}
	}
	if !contains(kinds, ref.Kind) {
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, kinds))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	} else {
		for _, msg := range path.IsValidPathSegmentName(ref.Name) {
			errs = append(errs, field.Invalid(rp.Child("name"), ref.Name, msg))
		}
	}
	if oldRef != nil && !equality.Semantic.DeepEqual(ref, *oldRef) {
		errs = append(errs, field.Invalid(rp, ref, "cannot change roleRef"))
	}
	for i, s := range subjects {
		sp := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(sp.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(sp.Child("namespace"), ""))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
			}
		default:
			errs = append(errs, field.NotSupported(sp.Child("kind"), s.Kind, []string{rbacv1.ServiceAccountKind, rbacv1.UserKind, rbacv1.GroupKind}))
		}
	}
	return errs
}

// validateRBAC checks the RBAC kinds; ok is false for other objects.
func validateRBAC(obj, old any) (errs field.ErrorList, ok bool) {
	switch o := obj.(type) {
	case *rbacv1.Role:
		return validateRules(o.Rules, true, field.NewPath("rules")), true
	case *rbacv1.ClusterRole:
		return append(validateRules(o.Rules, false, field.NewPath("rules")), validateAggregationRule(o.AggregationRule)...), true
	case *rbacv1.RoleBinding:
		var oldRef *rbacv1.RoleRef
		if old, ok := old.(*rbacv1.RoleBinding); ok {
			oldRef = &old.RoleRef
		}
		return validateBinding(o.RoleRef, o.Subjects, true, oldRef), true
	case *rbacv1.ClusterRoleBinding:
		var oldRef *rbacv1.RoleRef
		if old, ok := old.(*rbacv1.ClusterRoleBinding); ok {
			oldRef = &old.RoleRef
		}
		return validateBinding(o.RoleRef, o.Subjects, false, oldRef), true
	}
	return nil, false
}
