package nfs3_test

import (
	"bytes"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestCreateModes checks CREATE's three modes (RFC 1813 section 3.3.8).
func TestCreateModes(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"lower.txt": "lower content\n"}})
	exclusive := func(name, verf string) []byte {
		return rpctest.CreateArgs(root, name, rpctest.CreateExclusive, []byte(verf))
	}

	t.Run("unchecked keeps data", func(t *testing.T) {
		fh := c.Create(root, "u.txt")
		if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(fh, 0, []byte("keep me"), rpctest.FileSync)); st != nfs3.StatusOK {
			t.Fatalf("WRITE: status %d", st)
		}
		st, r := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "u.txt", rpctest.CreateUnchecked, rpctest.SattrMode(0o644)))
		if st != nfs3.StatusOK {
			t.Fatalf("UNCHECKED CREATE of an existing file: status %d", st)
		}
		if got := rpctest.NewHandle(t, r); !bytes.Equal(got, fh) {
			t.Errorf("UNCHECKED CREATE returned another handle")
		}
		if size := c.Getattr(fh).Size; size != 7 {
			t.Errorf("size after UNCHECKED CREATE without a size: %d, want 7 (untouched)", size)
		}
		lower := c.Lookup(root, "lower.txt")
		if st, _ := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "lower.txt", rpctest.CreateUnchecked, rpctest.SattrMode(0o644))); st != nfs3.StatusOK {
			t.Fatalf("UNCHECKED CREATE of a lower file: status %d", st)
		}
		if size := c.Getattr(lower).Size; size != 14 {
			t.Errorf("lower file size after UNCHECKED CREATE: %d, want 14", size)
		}
	})
	t.Run("unchecked with size 0 truncates", func(t *testing.T) {
		size0 := rpctest.Sattr{Size: new(uint64(0))}.XDR()
		if st, _ := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "u.txt", rpctest.CreateUnchecked, size0)); st != nfs3.StatusOK {
			t.Fatalf("status %d", st)
		}
		if size := c.Getattr(c.Lookup(root, "u.txt")).Size; size != 0 {
			t.Errorf("size %d, want 0", size)
		}
	})
	t.Run("guarded", func(t *testing.T) {
		if st, _ := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "g.txt", rpctest.CreateGuarded, rpctest.SattrMode(0o600))); st != nfs3.StatusOK {
			t.Fatalf("GUARDED CREATE of a new name: status %d", st)
		}
		if st, _ := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "g.txt", rpctest.CreateGuarded, rpctest.SattrMode(0o600))); st != nfs3.StatusExist {
			t.Errorf("GUARDED CREATE of an existing name: status %d, want 17 (EXIST)", st)
		}
	})
	t.Run("exclusive", func(t *testing.T) {
		st, r := c.NFS(nfs3.ProcCreate, exclusive("x.txt", "verifier"))
		if st != nfs3.StatusOK {
			t.Fatalf("EXCLUSIVE CREATE: status %d", st)
		}
		first := rpctest.NewHandle(t, r)
		// A retransmission (its reply was lost) with the same verifier succeeds on the file
		// it made.
		st, r = c.NFS(nfs3.ProcCreate, exclusive("x.txt", "verifier"))
		if st != nfs3.StatusOK {
			t.Fatalf("retransmitted EXCLUSIVE CREATE: status %d, want 0", st)
		}
		if again := rpctest.NewHandle(t, r); !bytes.Equal(again, first) {
			t.Errorf("retransmitted EXCLUSIVE CREATE returned another handle")
		}
		if st, _ := c.NFS(nfs3.ProcCreate, exclusive("x.txt", "another!")); st != nfs3.StatusExist {
			t.Errorf("EXCLUSIVE CREATE with another verifier: status %d, want 17 (EXIST)", st)
		}
		if st, _ := c.NFS(nfs3.ProcCreate, exclusive("lower.txt", "verifier")); st != nfs3.StatusExist {
			t.Errorf("EXCLUSIVE CREATE of an existing lower file: status %d, want 17 (EXIST)", st)
		}
		// The client then sets the real attributes; the file is an ordinary one after it.
		if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(first, rpctest.Sattr{Mode: new(uint32(0o640))}, nil)); st != nfs3.StatusOK {
			t.Errorf("SETATTR after EXCLUSIVE CREATE: status %d", st)
		}
	})
}
