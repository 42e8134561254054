// Package rbac decides requests the way Kubernetes' RBAC authorizer does:
// from the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings of
// rbac.authorization.k8s.io/v1 in the local replica. It also holds the
// built-in policy every cluster starts with (see Bootstrap).
//
// A request is allowed when some rule of a role bound to the user, to one
// of the user's groups (every authenticated user is also in
// system:authenticated) or to the user's service account grants it: a
// ClusterRoleBinding grants its ClusterRole everywhere, a RoleBinding grants
// its Role or ClusterRole in the binding's namespace only. Nothing denies.
package rbac

import (
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// Store keys of the RBAC kinds.
const (
	ResourceRoles               = "roles.rbac.authorization.k8s.io"
	ResourceClusterRoles        = "clusterroles.rbac.authorization.k8s.io"
	ResourceRoleBindings        = "rolebindings.rbac.authorization.k8s.io"
	ResourceClusterRoleBindings = "clusterrolebindings.rbac.authorization.k8s.io"
)

// Well-known groups.
const (
	GroupMasters       = "system:masters"
	GroupNodes         = "system:nodes"
	GroupAuthenticated = "system:authenticated"
)

// Attributes describe one request.
type Attributes struct {
	User   string
	Groups []string

	Verb string
	// ResourceRequest: an API object request (the fields below); otherwise
	// a request for Path (/version, /healthz, /openapi/v3, …).
	ResourceRequest bool
	Namespace       string
	APIGroup        string
	Resource        string
	Subresource     string
	Name            string
	Path            string
}

// Reader is what the authorizer reads: the local replica.
type Reader interface {
	Get(resource, namespace, name string) (state.Object, bool)
	List(resource, namespace string) ([]state.Object, uint64)
}

// Authorizer decides requests from the RBAC objects in a Reader.
type Authorizer struct {
	r Reader
}

// NewAuthorizer returns an authorizer reading r.
func NewAuthorizer(r Reader) *Authorizer { return &Authorizer{r: r} }

// Allowed reports whether a is allowed (see Describe for the refusal).
func (az *Authorizer) Allowed(a Attributes) bool {
	if slices.Contains(a.Groups, GroupMasters) {
		return true // as Kubernetes' privileged-group authorizer
	}
	if slices.Contains(a.Groups, GroupNodes) {
		// The nodes run pods and report on them; Kubernetes restricts them
		// with its Node authorizer, Shoal trusts its own members.
		return true
	}
	return az.grants(a)
}

// grants walks the bindings that name the user and checks their roles'
// rules until one allows a.
func (az *Authorizer) grants(a Attributes) bool {
	crbs, _ := az.r.List(ResourceClusterRoleBindings, "")
	for _, o := range crbs {
		b := o.(*rbacv1.ClusterRoleBinding)
		if appliesTo(b.Subjects, a, "") && az.roleAllows(b.RoleRef, "", a) {
			return true
		}
	}
	if !a.ResourceRequest || a.Namespace == "" {
		return false
	}
	rbs, _ := az.r.List(ResourceRoleBindings, a.Namespace)
	for _, o := range rbs {
		b := o.(*rbacv1.RoleBinding)
		if appliesTo(b.Subjects, a, b.Namespace) && az.roleAllows(b.RoleRef, b.Namespace, a) {
			return true
		}
	}
	return false
}

// roleAllows reports whether the role ref points at (a Role in namespace,
// or a ClusterRole) has a rule allowing a.
func (az *Authorizer) roleAllows(ref rbacv1.RoleRef, namespace string, a Attributes) bool {
	return slices.ContainsFunc(az.rulesOf(ref, namespace), func(r rbacv1.PolicyRule) bool { return RuleAllows(a, r) })
}

// rulesOf returns the rules of the role ref points at: a Role in namespace
// (none outside a namespace) or a ClusterRole; none when it is missing.
func (az *Authorizer) rulesOf(ref rbacv1.RoleRef, namespace string) []rbacv1.PolicyRule {
	switch ref.Kind {
	case "ClusterRole":
		if o, ok := az.r.Get(ResourceClusterRoles, "", ref.Name); ok {
			return o.(*rbacv1.ClusterRole).Rules
		}
	case "Role":
		if namespace == "" {
			return nil
		}
		if o, ok := az.r.Get(ResourceRoles, namespace, ref.Name); ok {
			return o.(*rbacv1.Role).Rules
		}
	}
	return nil
}

// Rules returns the rules that apply to the user in namespace ("" for the
// cluster-wide ones only), for SelfSubjectRulesReview.
func (az *Authorizer) Rules(a Attributes, namespace string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	crbs, _ := az.r.List(ResourceClusterRoleBindings, "")
	for _, o := range crbs {
		if b := o.(*rbacv1.ClusterRoleBinding); appliesTo(b.Subjects, a, "") {
			out = append(out, az.rulesOf(b.RoleRef, "")...)
		}
	}
	if namespace != "" {
		rbs, _ := az.r.List(ResourceRoleBindings, namespace)
		for _, o := range rbs {
			if b := o.(*rbacv1.RoleBinding); appliesTo(b.Subjects, a, namespace) {
				out = append(out, az.rulesOf(b.RoleRef, namespace)...)
			}
		}
	}
	return out
}

// appliesTo reports whether one of subjects is the requesting user;
// bindingNS is the namespace of a RoleBinding ("" for a cluster binding),
// the default namespace of its ServiceAccount subjects.
func appliesTo(subjects []rbacv1.Subject, a Attributes, bindingNS string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if s.Name == a.User {
				return true
			}
		case rbacv1.GroupKind:
			if s.Name == GroupAuthenticated || slices.Contains(a.Groups, s.Name) {
				return true
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNS
			}
			if ns != "" && a.User == ServiceAccountUser(ns, s.Name) {
				return true
			}
		}
	}
	return false
}

// ServiceAccountUser is the user name of a service account.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// RuleAllows reports whether rule r grants a.
func RuleAllows(a Attributes, r rbacv1.PolicyRule) bool {
	if !matches(r.Verbs, a.Verb) {
		return false
	}
	if !a.ResourceRequest {
		return nonResourceURLMatches(r.NonResourceURLs, a.Path)
	}
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	return matches(r.APIGroups, a.APIGroup) &&
		resourceMatches(r.Resources, resource, a.Subresource) &&
		(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, a.Name))
}

// matches: the list holds want or "*".
func matches(list []string, want string) bool {
	return slices.Contains(list, rbacv1.VerbAll) || slices.Contains(list, want)
}

// resourceMatches handles "*", "pods/log" and "*/scale".
func resourceMatches(list []string, combined, sub string) bool {
	for _, r := range list {
		if r == rbacv1.ResourceAll || r == combined {
			return true
		}
		if sub != "" && r == "*/"+sub {
			return true
		}
	}
	return false
}

// nonResourceURLMatches handles exact paths and "prefix*".
func nonResourceURLMatches(list []string, path string) bool {
	for _, u := range list {
		if u == rbacv1.NonResourceAll || u == path {
			return true
		}
		if p, ok := strings.CutSuffix(u, "*"); ok && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// Describe words a denied request as kube-apiserver does:
// `User "bob" cannot list resource "pods" in API group "" in the namespace "default"`.
func Describe(a Attributes) string {
	if !a.ResourceRequest {
		return fmt.Sprintf("User %q cannot %s path %q", a.User, a.Verb, a.Path)
	}
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q", a.User, a.Verb, resource, a.APIGroup)
	if a.Namespace != "" {
		msg += fmt.Sprintf(" in the namespace %q", a.Namespace)
	} else {
		msg += " at the cluster scope"
	}
	return msg
}
