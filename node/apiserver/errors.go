package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/state"
)

// toStatusError maps any error to the Kubernetes Status it is answered with.
// This is the one place that decides HTTP codes for store and proposer errors.
func toStatusError(err error, gr schema.GroupResource, name string) *apierrors.StatusError {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	var re *state.ResultError
	if errors.As(err, &re) {
		switch re.Code {
		case state.CodeNotFound:
			return apierrors.NewNotFound(gr, name)
		case state.CodeAlreadyExists:
			return apierrors.NewAlreadyExists(gr, name)
		case state.CodeConflict:
			return apierrors.NewConflict(gr, name, errors.New(re.Message))
		case state.CodeTaken:
			f, _, _ := strings.Cut(re.Message, ":")
			return apierrors.NewInvalid(schema.GroupKind{Group: gr.Group, Kind: kindName(gr)}, name, field.ErrorList{
				field.Invalid(field.NewPath(f), "", strings.TrimSpace(strings.TrimPrefix(re.Message, f+":")))})
		case state.CodeInvalid:
			return &apierrors.StatusError{ErrStatus: metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity, Reason: metav1.StatusReasonInvalid,
				Message: fmt.Sprintf("%s %q is invalid: %s", gr.String(), name, re.Message),
				Details: &metav1.StatusDetails{Name: name, Group: gr.Group, Kind: gr.Resource},
			}}
		}
		return apierrors.NewInternalError(err)
	}
	switch {
	case errors.Is(err, state.ErrUnavailable):
		return apierrors.NewServiceUnavailable(fmt.Sprintf("the write could not be committed: %v; retry when the cluster has a leader and a quorum", err))
	case errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError(fmt.Sprintf("the request did not complete in time: %v", err), 1)
	case errors.Is(err, context.Canceled):
		return apierrors.NewTimeoutError("the request was canceled", 0)
	case errors.Is(err, errBodyTooLarge):
		return apierrors.NewRequestEntityTooLargeError(err.Error())
	}
	return apierrors.NewInternalError(err)
}

// fail answers with the Status for err.
func (rq *request) fail(err error) {
	var gr schema.GroupResource
	if rq.res != nil {
		gr = rq.res.groupResource()
	}
	se := toStatusError(err, gr, rq.name)
	st := se.ErrStatus
	st.Kind, st.APIVersion = "Status", "v1"
	if st.Status == "" {
		st.Status = metav1.StatusFailure
	}
	code := int(st.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	// Retry-After only when an error asks for it: client-go silently retries
	// a 503 that carries one (up to ten times), so a node without a quorum
	// would hang kubectl instead of telling the user at once.
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		rq.w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	rq.writeJSON(code, &st)
}

func resourceGR(r *resource) schema.GroupResource {
	if r == nil {
		return schema.GroupResource{}
	}
	return r.groupResource()
}

// errBodyTooLarge is returned when a request body exceeds MaxRequestBytes.
var errBodyTooLarge = errors.New("the request body is too large")

func badRequest(format string, args ...any) error {
	return apierrors.NewBadRequest(fmt.Sprintf(format, args...))
}

func unsupportedMediaType(msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
		Reason: metav1.StatusReasonUnsupportedMediaType, Message: msg,
	}}
}

// kindName is the Kind served as gr ("Service" for services), for Invalid
// statuses built from store results.
func kindName(gr schema.GroupResource) string {
	for _, k := range state.Kinds {
		if k.Resource == gr.Resource && k.Group == gr.Group {
			return k.Kind
		}
	}
	return gr.Resource
}
