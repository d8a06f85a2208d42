package oncrpc

import "sync"

// Record memory is recycled: a 1 MiB WRITE read into fresh memory costs the garbage
// collector as much as the write costs the disk (the profile of a sequential write stream
// showed ReadRecord's growth and the collector at over half of the server's time). Two
// sizes cover what clients send: small for every call but WRITE, large for a WRITE of
// up to the 1 MiB transfer size FSINFO offers, with room for its header. Records larger
// still (up to MaxRecordSize) get memory of their own, left to the collector.
const (
	smallBuffer = 64 << 10
	largeBuffer = 1<<20 + 64<<10
)

// bufferPool recycles record memory in the two sizes. Its zero value is ready; a nil
// *bufferPool allocates every time.
type bufferPool struct {
	small, large sync.Pool // of *[]byte with cap smallBuffer, largeBuffer
}

// get returns an empty buffer with room for at least n bytes.
func (p *bufferPool) get(n int) *[]byte {
	var from *sync.Pool
	size := n
	switch {
	case p == nil:
	case n <= smallBuffer:
		from, size = &p.small, smallBuffer
	case n <= largeBuffer:
		from, size = &p.large, largeBuffer
	}
	if from != nil {
		if b, ok := from.Get().(*[]byte); ok {
			return b
		}
	}
	b := make([]byte, 0, size)
	return &b
}

// put gives b back for reuse; b must not be used afterwards.
func (p *bufferPool) put(b *[]byte) {
	if p == nil || b == nil {
		return
	}
	*b = (*b)[:0]
	switch cap(*b) {
	case smallBuffer:
		p.small.Put(b)
	case largeBuffer:
		p.large.Put(b)
	}
}
