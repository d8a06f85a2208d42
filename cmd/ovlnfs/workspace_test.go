package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestSnapshotAndResetCommands: ovlnfs snapshot, reset and commit reach a running serve
// through its control socket, and a client sees the reset tree and the committed one.
func TestSnapshotAndResetCommands(t *testing.T) {
	l := newLayout(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "upper"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := writeExports(t, dir, "layer l "+l.l1+"\nexport /ws\n  lowers l\n  upper upper\n  clients 127.0.0.1(rw,insecure,no_root_squash)\n")
	sock := filepath.Join(dir, "control.sock")
	r := startServe(t, "--config="+p, "--control="+sock, "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off")
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", st, err)
	}
	c := rpctest.Dial(t, r.field("listen"))
	root := c.Mount("/ws")
	c.Create(root, "kept")

	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, context.Background(), args...)
	}
	if code, out, errs := cli("snapshot", "--control="+sock, "/ws", "s1"); code != exitOK || !strings.Contains(out, "snapshot s1 of /ws taken") {
		t.Fatalf("snapshot: %d %q %q", code, out, errs)
	}
	c.Create(root, "dropped")
	if code, out, errs := cli("reset", "--control="+sock, "--to=s1", "/ws"); code != exitOK || !strings.Contains(out, "/ws reset to snapshot s1") {
		t.Fatalf("reset --to=s1: %d %q %q", code, out, errs)
	}
	if st, _ := c.NFS(nfs3.ProcLookup, rpctest.DirOp(root, "dropped")); st != nfs3.StatusNoEnt {
		t.Errorf("LOOKUP of a file made after the snapshot: %d, want NOENT", st)
	}
	c.Lookup(root, "kept")
	if code, out, _ := cli("snapshot", "--control="+sock, "list", "/ws"); code != exitOK || !strings.HasPrefix(out, "s1\t") {
		t.Errorf("snapshot list: %d %q", code, out)
	}
	if code, _, _ := cli("reset", "--control="+sock, "/ws"); code != exitOK {
		t.Errorf("reset to the lowers: %d", code)
	}
	if st, _ := c.NFS(nfs3.ProcLookup, rpctest.DirOp(root, "kept")); st != nfs3.StatusNoEnt {
		t.Errorf("LOOKUP after the reset to the lowers: %d, want NOENT", st)
	}
	if code, out, _ := cli("snapshot", "--control="+sock, "rm", "/ws", "s1"); code != exitOK || !strings.Contains(out, "removed") {
		t.Errorf("snapshot rm: %d %q", code, out)
	}
	c.Create(root, "baked")
	layer := filepath.Join(dir, "layer-1")
	if code, out, errs := cli("commit", "--control="+sock, "/ws", layer); code != exitOK || !strings.Contains(out, "/ws committed into "+layer) {
		t.Fatalf("commit: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(layer, "baked")); err != nil {
		t.Errorf("the committed layer lacks the file: %v", err)
	}
	c.Lookup(root, "baked")
	if code, out, _ := runCLI(t, context.Background(), "diff", "--config="+p, "/ws"); code != exitOK || out != "" {
		t.Errorf("diff after the commit (the committed layer among the lowers): %d %q", code, out)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reset", "/ws"}, exitBadConfig, "--control"},
		{[]string{"reset", "--control=" + sock, "/nope"}, exitFailure, "no such export"},
		{[]string{"reset", "--control=" + sock, "--to=gone", "/ws"}, exitFailure, "snapshot gone"},
		{[]string{"snapshot", "--control=" + sock, "/ws", "../x"}, exitFailure, "snapshot name"},
		{[]string{"snapshot", "--control=" + filepath.Join(dir, "nothing"), "/ws", "x"}, exitFailure, "control socket"},
	} {
		code, _, errs := cli(c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
}
