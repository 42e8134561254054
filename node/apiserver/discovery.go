package apiserver

import (
	"encoding/json"
	"net/http"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// discovery holds the legacy discovery documents, encoded once.
type discovery struct {
	resources map[string]*resource // "group/plural" ("" group for core)
	groups    map[string]bool      // API groups other than core
	docs      map[string][]byte    // path → JSON document
}

var (
	resourceVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	subVerbs      = metav1.Verbs{"get", "patch", "update"}
)

func newDiscovery() (*discovery, error) {
	d := &discovery{resources: map[string]*resource{}, groups: map[string]bool{}, docs: map[string][]byte{}}
	lists := map[string]*metav1.APIResourceList{}
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

func (d *discovery) serve(rq *request, path string) {
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
