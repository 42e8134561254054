package apiserver

import (
	"reflect"
	"strings"

	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// schemaGen builds OpenAPI v3 component schemas for Kubernetes Go types by
// reflection, as Kubernetes' generated definitions describe them: named
// "io.k8s.api.core.v1.Pod", properties from the json tags, descriptions
// from the types' SwaggerDoc methods (the API's field documentation,
// compiled into k8s.io/api), strategic-merge-patch extensions from the
// patchStrategy/patchMergeKey tags, and x-kubernetes-group-version-kind on
// the top-level kinds. `kubectl explain` reads them.
type schemaGen struct {
	schemas map[string]any // component name → schema
}

func newSchemaGen() *schemaGen { return &schemaGen{schemas: map[string]any{}} }

// swaggerDoc is what k8s.io/api and apimachinery types implement: field
// descriptions by json name, the type's own under "".
type swaggerDoc interface{ SwaggerDoc() map[string]string }

// schemaName is the component name Kubernetes gives a Go type.
func schemaName(t reflect.Type) string {
	p := t.PkgPath()
	if rest, ok := strings.CutPrefix(p, "k8s.io/"); ok {
		p = "io.k8s." + rest
	}
	return strings.ReplaceAll(p, "/", ".") + "." + t.Name()
}

// Types that encode as something other than their Go structure.
var (
	typeTime        = reflect.TypeFor[metav1.Time]()
	typeMicroTime   = reflect.TypeFor[metav1.MicroTime]()
	typeDuration    = reflect.TypeFor[metav1.Duration]()
	typeQuantity    = reflect.TypeFor[apiresource.Quantity]()
	typeIntOrString = reflect.TypeFor[intstr.IntOrString]()
	typeRawExt      = reflect.TypeFor[runtime.RawExtension]()
	typeFieldsV1    = reflect.TypeFor[metav1.FieldsV1]()
)

// special describes the types that marshal themselves.
func special(t reflect.Type) (map[string]any, bool) {
	switch t {
	case typeTime:
		return map[string]any{"type": "string", "format": "date-time",
			"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON. Wrappers are provided for many of the factory methods that the time package offers."}, true
	case typeMicroTime:
		return map[string]any{"type": "string", "format": "date-time",
			"description": "MicroTime is version of Time with microsecond level precision."}, true
	case typeDuration:
		return map[string]any{"type": "string", "description": "A duration such as \"300ms\" or \"2h45m\"."}, true
	case typeQuantity:
		// No single type: explain names it (Quantity), as for Kubernetes.
		return map[string]any{"oneOf": []any{map[string]string{"type": "string"}, map[string]string{"type": "number"}},
			"description": "Quantity is a fixed-point representation of a number, such as 100m (0.1), 128Mi or 1.5G."}, true
	case typeIntOrString:
		return map[string]any{"x-kubernetes-int-or-string": true,
			"description": "IntOrString is a type that can hold an int32 or a string."}, true
	case typeRawExt:
		return map[string]any{"type": "object", "description": "RawExtension holds an embedded object."}, true
	case typeFieldsV1:
		return map[string]any{"type": "object",
			"description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format."}, true
	}
	return nil, false
}

// kind adds the schema of a top-level kind and returns its name.
func (g *schemaGen) kind(obj any, group, version, kind string) string {
	t := reflect.TypeOf(obj)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := g.named(t)
	s := g.schemas[name].(map[string]any)
	s["x-kubernetes-group-version-kind"] = []map[string]string{{"group": group, "version": version, "kind": kind}}
	return name
}

// named adds the schema of struct type t (once) and returns its name.
func (g *schemaGen) named(t reflect.Type) string {
	name := schemaName(t)
	if _, ok := g.schemas[name]; ok {
		return name
	}
	if s, ok := special(t); ok {
		g.schemas[name] = s
		return name
	}
	s := map[string]any{"type": "object"}
	g.schemas[name] = s // before the fields: types may refer to themselves
	if d := docsOf(t)[""]; d != "" {
		s["description"] = d
	}
	props := map[string]any{}
	g.fields(t, props)
	if len(props) > 0 {
		s["properties"] = props
	}
	return name
}

// docsOf returns the field documentation of struct type t.
func docsOf(t reflect.Type) map[string]string {
	if d, ok := reflect.New(t).Elem().Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	return nil
}

// fields adds the properties of struct type t to props, inlining embedded
// structs as encoding/json does, each field with its description.
func (g *schemaGen) fields(t reflect.Type, props map[string]any) {
	docs := docsOf(t)
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		jsonName, opts, _ := strings.Cut(tag, ",")
		if jsonName == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && (jsonName == "" || strings.Contains(opts, "inline")) {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, props)
				continue
			}
		}
		if jsonName == "" {
			jsonName = f.Name
		}
		p := g.schema(f.Type)
		if ref, ok := p["$ref"]; ok {
			// A property's reference sits in allOf so that its description
			// can sit beside it, as in Kubernetes' own documents.
			p = map[string]any{"allOf": []any{map[string]any{"$ref": ref}}}
		}
		if d := docs[jsonName]; d != "" {
			p["description"] = d
		}
		if v := f.Tag.Get("patchStrategy"); v != "" {
			p["x-kubernetes-patch-strategy"] = v
		}
		if v := f.Tag.Get("patchMergeKey"); v != "" {
			p["x-kubernetes-patch-merge-key"] = v
		}
		props[jsonName] = p
	}
}

// schema is the schema of a value of type t; structs are referred to.
func (g *schemaGen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		return map[string]any{"$ref": "#/components/schemas/" + g.named(t)}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int32, reflect.Uint32, reflect.Int16, reflect.Uint16, reflect.Int8, reflect.Uint8:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	default:
		return map[string]any{}
	}
}
