package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/mergepatch"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/shoal-dev/shoal/node/state"
)

// maxJSONPatchOperations bounds a JSON patch, as in Kubernetes.
const maxJSONPatchOperations = 10000

var jsonPatchLimitOnce sync.Once

// limitJSONPatchCopies bounds how much "copy" operations may grow a document
// (the library's limit is process-wide and unlimited by default).
func limitJSONPatchCopies(maxBody int64) {
	jsonPatchLimitOnce.Do(func() {
		if jsonpatch.AccumulatedCopySizeLimit == 0 {
			jsonpatch.AccumulatedCopySizeLimit = 4 * maxBody
		}
	})
}

// patcher applies one decoded patch to JSON documents.
type patcher struct {
	typ   types.PatchType
	raw   []byte
	ops   jsonpatch.Patch        // JSON patch
	smp   map[string]interface{} // strategic merge patch
	limit int64                  // largest patched document
}

func newPatcher(mt string, body []byte, limit int64) (*patcher, error) {
	p := &patcher{typ: types.PatchType(mt), raw: body, limit: limit}
	switch p.typ {
	case types.JSONPatchType:
		ops, err := jsonpatch.DecodePatch(body)
		if err != nil {
			return nil, badRequest("decoding the JSON patch: %v", err)
		}
		if len(ops) > maxJSONPatchOperations {
			return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(ops)))
		}
		p.ops = ops
	case types.MergePatchType:
		var m map[string]interface{}
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, badRequest("decoding the merge patch: it must be a JSON object: %v", err)
		}
	case types.StrategicMergePatchType:
		if err := json.Unmarshal(body, &p.smp); err != nil {
			return nil, badRequest("decoding the strategic merge patch: it must be a JSON object: %v", err)
		}
	case types.ApplyCBORPatchType:
		return nil, unsupportedMediaType("server-side apply with a CBOR body (application/apply-patch+cbor) is not supported by Shoal: send application/apply-patch+yaml")
	default:
		return nil, unsupportedMediaType(fmt.Sprintf("the patch content type %q is not supported: use application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml", mt))
	}
	return p, nil
}

// apply patches the JSON document doc; schema is a typed object of the
// document's kind (strategic merge patch reads its struct tags).
func (p *patcher) apply(doc []byte, schema any) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil { // third-party patch code: never take the server down
			out, err = nil, badRequest("the patch could not be applied: %v", r)
		}
	}()
	switch p.typ {
	case types.JSONPatchType:
		out, err = p.ops.Apply(doc)
		if err != nil {
			return nil, &apierrors.StatusError{ErrStatus: metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity, Reason: metav1.StatusReasonInvalid,
				Message: fmt.Sprintf("the JSON patch could not be applied: %v", err),
			}}
		}
	case types.MergePatchType:
		out, err = jsonpatch.MergePatch(doc, p.raw)
		if err != nil {
			return nil, badRequest("the merge patch could not be applied: %v", err)
		}
	case types.StrategicMergePatchType:
		var cur map[string]interface{}
		if err := json.Unmarshal(doc, &cur); err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		meta, err := strategicpatch.NewPatchMetaFromStruct(schema)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		patched, err := strategicpatch.StrategicMergeMapPatchUsingLookupPatchMeta(cur, p.smp, meta)
		if err != nil {
			if errors.Is(err, mergepatch.ErrNoListOfLists) || errors.Is(err, mergepatch.ErrPatchContentNotMatchRetainKeys) {
				return nil, &apierrors.StatusError{ErrStatus: metav1.Status{
					Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity, Reason: metav1.StatusReasonInvalid,
					Message: fmt.Sprintf("the strategic merge patch could not be applied: %v", err),
				}}
			}
			return nil, badRequest("the strategic merge patch could not be applied: %v", err)
		}
		if out, err = json.Marshal(patched); err != nil {
			return nil, badRequest("the strategic merge patch could not be applied: %v", err)
		}
	}
	if int64(len(out)) > p.limit {
		return nil, apierrors.NewRequestEntityTooLargeError("the patched object is too large")
	}
	return out, nil
}

func (s *Server) patch(rq *request) {
	buf := getBuf()
	defer putBuf(buf)
	if err := readBody(rq.r, buf, s.maxBody); err != nil {
		rq.fail(err)
		return
	}
	fv, err := rq.fieldValidation()
	if err != nil {
		rq.fail(err)
		return
	}
	mt := mediaType(rq.r.Header.Get("Content-Type"))
	if types.PatchType(mt) == types.ApplyYAMLPatchType {
		s.applyPatch(rq, buf.Bytes(), fv)
		return
	}
	if err := rq.checkPatchOptions(); err != nil {
		rq.fail(err)
		return
	}
	limitJSONPatchCopies(s.maxBody)
	p, err := newPatcher(mt, buf.Bytes(), 2*s.maxBody)
	if err != nil {
		rq.fail(err)
		return
	}
	if rq.sub == "scale" {
		s.applyScale(rq, func(cur state.Object) (*autoscalingv1.Scale, error) {
			sc, err := scaleOf(cur)
			if err != nil {
				return nil, err
			}
			doc, err := json.Marshal(sc)
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			patched, err := p.apply(doc, &autoscalingv1.Scale{})
			if err != nil {
				return nil, err
			}
			out := &autoscalingv1.Scale{}
			rq.warnings = rq.warnings[:0]
			strict, err := unmarshalJSON(patched, out, fv != validationIgnore)
			if err != nil {
				return nil, badRequest("the patched Scale cannot be decoded: %v", err)
			}
			if err := checkKind(out, scaleGVK); err != nil {
				return nil, err
			}
			return out, rq.handleStrict(strict, scaleGVK, out)
		})
		return
	}
	gvk := rq.res.GVK()
	out, code, err := s.guaranteedUpdate(rq, func(cur state.Object) (state.Object, error) {
		doc, err := json.Marshal(cur)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		patched, err := p.apply(doc, rq.res.New())
		if err != nil {
			return nil, err
		}
		obj := rq.res.New()
		rq.warnings = rq.warnings[:0]
		strict, err := unmarshalJSON(patched, obj, fv != validationIgnore)
		if err != nil {
			return nil, badRequest("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
		if err := checkKind(obj, gvk); err != nil {
			return nil, err
		}
		if err := rq.handleStrict(strict, gvk, obj); err != nil {
			return nil, err
		}
		if err := immutableIdentity(rq, obj); err != nil {
			return nil, err
		}
		if err := preconditionRV(rq, obj, cur); err != nil {
			return nil, err
		}
		return s.nextObject(rq, cur, obj, false)
	})
	if err != nil {
		rq.fail(err)
		return
	}
	rq.writeObject(code, out)
}

// immutableIdentity rejects a patch that renamed or moved the object.
func immutableIdentity(rq *request, obj state.Object) error {
	gk := schema.GroupKind{Group: rq.res.Group, Kind: rq.res.Kind.Kind}
	if obj.GetName() != rq.name {
		return apierrors.NewInvalid(gk, rq.name, fieldImmutable("metadata", "name", obj.GetName()))
	}
	if obj.GetNamespace() != rq.namespace {
		return apierrors.NewInvalid(gk, rq.name, fieldImmutable("metadata", "namespace", obj.GetNamespace()))
	}
	return nil
}
