package nfs3

import (
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// READs and WRITEs of bulk data are told apart from small ones by their arguments, without
// consuming them.
func TestBulkCalls(t *testing.T) {
	fh := make([]byte, 28)
	read := func(count uint32) *oncrpc.Call {
		var w xdr.Writer
		w.Uint32(7) // a record's header words before the arguments
		w.Opaque(fh)
		w.Uint64(1 << 30)
		w.Uint32(count)
		return &oncrpc.Call{Args: xdr.NewReader(w.Buf, 4), Record: w.Buf}
	}
	for _, c := range []struct {
		count uint32
		bulk  bool
	}{{4096, false}, {bulkSize - 1, false}, {bulkSize, true}, {1 << 20, true}} {
		call := read(c.count)
		if got := largeRead(call); got != c.bulk {
			t.Errorf("READ of %d bytes: bulk %v, want %v", c.count, got, c.bulk)
		}
		if call.Args.Pos != 4 || call.Args.Opaque() == nil {
			t.Fatal("largeRead consumed the arguments")
		}
	}
	short := &oncrpc.Call{Args: xdr.NewReader([]byte{0, 0, 0, 28}, 0)}
	if largeRead(short) {
		t.Error("a truncated READ counts as bulk")
	}
	if largeWrite(&oncrpc.Call{Record: make([]byte, 200)}) || !largeWrite(&oncrpc.Call{Record: make([]byte, 1<<20)}) {
		t.Error("WRITE bulk by record size")
	}
}
