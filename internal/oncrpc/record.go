package oncrpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
)

// lastFragment marks the final fragment of a record (RFC 5531 section 11).
const lastFragment = 1 << 31

// MaxRecordSize refuses absurd records before allocating for them: the largest call a
// client sends is a WRITE of the 1 MiB FSINFO offers.
const MaxRecordSize = 4 << 20

// ErrRecordTooLarge is the error of a record over MaxRecordSize.
var ErrRecordTooLarge = fmt.Errorf("record over %d bytes", MaxRecordSize)

// ReadRecord reads one record, joining its fragments. Memory grows with the bytes that
// actually arrive, never with what a fragment header claims, so a client that announces a
// huge fragment and sends nothing costs little.
func ReadRecord(r io.Reader) ([]byte, error) {
	var record []byte
	var mark [4]byte
	for {
		if _, err := io.ReadFull(r, mark[:]); err != nil {
			if len(record) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		m := binary.BigEndian.Uint32(mark[:])
		size := int(m &^ lastFragment)
		if len(record)+size > MaxRecordSize {
			return nil, ErrRecordTooLarge
		}
		for size > 0 {
			chunk := min(size, readChunk)
			start := len(record)
			record = slices.Grow(record, chunk)[:start+chunk]
			if _, err := io.ReadFull(r, record[start:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			size -= chunk
		}
		if m&lastFragment != 0 {
			return record, nil
		}
	}
}

// readChunk is how much of a fragment is read before more memory is taken for it.
const readChunk = 64 << 10

// WriteRecord writes parts as one record with one writev: nothing is copied to join them.
func WriteRecord(w io.Writer, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var mark [4]byte
	binary.BigEndian.PutUint32(mark[:], uint32(n)|lastFragment)
	bufs := make(net.Buffers, 0, len(parts)+1)
	bufs = append(bufs, mark[:])
	for _, p := range parts {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	_, err := bufs.WriteTo(w)
	return err
}
