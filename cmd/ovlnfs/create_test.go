package main

import (
	"bytes"
	"testing"
)

// getattrSize returns the size GETATTR reports for fh.
func (c *rpcClient) getattrSize(fh []byte) uint64 {
	c.t.Helper()
	st, r := c.nfsCall(procGetattr, opaqueArg(fh))
	if st != 0 {
		c.t.Fatalf("GETATTR: status %d", st)
	}
	r.fixed(20) // type, mode, nlink, uid, gid
	return r.uint64()
}

func exclusiveArgs(dir []byte, name string, verf string) []byte {
	return createArgs(dir, name, createExclusive, []byte(verf))
}

// TestCreateModes checks CREATE's three modes (RFC 1813 section 3.3.8).
func TestCreateModes(t *testing.T) {
	srv := startTestServer(t, map[string]string{"lower.txt": "lower content\n"})
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()

	t.Run("unchecked keeps data", func(t *testing.T) {
		fh := c.create(root, "u.txt")
		if st, _ := c.nfsCall(procWrite, writeArgs(fh, 0, []byte("keep me"), 2)); st != 0 {
			t.Fatalf("WRITE: status %d", st)
		}
		st, r := c.nfsCall(procCreate, createArgs(root, "u.txt", createUnchecked, sattrMode(0o644)))
		if st != 0 {
			t.Fatalf("UNCHECKED CREATE of an existing file: status %d", st)
		}
		if got := newHandle(t, r); !bytes.Equal(got, fh) {
			t.Errorf("UNCHECKED CREATE returned another handle")
		}
		if size := c.getattrSize(fh); size != 7 {
			t.Errorf("size after UNCHECKED CREATE without a size: %d, want 7 (untouched)", size)
		}
		lower := c.lookup(root, "lower.txt")
		if st, _ := c.nfsCall(procCreate, createArgs(root, "lower.txt", createUnchecked, sattrMode(0o644))); st != 0 {
			t.Fatalf("UNCHECKED CREATE of a lower file: status %d", st)
		}
		if size := c.getattrSize(lower); size != 14 {
			t.Errorf("lower file size after UNCHECKED CREATE: %d, want 14", size)
		}
	})
	t.Run("unchecked with size 0 truncates", func(t *testing.T) {
		var sattr xdrWriter
		sattr.uint32(0)
		sattr.uint32(0)
		sattr.uint32(0)
		sattr.uint32(1)
		sattr.uint64(0)
		sattr.uint32(0)
		sattr.uint32(0)
		if st, _ := c.nfsCall(procCreate, createArgs(root, "u.txt", createUnchecked, sattr.buf)); st != 0 {
			t.Fatalf("status %d", st)
		}
		if size := c.getattrSize(c.lookup(root, "u.txt")); size != 0 {
			t.Errorf("size %d, want 0", size)
		}
	})
	t.Run("guarded", func(t *testing.T) {
		if st, _ := c.nfsCall(procCreate, createArgs(root, "g.txt", createGuarded, sattrMode(0o600))); st != 0 {
			t.Fatalf("GUARDED CREATE of a new name: status %d", st)
		}
		if st, _ := c.nfsCall(procCreate, createArgs(root, "g.txt", createGuarded, sattrMode(0o600))); st != 17 {
			t.Errorf("GUARDED CREATE of an existing name: status %d, want 17 (EXIST)", st)
		}
	})
	t.Run("exclusive", func(t *testing.T) {
		st, r := c.nfsCall(procCreate, exclusiveArgs(root, "x.txt", "verifier"))
		if st != 0 {
			t.Fatalf("EXCLUSIVE CREATE: status %d", st)
		}
		first := newHandle(t, r)
		// A retransmission (its reply was lost) with the same verifier succeeds on the file
		// it made.
		st, r = c.nfsCall(procCreate, exclusiveArgs(root, "x.txt", "verifier"))
		if st != 0 {
			t.Fatalf("retransmitted EXCLUSIVE CREATE: status %d, want 0", st)
		}
		if again := newHandle(t, r); !bytes.Equal(again, first) {
			t.Errorf("retransmitted EXCLUSIVE CREATE returned another handle")
		}
		if st, _ := c.nfsCall(procCreate, exclusiveArgs(root, "x.txt", "another!")); st != 17 {
			t.Errorf("EXCLUSIVE CREATE with another verifier: status %d, want 17 (EXIST)", st)
		}
		if st, _ := c.nfsCall(procCreate, exclusiveArgs(root, "lower.txt", "verifier")); st != 17 {
			t.Errorf("EXCLUSIVE CREATE of an existing lower file: status %d, want 17 (EXIST)", st)
		}
		// The client then sets the real attributes; the file is an ordinary one after it.
		if st, _ := c.nfsCall(procSetattr, append(append(opaqueArg(first), sattrMode(0o640)...), 0, 0, 0, 0)); st != 0 {
			t.Errorf("SETATTR after EXCLUSIVE CREATE: status %d", st)
		}
	})
}
