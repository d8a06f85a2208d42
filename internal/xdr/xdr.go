// Package xdr reads and writes the XDR encoding (RFC 4506) that ONC RPC messages and their
// NFSv3 and MOUNT arguments and results use: big-endian 32-bit units, opaque data padded
// to a multiple of four bytes.
//
// A Reader never panics and never allocates: it returns views into the buffer it reads,
// and remembers the first error (a read past the end, a length beyond what is left), after
// which every read returns zero values. Callers check Err once after decoding a whole
// structure. A Writer appends to one growing buffer.
//
// Files: xdr.go (Reader, Writer).
package xdr

import (
	"encoding/binary"
	"errors"
)

// ErrShort is the error of a read past the end of the buffer.
var ErrShort = errors.New("xdr: data ends early")

// Reader decodes XDR items from Buf starting at Pos.
type Reader struct {
	Buf []byte
	Pos int
	err error
}

// NewReader returns a Reader of buf from offset pos.
func NewReader(buf []byte, pos int) *Reader { return &Reader{Buf: buf, Pos: pos} }

// Err is the first error a read met, nil if none.
func (r *Reader) Err() error { return r.err }

// Fail records err as the reader's error unless one is recorded already.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Remaining is how many bytes are left to read.
func (r *Reader) Remaining() int { return len(r.Buf) - r.Pos }

// Uint32 reads an unsigned int.
func (r *Reader) Uint32() uint32 {
	if r.err != nil {
		return 0
	}
	if r.Pos+4 > len(r.Buf) {
		r.err = ErrShort
		return 0
	}
	v := binary.BigEndian.Uint32(r.Buf[r.Pos:])
	r.Pos += 4
	return v
}

// Uint64 reads an unsigned hyper.
func (r *Reader) Uint64() uint64 {
	hi := r.Uint32()
	return uint64(hi)<<32 | uint64(r.Uint32())
}

// Bool reads a bool (any non-zero value is true).
func (r *Reader) Bool() bool { return r.Uint32() != 0 }

// Opaque reads variable-length opaque data. The result aliases the buffer.
func (r *Reader) Opaque() []byte {
	n := r.Uint32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.Buf)-r.Pos) {
		r.err = ErrShort
		return nil
	}
	padded := (int(n) + 3) &^ 3
	if r.Pos+padded > len(r.Buf) {
		r.err = ErrShort
		return nil
	}
	v := r.Buf[r.Pos : r.Pos+int(n) : r.Pos+int(n)]
	r.Pos += padded
	return v
}

// OpaqueMax reads opaque data of at most max bytes; a longer one is an error.
func (r *Reader) OpaqueMax(max int, tooLong error) []byte {
	v := r.Opaque()
	if r.err == nil && len(v) > max {
		r.err = tooLong
		return nil
	}
	return v
}

// Fixed reads n bytes of fixed-length opaque data (n a multiple of 4).
func (r *Reader) Fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.Pos+n > len(r.Buf) {
		r.err = ErrShort
		return nil
	}
	v := r.Buf[r.Pos : r.Pos+n : r.Pos+n]
	r.Pos += n
	return v
}

// Writer appends XDR items to Buf.
type Writer struct {
	Buf []byte
}

// Uint32 writes an unsigned int.
func (w *Writer) Uint32(v uint32) { w.Buf = binary.BigEndian.AppendUint32(w.Buf, v) }

// Uint64 writes an unsigned hyper.
func (w *Writer) Uint64(v uint64) { w.Buf = binary.BigEndian.AppendUint64(w.Buf, v) }

// Bool writes a bool.
func (w *Writer) Bool(v bool) {
	if v {
		w.Uint32(1)
	} else {
		w.Uint32(0)
	}
}

// Opaque writes variable-length opaque data.
func (w *Writer) Opaque(b []byte) {
	w.Uint32(uint32(len(b)))
	w.Buf = append(w.Buf, b...)
	w.Buf = append(w.Buf, Padding(len(b))...)
}

// String writes a string as opaque data.
func (w *Writer) String(s string) {
	w.Uint32(uint32(len(s)))
	w.Buf = append(w.Buf, s...)
	w.Buf = append(w.Buf, Padding(len(s))...)
}

// Fixed writes fixed-length opaque data (its length a multiple of 4).
func (w *Writer) Fixed(b []byte) { w.Buf = append(w.Buf, b...) }

var zeros [3]byte

// Padding returns the zero bytes that follow n bytes of opaque data.
func Padding(n int) []byte { return zeros[:(4-n%4)%4] }
