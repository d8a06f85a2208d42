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

// TestCommitFlattenAndIntoCommands: ovlnfs commit --flatten and --into through a running
// serve's control socket: a flattened layer is the whole tree and the export keeps
// serving it (diff of the export against the flattened layer alone is empty); a commit
// of alice into bob's stack shows alice's file to bob's client, not to alice's, and is
// refused for an export on other lowers and with both flags.
func TestCommitFlattenAndIntoCommands(t *testing.T) {
	l := newLayout(t)
	if err := os.WriteFile(filepath.Join(l.l1, "inner", "lower.txt"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{"alice", "bob", "carol", "flat"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rules := "  clients 127.0.0.1(rw,insecure,no_root_squash)\n"
	p := writeExports(t, dir, "layer l "+l.l1+"\nlayer m "+l.l2+"\n"+
		"export /ws/alice\n  lowers l\n  upper alice\n"+rules+
		"export /ws/bob\n  lowers l\n  upper bob\n"+rules+
		"export /ws/carol\n  lowers m\n  upper carol\n"+rules+
		"export /ws/flat\n  lowers l\n  upper flat\n"+rules)
	sock := filepath.Join(dir, "control.sock")
	r := startServe(t, "--config="+p, "--control="+sock, "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off")
	c := rpctest.Dial(t, r.field("listen"))
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, context.Background(), args...)
	}

	flat := c.Mount("/ws/flat")
	made := c.Create(flat, "made")
	c.Write(made, 0, []byte("made in flat"), rpctest.FileSync)
	inner := c.Lookup(flat, "inner")
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(inner, "lower.txt")); st != nfs3.StatusOK {
		t.Fatalf("REMOVE inner/lower.txt: %d", st)
	}
	flatLayer := filepath.Join(dir, "flat-1")
	if code, out, errs := cli("commit", "--control="+sock, "--flatten", "/ws/flat", flatLayer); code != exitOK || !strings.Contains(out, "/ws/flat flattened into "+flatLayer) {
		t.Fatalf("commit --flatten: %d %q %q", code, out, errs)
	}
	if _, err := os.Lstat(filepath.Join(flatLayer, "inner", "lower.txt")); !os.IsNotExist(err) {
		t.Errorf("the flattened layer has inner/lower.txt (removed: no whiteout, no file): %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(flatLayer, "made")); err != nil || string(b) != "made in flat" {
		t.Errorf("the flattened layer's made: %q %v", b, err)
	}
	if got := string(readAll(c, made)); got != "made in flat" {
		t.Errorf("the client's made after the flattened commit: %q", got)
	}
	if code, out, errs := runCLI(t, context.Background(), "diff", "--config="+p, "/ws/flat"); code != exitOK || out != "" {
		t.Errorf("diff of the flattened export: %d %q %q", code, out, errs)
	}

	alice, bob := c.Mount("/ws/alice"), c.Mount("/ws/bob")
	given := c.Create(alice, "given")
	c.Write(given, 0, []byte("from alice"), rpctest.FileSync)
	c.Create(bob, "bobs")
	layer := filepath.Join(dir, "alice-1")
	for _, bad := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"commit", "--control=" + sock, "--into=/ws/carol", "/ws/alice", layer}, exitFailure, "other lowers"},
		{[]string{"commit", "--control=" + sock, "--into=/ws/alice", "/ws/alice", layer}, exitFailure, "into itself"},
		{[]string{"commit", "--control=" + sock, "--into=/ws/bob", "--flatten", "/ws/alice", layer}, exitBadConfig, "do not go together"},
	} {
		if code, _, errs := cli(bad.args...); code != bad.code || !strings.Contains(errs, bad.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", bad.args, code, errs, bad.code, bad.want)
		}
	}
	if code, out, errs := cli("commit", "--control="+sock, "--into", "/ws/bob", "/ws/alice", layer); code != exitOK || !strings.Contains(out, "/ws/alice handed over to /ws/bob into "+layer) {
		t.Fatalf("commit --into: %d %q %q", code, out, errs)
	}
	if got := string(readAll(c, c.Lookup(bob, "given"))); got != "from alice" {
		t.Errorf("bob reads given: %q", got)
	}
	c.Lookup(bob, "bobs")
	if st, _ := c.NFS(nfs3.ProcLookup, rpctest.DirOp(alice, "given")); st != nfs3.StatusNoEnt {
		t.Errorf("alice's LOOKUP of what she handed over: %d, want NOENT", st)
	}
	if st := getattrStatus(c, given); st != nfs3.StatusStale {
		t.Errorf("alice's handle of what she handed over: %d, want STALE", st)
	}
}

func getattrStatus(c *rpctest.Client, fh []byte) nfs3.Status {
	st, _ := c.NFS(nfs3.ProcGetattr, rpctest.Opaque(fh))
	return st
}

func readAll(c *rpctest.Client, fh []byte) []byte {
	data, _ := c.Read(fh, 0, 1<<20)
	return data
}
