package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// kubeconfig is the part of a kubeconfig file this package reads.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server string `yaml:"server"`
			CAData string `yaml:"certificate-authority-data"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			CertData string `yaml:"client-certificate-data"`
			KeyData  string `yaml:"client-key-data"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster string `yaml:"cluster"`
			User    string `yaml:"user"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

// apiCreds is what a client needs to talk to the cluster API.
type apiCreds struct {
	server string // https://IP:6443
	tls    *tls.Config
}

// parseKubeconfig extracts the server, the cluster CA and the client
// certificate of the current context (or the first cluster and user).
func parseKubeconfig(b []byte) (apiCreds, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return apiCreds{}, fmt.Errorf("parsing kubeconfig: %w", err)
	}
	if len(kc.Clusters) == 0 || len(kc.Users) == 0 {
		return apiCreds{}, errors.New("parsing kubeconfig: no cluster or no user")
	}
	ci, ui := 0, 0
	for _, c := range kc.Contexts {
		if c.Name != kc.CurrentContext {
			continue
		}
		for i := range kc.Clusters {
			if kc.Clusters[i].Name == c.Context.Cluster {
				ci = i
			}
		}
		for i := range kc.Users {
			if kc.Users[i].Name == c.Context.User {
				ui = i
			}
		}
	}
	cl, u := kc.Clusters[ci].Cluster, kc.Users[ui].User
	ca, err := base64.StdEncoding.DecodeString(cl.CAData)
	if err != nil {
		return apiCreds{}, fmt.Errorf("kubeconfig certificate-authority-data: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return apiCreds{}, errors.New("kubeconfig certificate-authority-data: no PEM certificate")
	}
	cert, err := base64.StdEncoding.DecodeString(u.CertData)
	if err != nil {
		return apiCreds{}, fmt.Errorf("kubeconfig client-certificate-data: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(u.KeyData)
	if err != nil {
		return apiCreds{}, fmt.Errorf("kubeconfig client-key-data: %w", err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return apiCreds{}, fmt.Errorf("kubeconfig client certificate: %w", err)
	}
	if cl.Server == "" {
		return apiCreds{}, errors.New("kubeconfig: no server")
	}
	return apiCreds{
		server: strings.TrimRight(cl.Server, "/"),
		tls:    &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}, nil
}

// apiClient returns an HTTP client that reaches node addresses from inside
// the lan namespace and trusts only the cluster CA.
func apiClient(creds apiCreds, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:         dial,
			TLSClientConfig:     creds.tls.Clone(),
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

func apiURL(ip, path string) string {
	return "https://" + net.JoinHostPort(ip, strconv.Itoa(APIPort)) + path
}

// getOK GETs url and returns the body if the status is 200.
func getOK(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	return b, nil
}

// readyz checks GET /readyz on ip: 200 "ok".
func readyz(ctx context.Context, hc *http.Client, ip string) error {
	b, err := getOK(ctx, hc, apiURL(ip, "/readyz"))
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "ok" {
		return fmt.Errorf("GET /readyz on %s: %q, want \"ok\"", ip, strings.TrimSpace(string(b)))
	}
	return nil
}

// nodeList is the part of a v1 NodeList this package reads.
type nodeList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	} `json:"items"`
}

// readyNodes returns the names of the Nodes whose Ready condition is "True",
// as listed by the API server on ip.
func readyNodes(ctx context.Context, hc *http.Client, ip string) (map[string]bool, error) {
	b, err := getOK(ctx, hc, apiURL(ip, "/api/v1/nodes"))
	if err != nil {
		return nil, err
	}
	var nl nodeList
	if err := json.Unmarshal(b, &nl); err != nil {
		return nil, fmt.Errorf("GET /api/v1/nodes on %s: decoding NodeList: %w", ip, err)
	}
	ready := map[string]bool{}
	for _, n := range nl.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				ready[n.Metadata.Name] = true
			}
		}
	}
	return ready, nil
}

// missing returns the names in want that are not in have, sorted.
func missing(want []string, have map[string]bool) []string {
	var out []string
	for _, n := range want {
		if !have[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
