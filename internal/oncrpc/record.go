package oncrpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
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
	b, err := readRecord(r, nil)
	if err != nil {
		return nil, err
	}
	return *b, nil
}

// readRecord is ReadRecord into memory from pool; give the buffer back with pool.put
// once nothing refers to the record any more. On error no buffer is held.
func readRecord(r io.Reader, pool *bufferPool) (*[]byte, error) {
	var buf *[]byte
	fail := func(err error) (*[]byte, error) {
		pool.put(buf)
		return nil, err
	}
	var record []byte
	var mark [4]byte
	for {
		if _, err := io.ReadFull(r, mark[:]); err != nil {
			if len(record) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fail(err)
		}
		m := binary.BigEndian.Uint32(mark[:])
		size := int(m &^ lastFragment)
		if len(record)+size > MaxRecordSize {
			return fail(ErrRecordTooLarge)
		}
		for size > 0 {
			start := len(record)
			if start == cap(record) {
				// More memory only once what there is has been filled: a client that
				// announces a huge fragment and sends nothing holds one small buffer.
				grown := pool.get(max(start+min(size, readChunk), 2*start))
				*grown = append(*grown, record...)
				pool.put(buf)
				buf, record = grown, *grown
			}
			// As much of the fragment as fits, in as few reads as the socket allows.
			n := min(size, cap(record)-start)
			record = record[:start+n]
			if _, err := io.ReadFull(r, record[start:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fail(err)
			}
			size -= n
		}
		if m&lastFragment != 0 {
			if buf == nil { // an empty record
				buf = pool.get(0)
			}
			*buf = record
			return buf, nil
		}
	}
}

// readChunk is the least memory taken for a fragment at a time.
const readChunk = 64 << 10

// WriteRecord writes parts as one record with one writev: nothing is copied to join them.
func WriteRecord(w io.Writer, parts ...[]byte) error {
	var rw recordWriter
	return rw.write(w, parts)
}

// recordWriter writes records as WriteRecord does, reusing its record mark and vector
// from one record to the next: a connection's replies, written one at a time, allocate
// neither. Not for concurrent use.
type recordWriter struct {
	mark [4]byte
	room [4][]byte // the vector's memory: the mark and up to three parts (a READ's)
	bufs net.Buffers
}

func (rw *recordWriter) write(w io.Writer, parts [][]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	rw.setMark(n)
	rw.bufs = append(rw.room[:0], rw.mark[:])
	for _, p := range parts {
		if len(p) > 0 {
			rw.bufs = append(rw.bufs, p)
		}
	}
	_, err := rw.bufs.WriteTo(w)
	// Let go of the parts (a READ's pooled data buffer goes back once written).
	clear(rw.room[:])
	rw.bufs = nil
	return err
}

// setMark makes the record mark of a record of n bytes, sent as one fragment.
func (rw *recordWriter) setMark(n int) {
	binary.BigEndian.PutUint32(rw.mark[:], uint32(n)|lastFragment)
}
