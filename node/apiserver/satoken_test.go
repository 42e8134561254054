package apiserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/satoken"
)

// testTokens is the node's clusterTokens with a throwaway key.
type testTokens struct {
	s *satoken.Signer
	v *satoken.Verifier
}

func newTestTokens(t *testing.T) *testTokens {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := satoken.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testTokens{s: s, v: satoken.NewVerifier(pub)}
}

func (tt *testTokens) Issue(c satoken.Claims) (string, error) { return tt.s.Issue(c) }
func (tt *testTokens) Verify(tok string, now time.Time, aud []string) (*satoken.Claims, error) {
	return tt.v.Verify(tok, now, aud)
}

// TestServiceAccountTokens: kubectl create token's TokenRequest, the
// token as a credential whose rights come from RBAC, and revocation by
// deleting the service account.
func TestServiceAccountTokens(t *testing.T) {
	tokens := newTestTokens(t)
	e := newEnv(t, func(c *Config) { c.Tokens = tokens })
	withBootstrapPolicy(t, e)
	e.clock.t = time.Now().Truncate(time.Second) // tokens are checked against the server's clock
	const path = "/api/v1/namespaces/default/serviceaccounts/ci/token"
	e.ok(req{method: "POST", path: path, body: `{"spec":{}}`}, 404, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/serviceaccounts", body: `{"metadata":{"name":"ci"}}`}, 201, nil)

	var tr authenticationv1.TokenRequest
	e.ok(req{method: "POST", path: path, body: `{"spec":{"expirationSeconds":1200}}`}, 201, &tr)
	if tr.Status.Token == "" || tr.Status.ExpirationTimestamp.Sub(e.clock.Now()) != 20*time.Minute ||
		tr.Spec.Audiences[0] != satoken.Issuer {
		t.Fatalf("token request answered %+v", tr)
	}
	tok := tr.Status.Token

	// The token authenticates; RBAC decides.
	st := status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: tok}, 403, nil))
	if !strings.Contains(st.Message, `User "system:serviceaccount:default:ci" cannot list resource "pods"`) {
		t.Fatalf("forbidden: %s", st.Message)
	}
	e.ok(req{method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body: `{
		"metadata":{"name":"ci-view"},
		"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
		"subjects":[{"kind":"ServiceAccount","name":"ci","namespace":"default"}]}`}, 201, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: tok}, 200, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/kube-system/pods", bearer: tok}, 403, nil)
	var who authenticationv1.SelfSubjectReview
	e.ok(req{method: "POST", path: "/apis/authentication.k8s.io/v1/selfsubjectreviews", bearer: tok, body: `{}`}, 201, &who)
	if who.Status.UserInfo.Username != "system:serviceaccount:default:ci" ||
		strings.Join(who.Status.UserInfo.Groups, ",") != "system:serviceaccounts,system:serviceaccounts:default,system:authenticated" {
		t.Fatalf("whoami: %+v", who.Status.UserInfo)
	}

	// Refusals.
	e.refused(t, req{method: "POST", path: path, body: `{"spec":{"expirationSeconds":60}}`}, 422, metav1.StatusReasonInvalid, []string{"spec.expirationSeconds"}, "")
	e.refused(t, req{method: "POST", path: path, body: `{"spec":{"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"nope"}}}`},
		422, metav1.StatusReasonInvalid, []string{"spec.boundObjectRef.name"}, "")
	e.ok(req{method: "POST", path: path, body: `{"spec":{}}`, tls: tlsFor(certFor("bob", "developers"))}, 403, nil)
	e.ok(req{method: "GET", path: path}, 405, nil)
	for _, bad := range []string{"not-a-jwt", tok[:len(tok)-3] + "xyz", strings.Replace(tok, ".", "..", 1)} {
		if st := status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: bad}, 401, nil)); st.Reason != metav1.StatusReasonUnauthorized {
			t.Fatalf("bad token %q: %+v", bad, st)
		}
	}
	other := newTestTokens(t)
	forged, _ := other.Issue(satoken.Claims{Namespace: "default", ServiceAccount: "ci", ServiceAccountUID: "x",
		Audiences: []string{satoken.Issuer}, IssuedAt: e.clock.Now(), Expiry: e.clock.Now().Add(time.Hour)})
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: forged}, 401, nil)

	// Expiry, then revocation: the same token stops working.
	e.clock.t = e.clock.t.Add(22 * time.Minute) // past expiry and the minute of leeway
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: tok}, 401, nil)
	e.clock.t = e.clock.t.Add(-22 * time.Minute)
	e.ok(req{method: "DELETE", path: "/api/v1/namespaces/default/serviceaccounts/ci"}, 200, nil)
	st = status(t, e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: tok}, 401, nil))
	if !strings.Contains(st.Message, "no longer exists") {
		t.Fatalf("revoked token: %+v", st)
	}
	// A service account of the same name later is another account.
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/serviceaccounts", body: `{"metadata":{"name":"ci"}}`}, 201, nil)
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/pods", bearer: tok}, 401, nil)
}
