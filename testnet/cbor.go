package testnet

import "encoding/binary"

// Minimal DAG-CBOR writers for the few fixed shapes testnet emits often
// (frame headers, error bodies, generated post records). Everything else
// goes through indigo's encoders.

func cborHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major<<5|byte(n))
	case n <= 0xff:
		return append(b, major<<5|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major<<5|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major<<5|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, major<<5|27), n)
	}
}

func cborText(b []byte, s string) []byte {
	return append(cborHead(b, 3, uint64(len(s))), s...)
}

// frameHeader returns the header of a message frame: {"t": typ, "op": 1}
// (DAG-CBOR key order: shorter keys first).
func frameHeader(typ string) []byte {
	b := cborHead(nil, 5, 2)
	b = cborText(b, "t")
	b = cborText(b, typ)
	b = cborText(b, "op")
	return cborHead(b, 0, 1)
}

// errorFrame returns a complete error frame: {"op": -1} then
// {"error": name, "message": msg}.
func errorFrame(name, msg string) []byte {
	b := cborHead(nil, 5, 1)
	b = cborText(b, "op")
	b = cborHead(b, 1, 0) // -1
	b = cborHead(b, 5, 2)
	b = cborText(b, "error")
	b = cborText(b, name)
	b = cborText(b, "message")
	return cborText(b, msg)
}

// postCBOR encodes {"$type": typ, "text": text, "createdAt": createdAt} as
// DAG-CBOR, byte for byte what atdata.MarshalCBOR produces for that map.
func postCBOR(b []byte, typ, text, createdAt string) []byte {
	b = cborHead(b, 5, 3)
	b = cborText(b, "text")
	b = cborText(b, text)
	b = cborText(b, "$type")
	b = cborText(b, typ)
	b = cborText(b, "createdAt")
	return cborText(b, createdAt)
}
