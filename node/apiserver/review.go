package apiserver

import (
	"net/http"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/rbac"
)

// reviews are the create-only resources that answer questions about the
// caller: `kubectl auth can-i` (SelfSubjectAccessReview, with --list
// SelfSubjectRulesReview) and `kubectl auth whoami` (SelfSubjectReview).
var reviews = map[string]schema.GroupVersionResource{
	"authorization.k8s.io/v1/selfsubjectaccessreviews": {Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"},
	"authorization.k8s.io/v1/selfsubjectrulesreviews":  {Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectrulesreviews"},
	"authentication.k8s.io/v1/selfsubjectreviews":      {Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"},
}

// serveReview answers POST /apis/{group}/v1/{review}; it reports false for
// other paths.
func (s *Server) serveReview(rq *request, path string) bool {
	gvr, ok := reviews[path]
	if !ok {
		return false
	}
	if rq.r.Method != http.MethodPost {
		rq.fail(apierrors.NewMethodNotSupported(gvr.GroupResource(), rq.r.Method))
		return true
	}
	rq.verb = "create"
	a := rbac.Attributes{User: rq.user.Name, Groups: rq.user.Groups, Verb: "create", ResourceRequest: true,
		APIGroup: gvr.Group, Resource: gvr.Resource}
	if !s.allow(rq, a) {
		return true
	}
	switch gvr.Resource {
	case "selfsubjectaccessreviews":
		var r authorizationv1.SelfSubjectAccessReview
		if err := rq.decodeBody(&r, gvr.GroupVersion().WithKind("SelfSubjectAccessReview")); err != nil {
			rq.fail(err)
			return true
		}
		q := rbac.Attributes{User: rq.user.Name, Groups: rq.user.Groups}
		switch ra, nra := r.Spec.ResourceAttributes, r.Spec.NonResourceAttributes; {
		case ra != nil && nra == nil:
			q.ResourceRequest = true
			q.Verb, q.Namespace, q.APIGroup, q.Resource, q.Subresource, q.Name = ra.Verb, ra.Namespace, ra.Group, ra.Resource, ra.Subresource, ra.Name
		case nra != nil && ra == nil:
			q.Verb, q.Path = nra.Verb, nra.Path
		default:
			rq.fail(apierrors.NewInvalid(schema.GroupKind{Group: gvr.Group, Kind: "SelfSubjectAccessReview"}, "", field.ErrorList{
				field.Invalid(field.NewPath("spec"), "", "exactly one of nonResourceAttributes or resourceAttributes must be specified")}))
			return true
		}
		r.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: s.authorize(q)}
		r.APIVersion, r.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
		rq.writeJSON(http.StatusCreated, &r)
	case "selfsubjectrulesreviews":
		var r authorizationv1.SelfSubjectRulesReview
		if err := rq.decodeBody(&r, gvr.GroupVersion().WithKind("SelfSubjectRulesReview")); err != nil {
			rq.fail(err)
			return true
		}
		r.Status = rulesFor(s, rq.user, r.Spec.Namespace)
		r.APIVersion, r.Kind = "authorization.k8s.io/v1", "SelfSubjectRulesReview"
		rq.writeJSON(http.StatusCreated, &r)
	case "selfsubjectreviews":
		r := authenticationv1.SelfSubjectReview{}
		r.APIVersion, r.Kind = "authentication.k8s.io/v1", "SelfSubjectReview"
		r.Status.UserInfo = authenticationv1.UserInfo{Username: rq.user.Name, UID: rq.user.UID, Groups: slices.Clone(rq.user.Groups)}
		for k, vs := range rq.user.Extra {
			if r.Status.UserInfo.Extra == nil {
				r.Status.UserInfo.Extra = map[string]authenticationv1.ExtraValue{}
			}
			r.Status.UserInfo.Extra[k] = slices.Clone(vs)
		}
		rq.writeJSON(http.StatusCreated, &r)
	}
	return true
}

// rulesFor lists what the user may do in namespace, as RBAC grants it. The
// groups that bypass RBAC (system:masters, system:nodes) may do anything.
func rulesFor(s *Server, u *userInfo, namespace string) authorizationv1.SubjectRulesReviewStatus {
	var st authorizationv1.SubjectRulesReviewStatus
	if slices.Contains(u.Groups, rbac.GroupMasters) || slices.Contains(u.Groups, rbac.GroupNodes) {
		st.ResourceRules = []authorizationv1.ResourceRule{{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}}}
		st.NonResourceRules = []authorizationv1.NonResourceRule{{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}}
		return st
	}
	for _, r := range s.rbac.Rules(rbac.Attributes{User: u.Name, Groups: u.Groups}, namespace) {
		if len(r.NonResourceURLs) > 0 {
			st.NonResourceRules = append(st.NonResourceRules, authorizationv1.NonResourceRule{Verbs: r.Verbs, NonResourceURLs: r.NonResourceURLs})
			continue
		}
		st.ResourceRules = append(st.ResourceRules, authorizationv1.ResourceRule{
			Verbs: r.Verbs, APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames})
	}
	return st
}
