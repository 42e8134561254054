package apiserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// discovery holds the discovery documents, encoded once: the legacy ones
// (/api, /apis, one per group and group version) and the aggregated ones
// (apidiscovery.k8s.io, v2 and v2beta1): everything in two answers, for
// /api and /apis, which kubectl 1.26 and later ask for first.
type discovery struct {
	resources  map[string]*resource // "group/plural" ("" group for core)
	groups     map[string]bool      // API groups other than core
	docs       map[string][]byte    // path → JSON document
	aggregated map[string]aggDoc    // aggKey(path, version) → document
}

// aggDoc is an encoded APIGroupDiscoveryList and its entity tag.
type aggDoc struct {
	body []byte
	etag string
}

// The aggregated discovery versions served, in the order preferred when a
// client accepts several with equal rank.
var aggVersions = []string{"v2", "v2beta1"}

func aggKey(path, version string) string { return path + "@" + version }

var (
	resourceVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	subVerbs      = metav1.Verbs{"get", "patch", "update"}
)

func newDiscovery() (*discovery, error) {
	d := &discovery{resources: map[string]*resource{}, groups: map[string]bool{}, docs: map[string][]byte{}}
	d.aggregated = map[string]aggDoc{}
	lists := map[string]*metav1.APIResourceList{}
	aggResources := map[string][]apidiscoveryv2.APIResourceDiscovery{} // by group
	var groupOrder []string
	for _, k := range state.Kinds {
		r := newResource(k)
		d.resources[k.Group+"/"+k.Resource] = r
		gv := k.GroupVersion().String()
		l, ok := lists[gv]
		if !ok {
			l = &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
			lists[gv] = l
			if k.Group != "" {
				d.groups[k.Group] = true
				groupOrder = append(groupOrder, k.Group)
			}
		}
		l.APIResources = append(l.APIResources, metav1.APIResource{
			Name: k.Resource, SingularName: r.singular, Namespaced: k.Namespaced, Kind: k.Kind,
			Verbs: resourceVerbs, ShortNames: k.ShortNames, Categories: k.Categories,
		})
		if k.HasStatus {
			l.APIResources = append(l.APIResources, metav1.APIResource{
				Name: k.Resource + "/status", Namespaced: k.Namespaced, Kind: k.Kind, Verbs: subVerbs,
			})
		}
		if r.scale {
			l.APIResources = append(l.APIResources, metav1.APIResource{
				Name: k.Resource + "/scale", Namespaced: k.Namespaced, Group: "autoscaling", Version: "v1",
				Kind: "Scale", Verbs: subVerbs,
			})
		}
		aggResources[k.Group] = append(aggResources[k.Group], aggregatedResource(r))
	}
	groupList := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, g := range groupOrder {
		gvd := metav1.GroupVersionForDiscovery{GroupVersion: g + "/v1", Version: "v1"}
		group := metav1.APIGroup{
			TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
			Name:     g, Versions: []metav1.GroupVersionForDiscovery{gvd}, PreferredVersion: gvd,
		}
		groupList.Groups = append(groupList.Groups, group)
		if err := d.add("/apis/"+g, &group); err != nil {
			return nil, err
		}
	}
	if err := d.add("/apis", &groupList); err != nil {
		return nil, err
	}
	if err := d.addAggregated("/api", []string{""}, aggResources); err != nil {
		return nil, err
	}
	if err := d.addAggregated("/apis", groupOrder, aggResources); err != nil {
		return nil, err
	}
	for gv, l := range lists {
		path := "/apis/" + gv
		if gv == "v1" {
			path = "/api/v1"
		}
		if err := d.add(path, l); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *discovery) add(path string, doc any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	d.docs[path] = append(b, '\n')
	return nil
}

// aggregatedResource describes r for aggregated discovery, with the same
// content as its legacy APIResource entries.
func aggregatedResource(r *resource) apidiscoveryv2.APIResourceDiscovery {
	gv := r.GroupVersion()
	scope := apidiscoveryv2.ScopeCluster
	if r.Namespaced {
		scope = apidiscoveryv2.ScopeNamespace
	}
	out := apidiscoveryv2.APIResourceDiscovery{
		Resource:         r.Resource,
		ResponseKind:     &metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: r.Kind.Kind},
		Scope:            scope,
		SingularResource: r.singular,
		Verbs:            resourceVerbs,
		ShortNames:       r.ShortNames,
		Categories:       r.Categories,
	}
	if r.HasStatus {
		out.Subresources = append(out.Subresources, apidiscoveryv2.APISubresourceDiscovery{
			Subresource:  "status",
			ResponseKind: out.ResponseKind,
			Verbs:        subVerbs,
		})
	}
	if r.scale {
		out.Subresources = append(out.Subresources, apidiscoveryv2.APISubresourceDiscovery{
			Subresource:  "scale",
			ResponseKind: &metav1.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"},
			Verbs:        subVerbs,
		})
	}
	return out
}

// addAggregated encodes the aggregated document of path, listing groups in
// order, once per served version.
func (d *discovery) addAggregated(path string, groups []string, resources map[string][]apidiscoveryv2.APIResourceDiscovery) error {
	list := apidiscoveryv2.APIGroupDiscoveryList{Items: []apidiscoveryv2.APIGroupDiscovery{}}
	for _, g := range groups {
		list.Items = append(list.Items, apidiscoveryv2.APIGroupDiscovery{
			ObjectMeta: metav1.ObjectMeta{Name: g},
			Versions: []apidiscoveryv2.APIVersionDiscovery{{
				Version: "v1", Resources: resources[g], Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
			}},
		})
	}
	for _, v := range aggVersions {
		// v2beta1 has the same fields; only the apiVersion differs.
		list.TypeMeta = metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/" + v}
		b, err := json.Marshal(&list)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		d.aggregated[aggKey(path, v)] = aggDoc{body: append(b, '\n'), etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	}
	return nil
}

// aggregatedVersion returns the aggregated discovery version an Accept
// header asks for ("" for the legacy documents): the first media range that
// names a served APIGroupDiscoveryList, unless a plain JSON range comes
// before it.
func aggregatedVersion(accept string) string {
	for _, part := range strings.Split(accept, ",") {
		base, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if base != mediaJSON {
			if base == "*/*" || base == "application/*" {
				return ""
			}
			continue
		}
		if params["g"] == "" && params["as"] == "" {
			return "" // plain JSON: the legacy document
		}
		if params["g"] == "apidiscovery.k8s.io" && params["as"] == "APIGroupDiscoveryList" {
			for _, v := range aggVersions {
				if params["v"] == v {
					return v
				}
			}
		}
	}
	return ""
}

// serveAggregated answers /api or /apis with its aggregated document when
// the client asks for one; it reports whether it did.
func (d *discovery) serveAggregated(rq *request, path string) bool {
	v := aggregatedVersion(rq.r.Header.Get("Accept"))
	if v == "" {
		return false
	}
	doc := d.aggregated[aggKey(path, v)]
	h := rq.w.Header()
	h.Set("ETag", doc.etag)
	if rq.r.Header.Get("If-None-Match") == doc.etag {
		rq.w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", mediaJSON+";g=apidiscovery.k8s.io;v="+v+";as=APIGroupDiscoveryList")
	h.Set("Content-Length", strconv.Itoa(len(doc.body)))
	rq.w.WriteHeader(http.StatusOK)
	if rq.r.Method != http.MethodHead {
		_, _ = rq.w.Write(doc.body)
	}
	return true
}

func (d *discovery) serve(rq *request, path string) {
	if path == "/api" || path == "/apis" {
		rq.w.Header().Set("Vary", "Accept") // legacy or aggregated
		if d.serveAggregated(rq, path) {
			return
		}
	}
	if path == "/api" {
		host := rq.r.Host
		rq.writeJSON(http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
			Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
				{ClientCIDR: "0.0.0.0/0", ServerAddress: host},
			},
		})
		return
	}
	doc, ok := d.docs[path]
	if !ok {
		rq.fail(notFoundPath())
		return
	}
	writeRaw(rq, doc)
}

// writeRaw answers with a pre-encoded JSON document.
func writeRaw(rq *request, doc []byte) {
	h := rq.w.Header()
	h.Set("Content-Type", mediaJSON)
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	rq.w.WriteHeader(http.StatusOK)
	if rq.r.Method != http.MethodHead {
		_, _ = rq.w.Write(doc)
	}
}
