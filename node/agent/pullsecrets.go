package agent

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// dockerAuth is one registry's entry of a docker config.
type dockerAuth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"` // base64 "user:password"
	IdentityToken string `json:"identitytoken"`
}

// registryKey reduces a docker config key ("https://index.docker.io/v1/",
// "registry.example:5000", "http://host/path") to the registry host.
func registryKey(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(k), "https://"), "http://")
	k, _, _ = strings.Cut(k, "/")
	return k
}

// dockerHubAliases are the names Docker Hub goes by in docker configs; the
// pull asks for registry-1.docker.io.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// pullCredentials returns the credentials for pulling the pod's images from
// their registries, from its imagePullSecrets (kubernetes.io/dockerconfigjson
// or the older kubernetes.io/dockercfg, as the kubelet reads them): the
// first secret with an entry for a registry wins. nil when the pod has
// none; secrets that are missing or malformed are skipped (the pull then
// goes without them and its error says the registry refused).
func (a *Agent) pullCredentials(pod *corev1.Pod) func(host string) (string, string, error) {
	if len(pod.Spec.ImagePullSecrets) == 0 {
		return nil
	}
	auths := map[string]dockerAuth{}
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, ok := getSecret(a.cfg.Store, pod.Namespace, ref.Name)
		if !ok {
			continue
		}
		entries := map[string]dockerAuth{}
		if b, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
			var cfg struct {
				Auths map[string]dockerAuth `json:"auths"`
			}
			if json.Unmarshal(b, &cfg) == nil {
				entries = cfg.Auths
			}
		} else if b, ok := s.Data[corev1.DockerConfigKey]; ok {
			_ = json.Unmarshal(b, &entries)
		}
		for k, v := range entries {
			if host := registryKey(k); host != "" {
				if _, seen := auths[host]; !seen {
					auths[host] = v
				}
			}
		}
	}
	if len(auths) == 0 {
		return nil
	}
	return func(host string) (string, string, error) {
		host = strings.ToLower(host)
		e, ok := auths[host]
		if !ok && slices.Contains(dockerHubAliases, host) {
			for _, alias := range dockerHubAliases {
				if e, ok = auths[alias]; ok {
					break
				}
			}
		}
		if !ok {
			return "", "", nil
		}
		if e.IdentityToken != "" {
			return "", e.IdentityToken, nil // containerd: a refresh token
		}
		if e.Username == "" && e.Auth != "" {
			if b, err := base64.StdEncoding.DecodeString(e.Auth); err == nil {
				u, p, _ := strings.Cut(string(b), ":")
				return u, p, nil
			}
		}
		return e.Username, e.Password, nil
	}
}
