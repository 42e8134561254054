package apiserver

import (
	"errors"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/satoken"
)

// Tokens issues and verifies service-account tokens with the cluster's
// key (the node provides it: it holds the CA the key derives from).
type Tokens interface {
	Issue(c satoken.Claims) (string, error)
	Verify(token string, now time.Time, audiences []string) (*satoken.Claims, error)
}

var serviceAccountsGR = schema.GroupResource{Resource: "serviceaccounts"}

// authenticateToken checks a bearer token: a valid signature, and a
// service account (and pod, for a bound token) that still exist with the
// UIDs it names — deleting either revokes the token.
func (s *Server) authenticateToken(r *http.Request) (*userInfo, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || s.tokens == nil {
		return nil, errNoCredentials
	}
	tok = strings.TrimSpace(tok)
	if !satoken.LooksLikeToken(tok) {
		return nil, errors.New("the bearer token is not a service-account token of this cluster")
	}
	c, err := s.tokens.Verify(tok, s.now(), []string{satoken.Issuer})
	if err != nil {
		return nil, err
	}
	o, ok := s.store.Get("serviceaccounts", c.Namespace, c.ServiceAccount)
	if !ok || string(o.GetUID()) != c.ServiceAccountUID {
		return nil, errors.New("the token's service account no longer exists")
	}
	if c.PodName != "" {
		if p, ok := s.store.Get("pods", c.Namespace, c.PodName); !ok || string(p.GetUID()) != c.PodUID {
			return nil, errors.New("the pod the token is bound to no longer exists")
		}
	}
	groups := append(satoken.Groups(c.Namespace), rbac.GroupAuthenticated)
	return &userInfo{Name: satoken.User(c.Namespace, c.ServiceAccount), Groups: groups}, nil
}

var errNoCredentials = errors.New("no credentials")

// serveTokenRequest answers POST …/serviceaccounts/NAME/token: a token for
// the service account, as `kubectl create token` asks for it.
func (s *Server) serveTokenRequest(rq *request) {
	if rq.r.Method != http.MethodPost {
		rq.fail(apierrors.NewMethodNotSupported(serviceAccountsGR, rq.r.Method))
		return
	}
	if !s.allowed(rq, "create") {
		return
	}
	if s.tokens == nil {
		rq.fail(apierrors.NewServiceUnavailable("this node cannot issue service-account tokens"))
		return
	}
	var tr authenticationv1.TokenRequest
	if err := rq.decodeBody(&tr, authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")); err != nil {
		rq.fail(err)
		return
	}
	var errs field.ErrorList
	ttl := satoken.DefaultExpiration
	if tr.Spec.ExpirationSeconds != nil {
		ttl = time.Duration(*tr.Spec.ExpirationSeconds) * time.Second
		if ttl < satoken.MinExpiration {
			errs = append(errs, field.Invalid(field.NewPath("spec", "expirationSeconds"), *tr.Spec.ExpirationSeconds, "may not specify a duration less than 10 minutes"))
		}
		if ttl > satoken.MaxExpiration {
			errs = append(errs, field.Invalid(field.NewPath("spec", "expirationSeconds"), *tr.Spec.ExpirationSeconds, "may not specify a duration more than 48 hours"))
		}
	}
	aud := tr.Spec.Audiences
	if len(aud) == 0 {
		aud = []string{satoken.Issuer}
	}
	o, ok := s.store.Get("serviceaccounts", rq.namespace, rq.name)
	if !ok {
		rq.fail(apierrors.NewNotFound(serviceAccountsGR, rq.name))
		return
	}
	now := s.now()
	c := satoken.Claims{Namespace: rq.namespace, ServiceAccount: rq.name, ServiceAccountUID: string(o.GetUID()),
		Audiences: aud, IssuedAt: now, Expiry: now.Add(ttl)}
	if ref := tr.Spec.BoundObjectRef; ref != nil {
		bp := field.NewPath("spec", "boundObjectRef")
		switch {
		case ref.Kind != "Pod" || (ref.APIVersion != "" && ref.APIVersion != "v1"):
			errs = append(errs, field.NotSupported(bp.Child("kind"), ref.Kind, []string{"Pod"}))
		default:
			p, ok := s.store.Get("pods", rq.namespace, ref.Name)
			switch {
			case !ok:
				errs = append(errs, field.NotFound(bp.Child("name"), ref.Name))
			case ref.UID != "" && ref.UID != p.GetUID():
				errs = append(errs, field.Invalid(bp.Child("uid"), ref.UID, "does not match the pod's"))
			case p.(*corev1.Pod).Spec.ServiceAccountName != rq.name:
				errs = append(errs, field.Invalid(bp.Child("name"), ref.Name, "the pod runs as another service account"))
			default:
				c.PodName, c.PodUID = ref.Name, string(p.GetUID())
			}
		}
	}
	if len(errs) > 0 {
		rq.fail(apierrors.NewInvalid(schema.GroupKind{Group: "authentication.k8s.io", Kind: "TokenRequest"}, rq.name, errs))
		return
	}
	tok, err := s.tokens.Issue(c)
	if err != nil {
		rq.fail(apierrors.NewInternalError(err))
		return
	}
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenRequest"
	tr.Name, tr.Namespace = rq.name, rq.namespace
	tr.CreationTimestamp = metav1.NewTime(now)
	tr.Spec.Audiences = aud
	secs := int64(ttl / time.Second)
	tr.Spec.ExpirationSeconds = &secs
	tr.Status = authenticationv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(c.Expiry)}
	rq.writeJSON(http.StatusCreated, &tr)
}
