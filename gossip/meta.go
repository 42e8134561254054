package gossip

// Node meta on the wire is a one-byte header followed by the caller's meta.
// The header carries flags about the member itself; bits not defined here
// must be sent as zero and are ignored on receipt, so later versions can add
// flags without breaking older members.
const (
	metaHeaderSize = 1

	// metaLeaving marks a member that called Leave. It makes the following
	// NotifyLeave a graceful leave rather than a failure.
	metaLeaving byte = 1 << 0
)

func encodeMeta(meta []byte, leaving bool) []byte {
	var flags byte
	if leaving {
		flags |= metaLeaving
	}
	return append([]byte{flags}, meta...)
}

// decodeMeta splits wire meta into the caller's meta and the leaving flag. An
// empty meta (no header) is treated as no flags and no meta.
func decodeMeta(wire []byte) (meta []byte, leaving bool) {
	if len(wire) < metaHeaderSize {
		return nil, false
	}
	leaving = wire[0]&metaLeaving != 0
	if len(wire) > metaHeaderSize {
		meta = wire[metaHeaderSize:]
	}
	return meta, leaving
}
