package apiserver

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/node/state"
)

// TestOpenAPISchemas checks the component schemas of every group version
// document: each kind is there with its group-version-kind, every reference
// resolves inside the document, and the strategic merge patch keys and the
// field documentation come through.
func TestOpenAPISchemas(t *testing.T) {
	o, err := newOpenAPI("v1.33.0")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]map[string]map[string]any{} // gv path → schemas
	for gv, b := range o.gvs {
		var doc struct {
			Components struct {
				Schemas map[string]map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		docs[gv] = doc.Components.Schemas
		var refs []string
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if r, ok := v["$ref"].(string); ok {
					refs = append(refs, r)
				}
				for _, x := range v {
					walk(x)
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		for _, s := range doc.Components.Schemas {
			walk(s)
		}
		if len(refs) == 0 {
			t.Fatalf("%s: no references", gv)
		}
		for _, r := range refs {
			name, ok := strings.CutPrefix(r, "#/components/schemas/")
			if _, found := doc.Components.Schemas[name]; !ok || !found {
				t.Fatalf("%s: reference %q does not resolve", gv, r)
			}
		}
	}
	for _, k := range state.Kinds {
		gv := "api/v1"
		if k.Group != "" {
			gv = "apis/" + k.Group + "/" + k.Version
		}
		found := false
		for _, s := range docs[gv] {
			gvks, _ := s["x-kubernetes-group-version-kind"].([]any)
			for _, x := range gvks {
				m := x.(map[string]any)
				if m["group"] == k.Group && m["version"] == k.Version && m["kind"] == k.Kind {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: no schema for %s", gv, k.Kind)
		}
	}
	prop := func(gv, schema, field string) map[string]any {
		t.Helper()
		s, ok := docs[gv][schema]
		if !ok {
			t.Fatalf("%s: no schema %s", gv, schema)
		}
		p, ok := s["properties"].(map[string]any)[field].(map[string]any)
		if !ok {
			t.Fatalf("%s: %s has no %s", gv, schema, field)
		}
		return p
	}
	c := prop("api/v1", "io.k8s.api.core.v1.PodSpec", "containers")
	if c["x-kubernetes-patch-merge-key"] != "name" || c["x-kubernetes-patch-strategy"] != "merge" || c["type"] != "array" {
		t.Fatalf("PodSpec.containers = %v", c)
	}
	if ref := c["items"].(map[string]any)["$ref"]; ref != "#/components/schemas/io.k8s.api.core.v1.Container" {
		t.Fatalf("PodSpec.containers items = %v", c["items"])
	}
	if p := prop("api/v1", "io.k8s.api.core.v1.ServiceSpec", "ports"); p["x-kubernetes-patch-merge-key"] != "port" {
		t.Fatalf("ServiceSpec.ports = %v", p)
	}
	if p := prop("api/v1", "io.k8s.api.core.v1.Pod", "kind"); !strings.HasPrefix(p["description"].(string), "Kind is a string value") {
		t.Fatalf("Pod.kind (inlined TypeMeta) = %v", p)
	}
	if p := prop("apis/apps/v1", "io.k8s.api.apps.v1.Deployment", "metadata"); p["allOf"] == nil || p["description"] == nil {
		t.Fatalf("Deployment.metadata = %v", p)
	}
	if p := prop("api/v1", "io.k8s.api.core.v1.Secret", "data"); p["additionalProperties"].(map[string]any)["format"] != "byte" {
		t.Fatalf("Secret.data = %v", p)
	}
	if p := prop("apis/batch/v1", "io.k8s.api.batch.v1.JobSpec", "activeDeadlineSeconds"); p["type"] != "integer" || p["format"] != "int64" {
		t.Fatalf("JobSpec.activeDeadlineSeconds = %v", p)
	}
}
