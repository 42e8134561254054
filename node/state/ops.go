package state

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// OpType says what an Op does.
type OpType uint8

// Operation types. The numbers are part of the log format: never reuse one.
const (
	// OpCreate stores a new object; it fails with CodeAlreadyExists if one with
	// that name is there.
	OpCreate OpType = 1
	// OpUpdate replaces an existing object; CodeNotFound if absent,
	// CodeConflict if ExpectRV is set and differs from the stored version.
	OpUpdate OpType = 2
	// OpDelete removes an object; CodeNotFound if absent, CodeConflict on an
	// ExpectRV or ExpectUID mismatch.
	OpDelete OpType = 3
	// OpPutKV stores an internal record (not a Kubernetes object). Value is
	// opaque to the store: callers seal what must not be stored in plaintext.
	OpPutKV OpType = 4
	// OpDeleteKV removes an internal record; deleting what is gone is success.
	OpDeleteKV OpType = 5
	// OpUseToken consumes one use of a join token (see TokenRecord).
	OpUseToken OpType = 6
	// OpCreateKV stores an internal record only if Key is absent
	// (CodeAlreadyExists otherwise): an atomic claim, e.g. of an address.
	OpCreateKV OpType = 7
	// OpBind binds a pod to a node (see Bind): the decision, not the pod.
	OpBind OpType = 8
)

// Op is one change to the store. Ops of one Propose call are applied
// atomically: all or none.
type Op struct {
	Type      OpType
	Resource  string // Kind.Key(), for object ops
	Namespace string
	Name      string
	Object    Object // OpCreate, OpUpdate: the complete object to store
	ExpectRV  uint64 // OpUpdate, OpDelete: precondition, 0 = none
	ExpectUID string // OpDelete: precondition, "" = none
	Key       string // KV ops
	Value     []byte // OpPutKV, OpCreateKV
	Secret    string // OpUseToken: the hashed secret presented
	Time      int64  // OpUseToken: the proposer's clock (unix seconds), so the FSM stays deterministic
}

// Create returns an op that creates obj.
func Create(obj Object) Op { return objectOp(OpCreate, obj, 0) }

// Update returns an op that replaces obj, failing with a conflict unless the
// stored object has resourceVersion expectRV (0 = unconditional).
func Update(obj Object, expectRV uint64) Op { return objectOp(OpUpdate, obj, expectRV) }

// Delete returns an op that deletes an object.
func Delete(k *Kind, namespace, name string, expectRV uint64, expectUID string) Op {
	return Op{Type: OpDelete, Resource: k.Key(), Namespace: namespace, Name: name, ExpectRV: expectRV, ExpectUID: expectUID}
}

// PutKV returns an op that stores an internal record.
func PutKV(key string, value []byte) Op { return Op{Type: OpPutKV, Key: key, Value: value} }

// CreateKV returns an op that stores an internal record only if it is absent.
func CreateKV(key string, value []byte) Op { return Op{Type: OpCreateKV, Key: key, Value: value} }

// DeleteKV returns an op that removes an internal record.
func DeleteKV(key string) Op { return Op{Type: OpDeleteKV, Key: key} }

func objectOp(t OpType, obj Object, expectRV uint64) Op {
	k, ok := KindOf(obj)
	if !ok {
		panic(fmt.Sprintf("state: %T is not a stored kind", obj))
	}
	return Op{Type: t, Resource: k.Key(), Namespace: obj.GetNamespace(), Name: obj.GetName(), Object: obj, ExpectRV: expectRV}
}

// Code is the outcome of one op.
type Code uint8

// Result codes. Business errors are results, never raft errors.
const (
	CodeOK Code = iota
	CodeNotFound
	CodeAlreadyExists
	CodeConflict
	CodeInvalid
	CodeAborted // another op of the same atomic command failed
	CodeTokenInvalid
	CodeTokenExpired
	CodeTokenRevoked
	CodeTokenUsedUp
	CodeTaken // a unique key (cluster IP, node port) is held by another object
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "OK"
	case CodeNotFound:
		return "NotFound"
	case CodeAlreadyExists:
		return "AlreadyExists"
	case CodeConflict:
		return "Conflict"
	case CodeInvalid:
		return "Invalid"
	case CodeAborted:
		return "Aborted"
	case CodeTokenInvalid:
		return "TokenInvalid"
	case CodeTokenExpired:
		return "TokenExpired"
	case CodeTokenRevoked:
		return "TokenRevoked"
	case CodeTokenUsedUp:
		return "TokenUsedUp"
	case CodeTaken:
		return "Taken"
	}
	return fmt.Sprintf("Code(%d)", uint8(c))
}

// Result is the outcome of one op: for object ops, RV is the resourceVersion
// the object now has (or had, for a delete).
type Result struct {
	Code    Code
	Message string
	RV      uint64
}

// Err returns nil for CodeOK and a *ResultError otherwise.
func (r Result) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &ResultError{Code: r.Code, Message: r.Message}
}

// ResultError is a failed op's result as an error.
type ResultError struct {
	Code    Code
	Message string
}

func (e *ResultError) Error() string { return e.Message }

// IsCode reports whether err is a *ResultError with code c.
func IsCode(err error, c Code) bool {
	var re *ResultError
	return errors.As(err, &re) && re.Code == c
}

// Sealer encrypts values before they enter the log or a snapshot.
type Sealer interface {
	Seal(plaintext, aad []byte) []byte
	Open(sealed, aad []byte) ([]byte, error)
}

// Command format, version 1:
//
//	byte    cmdOps (type byte; 0x80 is the "ignore if unknown" bit)
//	uvarint number of ops
//	per op: byte type, strings resource/namespace/name/key/expectUID/secret,
//	        uvarint expectRV, varint time, bytes object (protobuf, sealed for
//	        sealed kinds), bytes value
const (
	cmdOps       byte = 1
	cmdIgnoreBit byte = 0x80
)

// EncodeOps encodes ops as one log command. Objects of sealed kinds are
// encrypted with s, which may be nil only if no op needs it.
//
// The command is sized first and written into one allocation; objects that
// are not sealed are marshalled straight into it.
func EncodeOps(ops []Op, s Sealer) ([]byte, error) {
	type encodedObj struct {
		sized sizedMarshaler // marshalled in place, size bytes
		size  int
		raw   []byte // or already encoded (sealed kinds)
	}
	var small [4]encodedObj // no allocation for the usual one or two ops
	objs := small[:]
	if len(ops) > len(small) {
		objs = make([]encodedObj, len(ops))
	}
	objs = objs[:len(ops)]
	size := 1 + binary.MaxVarintLen64
	for i := range ops {
		op := &ops[i]
		if op.Object != nil {
			k, ok := KindFor(op.Resource)
			if !ok {
				return nil, fmt.Errorf("unknown resource %q", op.Resource)
			}
			if sm, ok := op.Object.(sizedMarshaler); ok && !k.Sealed {
				objs[i] = encodedObj{sized: sm, size: sm.Size()}
			} else {
				raw, err := marshalObject(k, op.Object, s)
				if err != nil {
					return nil, err
				}
				objs[i] = encodedObj{raw: raw, size: len(raw)}
			}
		}
		size += 1 + 10*binary.MaxVarintLen64 + len(op.Resource) + len(op.Namespace) + len(op.Name) + len(op.Key) +
			len(op.ExpectUID) + len(op.Secret) + objs[i].size + len(op.Value)
	}
	b := make([]byte, 0, size)
	b = append(b, cmdOps)
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		b = append(b, byte(op.Type))
		for _, str := range [...]string{op.Resource, op.Namespace, op.Name, op.Key, op.ExpectUID, op.Secret} {
			b = appendBytes(b, str)
		}
		b = binary.AppendUvarint(b, op.ExpectRV)
		b = binary.AppendVarint(b, op.Time)
		if o := objs[i]; o.sized != nil {
			b = binary.AppendUvarint(b, uint64(o.size))
			n, err := o.sized.MarshalToSizedBuffer(b[len(b) : len(b)+o.size])
			if err != nil || n != o.size {
				return nil, fmt.Errorf("encoding %s %s/%s: %d of %d bytes: %v", op.Resource, op.Namespace, op.Name, n, o.size, err)
			}
			b = b[:len(b)+o.size]
		} else {
			b = appendBytes(b, o.raw)
		}
		b = appendBytes(b, op.Value)
	}
	return b, nil
}

// sizedMarshaler is the generated protobuf code of the API types: an
// object's size and its encoding into a buffer of exactly that size.
type sizedMarshaler interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
}

// decodedOp is an op as the FSM sees it: the object still encoded.
type decodedOp struct {
	Op
	raw []byte
}

func decodeOps(cmd []byte) ([]decodedOp, error) {
	if len(cmd) == 0 {
		return nil, errors.New("empty command")
	}
	r := reader{b: cmd[1:]}
	n := r.uvarint()
	if r.err == nil && n > uint64(len(cmd)) {
		return nil, errors.New("corrupt command: op count")
	}
	ops := make([]decodedOp, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var op decodedOp
		op.Type = OpType(r.byte())
		op.Resource = string(r.bytes())
		op.Namespace = string(r.bytes())
		op.Name = string(r.bytes())
		op.Key = string(r.bytes())
		op.ExpectUID = string(r.bytes())
		op.Secret = string(r.bytes())
		op.ExpectRV = r.uvarint()
		op.Time = r.varint()
		op.raw = r.bytes()
		op.Value = r.bytes()
		ops = append(ops, op)
	}
	if r.err != nil {
		return nil, fmt.Errorf("corrupt command: %w", r.err)
	}
	return ops, nil
}

func encodeResults(rs []Result) []byte {
	b := make([]byte, 0, 8+len(rs)*10)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		b = append(b, byte(r.Code))
		b = binary.AppendUvarint(b, r.RV)
		b = appendBytes(b, r.Message)
	}
	return b
}

// DecodeResults decodes an FSM response.
func DecodeResults(b []byte) ([]Result, error) {
	r := reader{b: b}
	n := r.uvarint()
	if r.err == nil && n > uint64(len(b)) {
		return nil, errors.New("corrupt results")
	}
	rs := make([]Result, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var res Result
		res.Code = Code(r.byte())
		res.RV = r.uvarint()
		res.Message = string(r.bytes())
		rs = append(rs, res)
	}
	if r.err != nil {
		return nil, fmt.Errorf("corrupt results: %w", r.err)
	}
	return rs, nil
}

// appendBytes appends v with its uvarint length before it.
func appendBytes[T string | []byte](b []byte, v T) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errShort = errors.New("truncated")

// reader decodes the log format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	if n == 0 {
		return nil
	}
	return v
}

// marshalObject encodes obj as protobuf, sealed for sealed kinds.
func marshalObject(k *Kind, obj Object, s Sealer) ([]byte, error) {
	po, ok := obj.(protoObject)
	if !ok {
		return nil, fmt.Errorf("%T cannot be encoded", obj)
	}
	raw, err := po.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s/%s: %w", k.Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	if k.Sealed {
		if s == nil {
			return nil, fmt.Errorf("encoding %s: no encryption key", k.Kind)
		}
		raw = s.Seal(raw, []byte(k.Key()))
	}
	return raw, nil
}

// unmarshalObject decodes what marshalObject encoded.
func unmarshalObject(k *Kind, raw []byte, s Sealer) (Object, error) {
	if k.Sealed {
		if s == nil {
			return nil, fmt.Errorf("decoding %s: no encryption key", k.Kind)
		}
		var err error
		if raw, err = s.Open(raw, []byte(k.Key())); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", k.Kind, err)
		}
	}
	obj := k.New()
	if err := obj.(protoObject).Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", k.Kind, err)
	}
	obj.GetObjectKind().SetGroupVersionKind(k.GVK())
	return obj, nil
}
