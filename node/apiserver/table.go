package apiserver

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/shoal-dev/shoal/node/apiserver/printers"
	"github.com/shoal-dev/shoal/node/state"
)

// tableVersion returns "v1" or "v1beta1" when the Accept header's first
// acceptable clause asks for a meta.k8s.io Table, "" otherwise.
func tableVersion(accept string) string {
	if !strings.Contains(accept, "as=Table") {
		return ""
	}
	for _, clause := range strings.Split(accept, ",") {
		parts := strings.Split(clause, ";")
		var as, g, v string
		for _, p := range parts[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
			switch k {
			case "as":
				as = val
			case "g":
				g = val
			case "v":
				v = val
			}
		}
		mt := strings.TrimSpace(parts[0])
		if as == "" {
			if mt == mediaJSON || mt == "*/*" || mt == "application/*" {
				return "" // plain JSON is acceptable before any Table
			}
			continue
		}
		if as == "Table" && g == "meta.k8s.io" && (v == "v1" || v == "v1beta1") {
			return v
		}
	}
	return ""
}

// includeObject is the includeObject query parameter for Table answers.
func (rq *request) includeObject() (metav1.IncludeObjectPolicy, error) {
	switch v := metav1.IncludeObjectPolicy(rq.query.Get("includeObject")); v {
	case "", metav1.IncludeMetadata:
		return metav1.IncludeMetadata, nil
	case metav1.IncludeNone, metav1.IncludeObject:
		return v, nil
	default:
		return "", badRequest("includeObject must be one of None, Metadata or Object, not %q", v)
	}
}

// toTable renders objs as a Table of meta.k8s.io/<version>. The printers
// always send every column and mark the -o wide ones with priority 1; kubectl
// hides those unless asked.
func (rq *request) toTable(objs []state.Object, version string) (*metav1.Table, error) {
	inc, err := rq.includeObject()
	if err != nil {
		return nil, err
	}
	t, err := printers.ToTable(rq.res.Kind, objs, rq.s.now())
	if err != nil {
		return nil, fmt.Errorf("printing %s as a table: %w", rq.res.Resource, err)
	}
	if t == nil {
		t = &metav1.Table{}
	}
	t.TypeMeta = metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/" + version}
	if len(t.Rows) != len(objs) {
		return t, nil // the printer decided the rows: leave their objects alone
	}
	for i := range t.Rows {
		switch inc {
		case metav1.IncludeNone:
			t.Rows[i].Object = runtime.RawExtension{}
		case metav1.IncludeObject:
			t.Rows[i].Object = runtime.RawExtension{Object: objs[i]}
		default:
			t.Rows[i].Object = runtime.RawExtension{Object: partialMetadata(objs[i], version)}
		}
	}
	return t, nil
}

// partialMetadata is the PartialObjectMetadata view of obj.
func partialMetadata(obj state.Object, version string) *metav1.PartialObjectMetadata {
	p := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/" + version}}
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		if m, ok := a.GetObjectMeta().(*metav1.ObjectMeta); ok {
			p.ObjectMeta = *m
		}
	}
	return p
}
