package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Media types the API reads.
const (
	mediaJSON     = "application/json"
	mediaYAML     = "application/yaml"
	mediaProtobuf = "application/vnd.kubernetes.protobuf"
)

// scheme knows every type that can arrive as a protobuf body.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, autoscalingv1.AddToScheme, discoveryv1.AddToScheme,
		schedulingv1.AddToScheme, rbacv1.AddToScheme, authorizationv1.AddToScheme, authenticationv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("apiserver: building scheme: %v", err))
		}
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	metav1.AddMetaToScheme(s)
	return s
}()

// protobufSerializer decodes kubectl's and client-go's protobuf bodies: the
// 4-byte "k8s\x00" magic, then a runtime.Unknown envelope.
var protobufSerializer = func() runtime.Serializer {
	cf := serializer.NewCodecFactory(scheme)
	for _, info := range cf.SupportedMediaTypes() {
		if info.MediaType == mediaProtobuf {
			return info.Serializer
		}
	}
	return protobuf.NewSerializer(scheme, scheme)
}()

// bufPool recycles request-body buffers. Decoders copy what they keep, so a
// buffer can be reused once the request has been decoded.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuf(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bufPool.Put(b)
}

// readBody reads the request body into buf, at most max bytes.
func readBody(r *http.Request, buf *bytes.Buffer, max int64) error {
	if r.ContentLength > max {
		return errBodyTooLarge
	}
	if r.Body == nil {
		return nil
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge
		}
		return badRequest("reading the request body: %v", err)
	}
	if n > max {
		return errBodyTooLarge
	}
	return nil
}

// mediaType returns the bare, lower-case media type of a Content-Type value.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// fieldValidation is the fieldValidation query parameter.
type fieldValidation int

const (
	validationWarn fieldValidation = iota // the default
	validationStrict
	validationIgnore
)

func (rq *request) fieldValidation() (fieldValidation, error) {
	switch v := rq.query.Get("fieldValidation"); v {
	case "", "Warn":
		return validationWarn, nil
	case "Strict":
		return validationStrict, nil
	case "Ignore":
		return validationIgnore, nil
	default:
		return 0, badRequest("fieldValidation must be one of Ignore, Warn or Strict, not %q", v)
	}
}

// decodeBody decodes the request body into into (a typed object of gvk),
// honouring fieldValidation. A body naming another kind or version is a 400.
func (rq *request) decodeBody(into runtime.Object, gvk schema.GroupVersionKind) error {
	buf := getBuf()
	defer putBuf(buf)
	if err := readBody(rq.r, buf, rq.s.maxBody); err != nil {
		return err
	}
	fv, err := rq.fieldValidation()
	if err != nil {
		return err
	}
	strict, err := decodeObject(mediaType(rq.r.Header.Get("Content-Type")), buf.Bytes(), into, gvk, fv != validationIgnore)
	if err != nil {
		return err
	}
	return rq.handleStrict(strict, gvk, into)
}

// handleStrict turns unknown and duplicate fields into a 422 (Strict) or
// warnings (Warn).
func (rq *request) handleStrict(strict []error, gvk schema.GroupVersionKind, obj runtime.Object) error {
	if len(strict) == 0 {
		return nil
	}
	fv, _ := rq.fieldValidation()
	switch fv {
	case validationIgnore:
		return nil
	case validationWarn:
		for _, e := range strict {
			rq.warnings = append(rq.warnings, e.Error())
		}
		return nil
	}
	var errs field.ErrorList
	for _, e := range strict {
		errs = append(errs, strictFieldError(e))
	}
	name := ""
	if o, ok := obj.(interface{ GetName() string }); ok {
		name = o.GetName()
	}
	return apierrors.NewInvalid(gvk.GroupKind(), name, errs)
}

// strictFieldError turns a strict decoding error into a field error with the
// offending path.
func strictFieldError(e error) *field.Error {
	msg := e.Error()
	path := ""
	if fp, ok := e.(interface{ FieldPath() string }); ok {
		path = fp.FieldPath()
	}
	if path == "" {
		return &field.Error{Type: field.ErrorTypeInvalid, Field: "<body>", BadValue: "", Detail: msg}
	}
	if strings.HasPrefix(msg, "duplicate field") {
		return &field.Error{Type: field.ErrorTypeDuplicate, Field: path, BadValue: "", Detail: "duplicate field"}
	}
	return &field.Error{Type: field.ErrorTypeForbidden, Field: path, Detail: "unknown field (field not declared in schema)"}
}

// decodeObject decodes data of media type mt into into. It returns the
// strict-decoding errors (unknown and duplicate fields) when collectStrict is
// set; a malformed body or a body of another kind is a 400 and a media type
// it does not read is a 415.
func decodeObject(mt string, data []byte, into runtime.Object, gvk schema.GroupVersionKind, collectStrict bool) ([]error, error) {
	var strict []error
	switch mt {
	case "", mediaJSON, "*/*":
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, badRequest("the request body is empty")
		}
		var err error
		if strict, err = unmarshalJSON(data, into, collectStrict); err != nil {
			return nil, badRequest("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
	case mediaYAML, "application/x-yaml", "text/yaml":
		if collectStrict {
			if _, err := yaml.YAMLToJSONStrict(data); err != nil {
				if _, err2 := yaml.YAMLToJSON(data); err2 == nil {
					strict = append(strict, fmt.Errorf("%v", err))
				}
			}
		}
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			return nil, badRequest("%s in version %q cannot be handled as a %s: malformed YAML: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			return nil, badRequest("the request body is empty")
		}
		s, err := unmarshalJSON(js, into, collectStrict)
		if err != nil {
			return nil, badRequest("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
		strict = append(strict, s...)
	case mediaProtobuf:
		out, actual, err := protobufSerializer.Decode(data, &gvk, into)
		if err != nil {
			return nil, badRequest("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
		if out != into || actual == nil || *actual != gvk {
			got := "unknown"
			if actual != nil {
				got = actual.String()
			}
			return nil, badRequest("the body is a %s, expected %s", got, gvk.String())
		}
	default:
		return nil, unsupportedMediaType(fmt.Sprintf("the body of the request was in an unknown format %q: accepted media types are application/json, application/yaml and application/vnd.kubernetes.protobuf", mt))
	}
	return strict, checkKind(into, gvk)
}

// unmarshalJSON decodes JSON case-sensitively into a typed object, as the
// Kubernetes JSON serializer does, collecting unknown and duplicate fields.
func unmarshalJSON(data []byte, into any, collectStrict bool) ([]error, error) {
	if !collectStrict {
		return nil, kjson.UnmarshalCaseSensitivePreserveInts(data, into)
	}
	return kjson.UnmarshalStrict(data, into)
}

// checkKind verifies the apiVersion and kind the body declared and sets them
// when it declared none.
func checkKind(obj runtime.Object, want schema.GroupVersionKind) error {
	got := obj.GetObjectKind().GroupVersionKind()
	if got.Kind != "" && got.Kind != want.Kind {
		return badRequest("the kind in the body (%s) does not match the expected kind (%s)", got.Kind, want.Kind)
	}
	if got.Version != "" && (got.Group != want.Group || got.Version != want.Version) {
		return badRequest("the API version in the data (%s) does not match the expected API version (%s)", got.GroupVersion().String(), want.GroupVersion().String())
	}
	obj.GetObjectKind().SetGroupVersionKind(want)
	return nil
}

// writeJSON answers with obj as JSON (every answer is JSON, also when the
// client accepts protobuf: clients decode by the response Content-Type).
func (rq *request) writeJSON(code int, obj any) {
	buf := getBuf()
	defer putBuf(buf)
	if err := json.NewEncoder(buf).Encode(obj); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		fmt.Fprintf(buf, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":"InternalError","code":500}`+"\n", "encoding the response: "+err.Error())
	}
	h := rq.w.Header()
	h.Set("Content-Type", mediaJSON)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	for _, w := range rq.warnings {
		h.Add("Warning", "299 - "+strconv.Quote(w))
	}
	rq.w.WriteHeader(code)
	if rq.r.Method != http.MethodHead {
		_, _ = rq.w.Write(buf.Bytes())
	}
}
