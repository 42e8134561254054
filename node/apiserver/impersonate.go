package apiserver

import (
	"net/url"
	"slices"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/satoken"
)

// The impersonation headers (kubectl --as, --as-group, --as-uid; client-go's
// ImpersonationConfig).
const (
	headerImpersonateUser      = "Impersonate-User"
	headerImpersonateGroup     = "Impersonate-Group"
	headerImpersonateUID       = "Impersonate-Uid"
	headerImpersonateExtraPref = "Impersonate-Extra-"
)

// userAnonymous is the one user impersonation does not add
// system:authenticated to.
const userAnonymous = "system:anonymous"

// impersonate applies the request's impersonation headers, as
// kube-apiserver's impersonation filter does: the requester must be allowed
// the verb "impersonate" on each requested identity — "users" (or
// "serviceaccounts" in the account's namespace for a
// system:serviceaccount:NS:NAME user), "groups", and in the group
// authentication.k8s.io "uids" and "userextras/KEY" — and the request then
// runs as the impersonated user: its groups (plus system:authenticated, and
// a service account's groups), uid and extra. The headers are removed so
// nothing further down acts on them again. It answers the request (400 or
// 403) and returns nil when impersonation is refused; with no headers it
// returns rq.user unchanged.
func (s *Server) impersonate(rq *request) *userInfo {
	h := rq.r.Header
	users := h.Values(headerImpersonateUser)
	groups := h.Values(headerImpersonateGroup)
	uids := h.Values(headerImpersonateUID)
	extra := map[string][]string{}
	for k, vs := range h {
		if key, ok := strings.CutPrefix(k, headerImpersonateExtraPref); ok {
			// The key is percent-encoded in the header name (client-go
			// escapes what a header name cannot carry); Kubernetes'
			// extra keys are lower case.
			if u, err := url.PathUnescape(key); err == nil {
				key = u
			}
			key = strings.ToLower(key)
			extra[key] = append(extra[key], vs...)
		}
	}
	if len(users) == 0 && len(groups) == 0 && len(uids) == 0 && len(extra) == 0 {
		return rq.user
	}
	switch {
	case len(users) == 0:
		rq.fail(apierrors.NewBadRequest("impersonation: " + headerImpersonateGroup + ", " + headerImpersonateUID +
			" and " + headerImpersonateExtraPref + "* need an " + headerImpersonateUser + " header"))
		return nil
	case len(users) > 1:
		rq.fail(apierrors.NewBadRequest("impersonation: only one " + headerImpersonateUser + " header is allowed"))
		return nil
	case len(uids) > 1:
		rq.fail(apierrors.NewBadRequest("impersonation: only one " + headerImpersonateUID + " header is allowed"))
		return nil
	case users[0] == "":
		rq.fail(apierrors.NewBadRequest("impersonation: the " + headerImpersonateUser + " header is empty"))
		return nil
	}

	as := &userInfo{Name: users[0]}
	check := func(a rbac.Attributes) bool {
		a.User, a.Groups, a.Verb, a.ResourceRequest = rq.user.Name, rq.user.Groups, "impersonate", true
		return s.allow(rq, a)
	}
	if ns, name, ok := satoken.ParseUser(as.Name); ok {
		if !check(rbac.Attributes{Namespace: ns, Resource: "serviceaccounts", Name: name}) {
			return nil
		}
		as.Groups = append(as.Groups, satoken.Groups(ns)...)
	} else if !check(rbac.Attributes{Resource: "users", Name: as.Name}) {
		return nil
	}
	for _, g := range groups {
		if !check(rbac.Attributes{Resource: "groups", Name: g}) {
			return nil
		}
		if !slices.Contains(as.Groups, g) {
			as.Groups = append(as.Groups, g)
		}
	}
	if len(uids) == 1 {
		if !check(rbac.Attributes{APIGroup: "authentication.k8s.io", Resource: "uids", Name: uids[0]}) {
			return nil
		}
		as.UID = uids[0]
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range extra[k] {
			if !check(rbac.Attributes{APIGroup: "authentication.k8s.io", Resource: "userextras", Subresource: k, Name: v}) {
				return nil
			}
		}
		if as.Extra == nil {
			as.Extra = map[string][]string{}
		}
		as.Extra[k] = extra[k]
	}
	if as.Name != userAnonymous && !slices.Contains(as.Groups, rbac.GroupAuthenticated) {
		as.Groups = append(as.Groups, rbac.GroupAuthenticated)
	}
	for k := range h {
		if isImpersonationHeader(k) {
			h.Del(k)
		}
	}
	return as
}

// isImpersonationHeader reports whether the canonical header name k is one
// of the impersonation headers.
func isImpersonationHeader(k string) bool {
	return k == headerImpersonateUser || k == headerImpersonateGroup || k == headerImpersonateUID ||
		strings.HasPrefix(k, headerImpersonateExtraPref)
}
