package apiserver

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// request is one API request being served.
type request struct {
	s    *Server
	r    *http.Request
	w    *statusWriter
	user *userInfo
	// verb is the Kubernetes verb (get, list, watch, create, update, patch,
	// delete, deletecollection) or the lower-case HTTP method for non-resource
	// paths.
	verb      string
	res       *resource // nil for non-resource paths
	namespace string
	name      string
	sub       string // "", "status", "scale", or a pod stream (podsub.go)
	query     url.Values
	warnings  []string
}

func (rq *request) metricResource() string {
	if rq.res == nil {
		return ""
	}
	if rq.sub != "" {
		return rq.res.Resource + "/" + rq.sub
	}
	return rq.res.Resource
}

// route dispatches a request by path.
func (s *Server) route(rq *request) {
	p := rq.r.URL.Path
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	switch {
	case strings.HasPrefix(p, "/api/v1/"):
		s.serveResource(rq, "", strings.Split(p[len("/api/v1/"):], "/"))
		return
	case strings.HasPrefix(p, "/apis/"):
		if s.serveReview(rq, p[len("/apis/"):]) {
			return
		}
		segs := strings.Split(p[len("/apis/"):], "/")
		if len(segs) >= 3 {
			if _, ok := s.disc.groups[segs[0]]; ok && segs[1] == "v1" {
				s.serveResource(rq, segs[0], segs[2:])
				return
			}
			rq.fail(notFoundPath())
			return
		}
	}
	if rq.r.Method != http.MethodGet && rq.r.Method != http.MethodHead {
		rq.fail(apierrors.NewMethodNotSupported(resourceGR(nil), rq.r.Method))
		return
	}
	if !s.allowed(rq, "get") {
		return
	}
	switch {
	case p == "/version":
		rq.writeJSON(http.StatusOK, &s.version)
	case p == "/healthz" || p == "/livez" || p == "/readyz":
		rq.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rq.w.WriteHeader(http.StatusOK)
		_, _ = rq.w.Write([]byte("ok"))
	case p == "/api" || p == "/apis" || p == "/api/v1" || strings.HasPrefix(p, "/apis/"):
		s.disc.serve(rq, p)
	case p == "/openapi/v3" || strings.HasPrefix(p, "/openapi/v3/") || p == "/openapi/v2" || p == "/swagger-2.0.0.pb-v1":
		s.openapi.serve(rq, p)
	default:
		rq.fail(notFoundPath())
	}
}

func notFoundPath() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: "the server could not find the requested resource",
		Details: &metav1.StatusDetails{},
	}}
}

// serveResource parses {namespaces/NS/}RESOURCE{/NAME{/SUB}} under a group.
func (s *Server) serveResource(rq *request, group string, segs []string) {
	rq.query = rq.r.URL.Query()
	if len(segs) > 0 && segs[0] == "watch" { // legacy /watch/ prefix
		segs = segs[1:]
		rq.query.Set("watch", "true")
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		if res, ok := s.disc.resources[group+"/"+segs[2]]; ok && res.Namespaced {
			rq.namespace, rq.res = segs[1], res
			segs = segs[2:]
		}
	}
	if len(segs) == 0 || len(segs) > 3 || segs[0] == "" {
		rq.fail(notFoundPath())
		return
	}
	if rq.res == nil {
		res, ok := s.disc.resources[group+"/"+segs[0]]
		if !ok {
			rq.fail(notFoundPath())
			return
		}
		rq.res = res
	}
	if len(segs) > 1 {
		rq.name = segs[1]
		if rq.name == "" {
			rq.fail(notFoundPath())
			return
		}
	}
	if len(segs) > 2 {
		rq.sub = segs[2]
		if _, ok := podStreamSubresources[rq.sub]; ok && rq.res.Resource == "pods" && rq.res.Group == "" && rq.namespace != "" {
			s.servePodStream(rq)
			return
		}
		if rq.sub == "token" && rq.res.Resource == "serviceaccounts" && rq.res.Group == "" && rq.namespace != "" {
			rq.query = rq.r.URL.Query()
			s.serveTokenRequest(rq)
			return
		}
		if !(rq.sub == "status" && rq.res.HasStatus) && !(rq.sub == "scale" && rq.res.scale) {
			rq.fail(notFoundPath())
			return
		}
	}
	// A namespaced resource outside a namespace: only list and watch.
	if rq.res.Namespaced && rq.namespace == "" && (rq.name != "" || rq.r.Method != http.MethodGet) {
		rq.fail(notFoundPath())
		return
	}

	switch rq.r.Method {
	case http.MethodGet:
		switch {
		case rq.name != "":
			rq.verb = "get"
		case isTrue(rq.query.Get("watch")):
			rq.verb = "watch"
		default:
			rq.verb = "list"
		}
	case http.MethodPost:
		rq.verb = "create"
		if rq.name != "" {
			rq.verb = "post"
		}
	case http.MethodPut:
		rq.verb = "update"
	case http.MethodPatch:
		rq.verb = "patch"
	case http.MethodDelete:
		rq.verb = "delete"
		if rq.name == "" {
			rq.verb = "deletecollection"
		}
	default:
		rq.verb = strings.ToLower(rq.r.Method)
	}
	if (rq.verb == "update" || rq.verb == "patch") && rq.name == "" || rq.verb == "post" ||
		(rq.sub != "" && rq.verb != "get" && rq.verb != "update" && rq.verb != "patch") {
		rq.fail(apierrors.NewMethodNotSupported(rq.res.groupResource(), rq.r.Method))
		return
	}
	if !s.allowed(rq, rq.verb) {
		return
	}
	if err := rq.checkDryRun(); err != nil {
		rq.fail(err)
		return
	}

	switch rq.verb {
	case "get":
		switch rq.sub {
		case "":
			s.get(rq)
		case "status":
			s.get(rq)
		case "scale":
			s.getScale(rq)
		}
	case "list":
		s.list(rq)
	case "watch":
		s.watch(rq)
	case "create":
		s.create(rq)
	case "update":
		s.update(rq)
	case "patch":
		s.patch(rq)
	case "delete":
		s.delete(rq)
	case "deletecollection":
		s.deleteCollection(rq)
	default:
		rq.fail(apierrors.NewMethodNotSupported(rq.res.groupResource(), rq.r.Method))
	}
}

func isTrue(v string) bool { return v == "true" || v == "1" }

// dryRun reports whether the request asked for dryRun=All.
func (rq *request) dryRun() bool {
	return rq.query != nil && len(rq.query["dryRun"]) > 0
}

func (rq *request) checkDryRun() error {
	for _, v := range rq.query["dryRun"] {
		if v != "All" {
			return apierrors.NewBadRequest(fmt.Sprintf("unsupported dryRun value %q: only \"All\" is supported", v))
		}
	}
	return nil
}
