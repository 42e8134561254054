package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/shoal-dev/shoal/node/pki"
)

// Client talks to a node's internal endpoints: the shoal CLI uses it for
// tokens, members, kubeconfig and leave.
type Client struct {
	base string
	http *http.Client
}

// NewLocalClient reaches the node whose data dir is dataDir, with that
// node's own certificate (so it needs the rights to read the data dir).
func NewLocalClient(dir string) (*Client, error) {
	d := dir
	id, err := dataDir(d).identity()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no shoal node in %s (is the agent running there? use --data-dir or --kubeconfig)", d)
		}
		return nil, err
	}
	if id.APIAddr == "" {
		return nil, fmt.Errorf("the node in %s has not finished starting", d)
	}
	creds, err := dataDir(d).credentials()
	if err != nil {
		return nil, err
	}
	return newClient("https://"+id.APIAddr, pki.ClientTLSConfig(creds.pool, &creds.cert)), nil
}

// kubeconfigFile is the part of a kubeconfig the CLI reads.
type kubeconfigFile struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKeyData         string `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// NewKubeconfigClient reaches the API server of a kubeconfig's current
// context with its client certificate.
func NewKubeconfigClient(path string) (*Client, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfigFile
	if err := yaml.Unmarshal(raw, &kc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	clusterName, userName := "", ""
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	var server string
	var caPEM, certPEM, keyPEM []byte
	for _, c := range kc.Clusters {
		if c.Name == clusterName || clusterName == "" {
			server = c.Cluster.Server
			caPEM, _ = base64.StdEncoding.DecodeString(c.Cluster.CertificateAuthorityData)
			break
		}
	}
	for _, u := range kc.Users {
		if u.Name == userName || userName == "" {
			certPEM, _ = base64.StdEncoding.DecodeString(u.User.ClientCertificateData)
			keyPEM, _ = base64.StdEncoding.DecodeString(u.User.ClientKeyData)
			break
		}
	}
	if server == "" || len(caPEM) == 0 || len(certPEM) == 0 {
		return nil, fmt.Errorf("%s: no server, CA data or client certificate data in the current context", path)
	}
	creds, err := newCredentials(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return newClient(server, pki.ClientTLSConfig(creds.pool, &creds.cert)), nil
}

func newClient(base string, tlsCfg *tls.Config) *Client {
	return &Client{base: base, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reaching the node at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, method+" "+path, out)
}

// decodeAnswer reads a node's JSON answer into out (may be nil), or turns
// an error answer into an error carrying the node's message.
func decodeAnswer(resp *http.Response, what string, out any) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var je joinError
		if json.Unmarshal(data, &je) == nil && je.Message != "" {
			return errors.New(je.Message)
		}
		return fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// CreateToken makes a join token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenInfo, error) {
	var out TokenInfo
	return out, c.do(ctx, http.MethodPost, "/internal/v1/tokens", req, &out)
}

// Tokens lists join tokens.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out []TokenInfo
	return out, c.do(ctx, http.MethodGet, "/internal/v1/tokens", nil, &out)
}

// RevokeToken revokes a join token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/internal/v1/tokens/"+id, nil, nil)
}

// Members lists the cluster's members.
func (c *Client) Members(ctx context.Context) ([]MemberInfo, error) {
	var out []MemberInfo
	return out, c.do(ctx, http.MethodGet, "/internal/v1/members", nil, &out)
}

// Leave tells the node to leave the cluster for good.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/internal/v1/leave", nil, nil)
}

// Kubeconfig returns an admin kubeconfig with a fresh client certificate.
func (c *Client) Kubeconfig(ctx context.Context) ([]byte, error) {
	return c.UserKubeconfig(ctx, "", nil, 0)
}

// UserKubeconfig returns a kubeconfig whose client certificate names user
// (CN) and groups (O), valid for ttl; an empty user is the admin (group
// system:masters) and a zero ttl the node's default (a year). What the user
// may do is up to RBAC.
func (c *Client) UserKubeconfig(ctx context.Context, user string, groups []string, ttl time.Duration) ([]byte, error) {
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	pub, err := pki.MarshalPublicKeyPEM(key.Public())
	if err != nil {
		return nil, err
	}
	var resp KubeconfigResponse
	req := KubeconfigRequest{PublicKeyPEM: string(pub), User: user, Groups: groups, TTL: ttl}
	if err := c.do(ctx, http.MethodPost, "/internal/v1/kubeconfig", req, &resp); err != nil {
		return nil, err
	}
	return RenderKubeconfig(resp, keyPEM), nil
}

// RenderKubeconfig writes a kubeconfig for a signed client certificate.
func RenderKubeconfig(r KubeconfigResponse, keyPEM []byte) []byte {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: shoal
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: shoal-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: shoal
  context:
    cluster: shoal
    user: shoal-admin
current-context: shoal
`, r.Server, b64([]byte(r.CACertPEM)), b64([]byte(r.CertPEM)), b64(keyPEM))
}

// ImportImage streams an image archive (OCI or docker save) to the node,
// which imports it into its containerd. It may take long: no timeout but ctx.
func (c *Client) ImportImage(ctx context.Context, archive io.Reader) ([]ImageInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/internal/v1/images", archive)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sending the image to %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	var out []ImageInfo
	return out, decodeAnswer(resp, "importing", &out)
}

// Images lists the node's images.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	var out []ImageInfo
	return out, c.do(ctx, http.MethodGet, "/internal/v1/images", nil, &out)
}
