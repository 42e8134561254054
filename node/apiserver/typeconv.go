package apiserver

import (
	_ "embed" // the schemas
	"fmt"
	"reflect"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"sigs.k8s.io/structured-merge-diff/v4/typed"
)

//go:generate go run ./internal/smdschema/gen -o smdschema.yaml

// smdSchemaYAML holds the structured-merge-diff schemas of the served types,
// cut out of client-go's (see package internal/smdschema): importing
// client-go's applyconfigurations for them would link every API group into
// the binary.
//
//go:embed smdschema.yaml
var smdSchemaYAML string

// typeConverter converts the served objects to structured-merge-diff values.
// The schemas are parsed on first use (tens of milliseconds), so a node that
// never sees an apply or a fieldManager never pays for them.
var typeConverter = sync.OnceValues(func() (managedfields.TypeConverter, error) {
	p, err := typed.NewParser(typed.YAMLObject(smdSchemaYAML))
	if err != nil {
		return nil, fmt.Errorf("parsing the embedded structured-merge-diff schemas: %w", err)
	}
	return smdTypeConverter{p}, nil
})

// smdTypeConverter is client-go's testing.TypeConverter over the embedded
// schemas: a type's schema name is its Go package path and name, reversed
// as OpenAPI names them (io.k8s.api.core.v1.Pod).
type smdTypeConverter struct{ parser *typed.Parser }

func (tc smdTypeConverter) ObjectToTyped(obj runtime.Object, opts ...typed.ValidationOptions) (*typed.TypedValue, error) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	example, err := scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	rt := reflect.TypeOf(example).Elem()
	t := tc.parser.Type(openAPIName(rt.PkgPath() + "." + rt.Name()))
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return t.FromUnstructured(u.UnstructuredContent(), opts...)
	}
	return t.FromStructured(obj, opts...)
}

func (smdTypeConverter) TypedToObject(value *typed.TypedValue) (runtime.Object, error) {
	u, ok := value.AsValue().Unstructured().(map[string]any)
	if !ok {
		return nil, fmt.Errorf("failed to convert value to unstructured for type %T", value.AsValue().Unstructured())
	}
	return &unstructured.Unstructured{Object: u}, nil
}

// openAPIName turns k8s.io/api/core/v1.Pod into io.k8s.api.core.v1.Pod.
func openAPIName(name string) string {
	parts := strings.Split(name, "/")
	if host := strings.Split(parts[0], "."); len(host) > 1 {
		for i, j := 0, len(host)-1; i < j; i, j = i+1, j-1 {
			host[i], host[j] = host[j], host[i]
		}
		parts[0] = strings.Join(host, ".")
	}
	return strings.Join(parts, ".")
}
