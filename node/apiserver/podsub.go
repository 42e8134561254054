package apiserver

import (
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// PodStreamFunc serves a pod's streaming subresource — "log", "exec",
// "attach" or "portforward" — for a request the API server has
// authenticated and authorized. pod is the pod as the local replica holds
// it. w is the connection's own ResponseWriter (it can be hijacked for an
// upgrade).
type PodStreamFunc func(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, sub string)

// podStreamSubresources are the pod subresources served by PodStreams, with
// the verb each needs: reading logs is "get", the rest open a session in
// the pod ("create", as kube-apiserver's authorizer sees them).
var podStreamSubresources = map[string]string{
	"log":         "get",
	"exec":        "create",
	"attach":      "create",
	"portforward": "create",
}

// servePodStream serves pods/{log,exec,attach,portforward}.
func (s *Server) servePodStream(rq *request) {
	verb := podStreamSubresources[rq.sub]
	switch {
	case rq.sub == "log" && rq.r.Method != http.MethodGet:
		rq.fail(apierrors.NewMethodNotSupported(rq.res.groupResource(), rq.r.Method))
		return
	case rq.sub != "log" && rq.r.Method != http.MethodGet && rq.r.Method != http.MethodPost:
		rq.fail(apierrors.NewMethodNotSupported(rq.res.groupResource(), rq.r.Method))
		return
	}
	rq.verb = verb
	if !s.allowed(rq, verb) {
		return
	}
	o, ok := s.store.Get("pods", rq.namespace, rq.name)
	if !ok {
		rq.fail(apierrors.NewNotFound(rq.res.groupResource(), rq.name))
		return
	}
	if s.podStreams == nil {
		rq.fail(apierrors.NewServiceUnavailable("this node runs no pods: " + rq.sub + " is not available"))
		return
	}
	rq.w.status, rq.w.wrote = http.StatusOK, true // for the metrics: the handler owns the connection
	s.podStreams(rq.w.ResponseWriter, rq.r, o.(*corev1.Pod), rq.sub)
}
