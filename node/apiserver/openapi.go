package apiserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/node/state"
)

// openAPI serves an OpenAPI v3 description: one PATCH operation per
// resource carrying x-kubernetes-group-version-kind and the fieldValidation
// parameter. That is what kubectl looks for to switch to server-side field
// validation (fieldValidation=Strict) instead of validating on the client.
// Its components hold the schema of every kind and what it contains, with
// the API's field documentation, for `kubectl explain` (see schemaGen).
//
// /openapi/v2 carries the same operations. kubectl 1.27 and 1.28 fail
// `apply` when it is missing (their validator loads it unconditionally);
// client-go asks for it as a gnostic protobuf document.
type openAPI struct {
	root   []byte
	gvs    map[string][]byte // "api/v1", "apis/apps/v1" → document
	v2JSON []byte
	v2PB   []byte
}

// mediaOpenAPIv2PB is the Content-Type of the protobuf v2 document. Clients
// ask for "…spec.v2@v1.0+protobuf"; the answer spells it with a dot, as
// kube-openapi does, because "@" is not valid in a media type and client-go
// parses the response's.
const mediaOpenAPIv2PB = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

type oaV2Param struct {
	Name string `json:"name"`
	In   string `json:"in"`
	Type string `json:"type"`
}

type oaV2Operation struct {
	OperationID string                       `json:"operationId"`
	Consumes    []string                     `json:"consumes,omitempty"`
	Parameters  []oaV2Param                  `json:"parameters"`
	Responses   map[string]map[string]string `json:"responses"`
	Action      string                       `json:"x-kubernetes-action"`
	GVK         map[string]string            `json:"x-kubernetes-group-version-kind"`
}

type oaParam struct {
	Name     string            `json:"name"`
	In       string            `json:"in"`
	Required bool              `json:"required,omitempty"`
	Schema   map[string]string `json:"schema"`
	Desc     string            `json:"description,omitempty"`
}

type oaOperation struct {
	OperationID string                       `json:"operationId"`
	Parameters  []oaParam                    `json:"parameters"`
	Responses   map[string]map[string]string `json:"responses"`
	Action      string                       `json:"x-kubernetes-action"`
	GVK         map[string]string            `json:"x-kubernetes-group-version-kind"`
}

type oaPath struct {
	Parameters []oaParam    `json:"parameters,omitempty"`
	Get        *oaOperation `json:"get,omitempty"`
	Patch      *oaOperation `json:"patch,omitempty"`
}

func newOpenAPI(version string) (*openAPI, error) {
	o := &openAPI{gvs: map[string][]byte{}}
	paths := map[string]map[string]*oaPath{}
	str := map[string]string{"type": "string"}
	queryParams := []oaParam{
		{Name: "dryRun", In: "query", Schema: str, Desc: "All: validate only"},
		{Name: "fieldManager", In: "query", Schema: str},
		{Name: "fieldValidation", In: "query", Schema: str, Desc: "Ignore, Warn (default) or Strict"},
		{Name: "force", In: "query", Schema: map[string]string{"type": "boolean"}},
	}
	v2Paths := map[string]map[string]*oaV2Operation{}
	schemas := map[string]*schemaGen{} // by gvPath
	for _, k := range state.Kinds {
		gvPath := "api/v1"
		prefix := "/api/v1/"
		if k.Group != "" {
			gvPath = "apis/" + k.Group + "/" + k.Version
			prefix = "/" + gvPath + "/"
		}
		if paths[gvPath] == nil {
			paths[gvPath] = map[string]*oaPath{}
			schemas[gvPath] = newSchemaGen()
		}
		schemas[gvPath].kind(k.New(), k.Group, k.Version, k.Kind)
		params := []oaParam{{Name: "name", In: "path", Required: true, Schema: str}}
		p := prefix + k.Resource + "/{name}"
		if k.Namespaced {
			p = prefix + "namespaces/{namespace}/" + k.Resource + "/{name}"
			params = append(params, oaParam{Name: "namespace", In: "path", Required: true, Schema: str})
		}
		gvk := map[string]string{"group": k.Group, "version": k.Version, "kind": k.Kind}
		id := opID(k)
		v2Paths[p] = map[string]*oaV2Operation{"patch": {
			OperationID: "patch" + id, Action: "patch", GVK: gvk,
			Consumes: []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"},
			Parameters: []oaV2Param{
				{Name: "dryRun", In: "query", Type: "string"}, {Name: "fieldManager", In: "query", Type: "string"},
				{Name: "fieldValidation", In: "query", Type: "string"}, {Name: "force", In: "query", Type: "boolean"},
			},
			Responses: map[string]map[string]string{"200": {"description": "OK"}},
		}}
		paths[gvPath][p] = &oaPath{
			Parameters: params,
			Get: &oaOperation{OperationID: "read" + id, Parameters: []oaParam{}, Action: "get", GVK: gvk,
				Responses: map[string]map[string]string{"200": {"description": "OK"}}},
			Patch: &oaOperation{OperationID: "patch" + id, Parameters: queryParams, Action: "patch", GVK: gvk,
				Responses: map[string]map[string]string{"200": {"description": "OK"}, "201": {"description": "Created"}}},
		}
	}
	type rootEntry struct {
		URL string `json:"serverRelativeURL"`
	}
	root := map[string]map[string]rootEntry{"paths": {}}
	for gv, ps := range paths {
		doc := map[string]any{
			"openapi":    "3.0.0",
			"info":       map[string]string{"title": "Shoal Kubernetes API", "version": version},
			"paths":      ps,
			"components": map[string]any{"schemas": schemas[gv].schemas},
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		o.gvs[gv] = b
		sum := sha256.Sum256(b)
		root["paths"][gv] = rootEntry{URL: "/openapi/v3/" + gv + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:16]))}
	}
	var err error
	if o.root, err = json.Marshal(root); err != nil {
		return nil, err
	}
	if o.v2JSON, err = json.Marshal(map[string]any{
		"swagger": "2.0",
		"info":    map[string]string{"title": "Shoal Kubernetes API", "version": version},
		"paths":   v2Paths,
	}); err != nil {
		return nil, err
	}
	doc, err := openapiv2.ParseDocument(o.v2JSON)
	if err != nil {
		return nil, fmt.Errorf("building the OpenAPI v2 document: %w", err)
	}
	if o.v2PB, err = proto.Marshal(doc); err != nil {
		return nil, fmt.Errorf("encoding the OpenAPI v2 document: %w", err)
	}
	return o, nil
}

// opID names an operation as Kubernetes does: patchCoreV1NamespacedConfigMap.
func opID(k *state.Kind) string {
	g := "Core"
	if k.Group != "" {
		g = strings.ToUpper(k.Group[:1]) + k.Group[1:]
	}
	ns := ""
	if k.Namespaced {
		ns = "Namespaced"
	}
	return g + strings.ToUpper(k.Version[:1]) + k.Version[1:] + ns + k.Kind
}

func (o *openAPI) serve(rq *request, path string) {
	if path == "/openapi/v2" || path == "/swagger-2.0.0.pb-v1" {
		if strings.Contains(rq.r.Header.Get("Accept"), "protobuf") || path == "/swagger-2.0.0.pb-v1" {
			h := rq.w.Header()
			h.Set("Content-Type", mediaOpenAPIv2PB)
			h.Set("Content-Length", strconv.Itoa(len(o.v2PB)))
			rq.w.WriteHeader(http.StatusOK)
			_, _ = rq.w.Write(o.v2PB)
			return
		}
		writeRaw(rq, o.v2JSON)
		return
	}
	if path == "/openapi/v3" {
		writeRaw(rq, o.root)
		return
	}
	doc, ok := o.gvs[strings.TrimPrefix(path, "/openapi/v3/")]
	if !ok {
		rq.fail(notFoundPath())
		return
	}
	writeRaw(rq, doc)
}
