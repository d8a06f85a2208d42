package nfs3_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

func fsyncLogged(log string, xid uint32) bool {
	return logLineWith(log, "fsync before reply", fmt.Sprintf("xid=%d ", xid))
}

func logLineWith(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestWriteStability checks what each WRITE stability level and COMMIT promise: the
// server's own log line "fsync before reply" is written after a successful fsync and
// before the reply goes out, so finding it once the reply is in hand proves the order.
func TestWriteStability(t *testing.T) {
	s := rpctest.StartServer(t, rpctest.Options{Files: map[string]string{"f": "lower content\n"}, Debug: true})
	c := rpctest.Dial(t, s.Addr)
	fh := c.Lookup(c.MountRoot(), "f")

	committed, xid, verf := c.Write(fh, 0, []byte("unstable"), rpctest.Unstable)
	if committed != rpctest.Unstable {
		t.Errorf("UNSTABLE WRITE answered committed=%d; it was not synced", committed)
	}
	if fsyncLogged(s.Log.String(), xid) {
		t.Errorf("UNSTABLE WRITE was fsynced")
	}
	for _, stable := range []uint32{rpctest.DataSync, rpctest.FileSync} {
		committed, xid, v := c.Write(fh, 8, []byte("stable"), stable)
		if committed != rpctest.FileSync {
			t.Errorf("stable=%d WRITE answered committed=%d", stable, committed)
		}
		if !fsyncLogged(s.Log.String(), xid) {
			t.Errorf("stable=%d WRITE reply came without an fsync before it", stable)
		}
		if !bytes.Equal(v, verf) {
			t.Errorf("verifier changed within one server run: %x then %x", verf, v)
		}
	}
	xid, v := c.Commit(fh)
	if !fsyncLogged(s.Log.String(), xid) {
		t.Errorf("COMMIT reply came without an fsync before it")
	}
	if !bytes.Equal(v, verf) {
		t.Errorf("COMMIT verifier %x differs from WRITE's %x", v, verf)
	}
	if b, err := os.ReadFile(filepath.Join(s.Layout.Upper, "f")); err != nil || string(b) != "unstablestable" {
		t.Errorf("upper file = %q, %v", b, err)
	}
}
