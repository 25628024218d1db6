package main

// The benchmark payload is plain ASCII, so pusher sends it as a text frame
// like a real JSON push, and carries what the receiver needs to time and
// check it:
//
//	[0:16)  intended send time, unix nanoseconds, 16 lowercase hex digits
//	[16:32) sequence number within the phase, 16 hex digits
//	[32]    phase tag (tagThroughput, tagLatency, tagHTTP, tagRaw, tagFloor)
//	[33:)   'x' filler up to the payload size
const (
	payloadHeader = 33
	minPayload    = payloadHeader

	tagRaw        = 'R'
	tagThroughput = 'T'
	tagLatency    = 'L'
	tagHTTP       = 'H'
	tagFloor      = 'F'
)

const hexDigits = "0123456789abcdef"

// newPayload returns a size-byte payload with the filler written; encode
// fills in the header.
func newPayload(size int) []byte {
	b := make([]byte, size)
	for i := payloadHeader; i < size; i++ {
		b[i] = 'x'
	}
	return b
}

// encodePayload writes the header into b, which came from newPayload.
func encodePayload(b []byte, intendedNs int64, seq uint64, tag byte) {
	putHex(b[0:16], uint64(intendedNs))
	putHex(b[16:32], seq)
	b[32] = tag
}

// decodePayload parses the header; ok is false for a frame that is not a
// benchmark payload.
func decodePayload(b []byte) (intendedNs int64, seq uint64, tag byte, ok bool) {
	if len(b) < payloadHeader {
		return 0, 0, 0, false
	}
	t, ok1 := parseHex(b[0:16])
	s, ok2 := parseHex(b[16:32])
	if !ok1 || !ok2 {
		return 0, 0, 0, false
	}
	return int64(t), s, b[32], true
}

func putHex(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

func parseHex(src []byte) (uint64, bool) {
	var v uint64
	for _, c := range src {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}
