package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/control"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// serveControl serves the server's control socket for the test; it returns the socket.
func serveControl(t *testing.T, s *exportsServer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	l, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- control.Serve(l, s.srv, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("control.Serve: %v", err)
		}
	})
	return sock
}

func callControl(t *testing.T, sock string, req control.Request) (control.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return control.Call(ctx, sock, req)
}

// TestCommitFlattenWhileServing: a flattened commit through the control socket while a
// client holds handles of a file it made, a copied-up lower file, a merged directory it
// removed a file from and renamed, and a directory it made: every
// handle keeps working with the same content and fileid, the layer is the whole tree as
// a plain directory tree, the stack names it alone, and a write afterwards keeps the
// fileid; after a restart of the server on the same layers the handles still work.
func TestCommitFlattenWhileServing(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	ws := workspace(t, root, "/ws", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{ws})
	sock := serveControl(t, s)
	c := rpctest.Dial(t, s.addr)
	wsRoot := c.Mount("/ws")
	made := c.Create(wsRoot, "made")
	write(t, c, made, "made before the flatten")
	shared := c.Lookup(wsRoot, "shared.txt")
	write(t, c, shared, "copied up\n")
	src := c.Lookup(wsRoot, "src")
	c.Create(src, "b.c")
	ac := c.Lookup(src, "a.c")
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(src, "a.c")); st != nfs3.StatusOK {
		t.Fatalf("REMOVE src/a.c: %d", st)
	}
	newDir := c.Mkdir(wsRoot, "newdir")
	inNew := c.Create(newDir, "inner")
	// The merged directory renamed (a redirect): its handle names the lower directory,
	// whose place in the former lower is its old name.
	if st, _ := c.NFS(nfs3.ProcRename, rpctest.RenameArgs(wsRoot, "src", wsRoot, "code")); st != nfs3.StatusOK {
		t.Fatalf("RENAME src code: %d", st)
	}
	handles := map[string][]byte{"made": made, "shared": shared, "src": src, "newdir": newDir, "inner": inNew, "root": wsRoot}
	before := map[string]rpctest.Fattr{}
	for name, fh := range handles {
		before[name] = c.Getattr(fh)
	}
	layer := filepath.Join(root, "flat-1")
	resp, err := callControl(t, sock, control.Request{Op: control.OpCommit, Export: "/ws", Name: layer, Flatten: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Commit == nil || !resp.Commit.Flattened || resp.Commit.Layer != layer {
		t.Errorf("commit: %+v", resp.Commit)
	}
	sharedWant := "copied up\n"
	check := func(when string) {
		t.Helper()
		for name, fh := range handles {
			st, r := c.NFS(nfs3.ProcGetattr, rpctest.Opaque(fh))
			if st != nfs3.StatusOK {
				t.Errorf("%s %s: status %d", name, when, st)
				continue
			}
			if a := rpctest.GetFattr(r); a.Fileid != before[name].Fileid {
				t.Errorf("%s: fileid %d %s, %d before", name, a.Fileid, when, before[name].Fileid)
			}
		}
		if got := string(readAll(c, shared)); got != sharedWant {
			t.Errorf("shared.txt %s reads %q", when, got)
		}
		if got := listNames(t, c, src); !slices.Equal(got, []string{"b.c"}) {
			t.Errorf("src %s lists %v", when, got)
		}
		if st := getattrStatus(c, ac); st != nfs3.StatusStale {
			t.Errorf("the removed src/a.c %s: status %d, want STALE", when, st)
		}
	}
	check("after the flattened commit")
	for _, p := range []string{"made", "shared.txt", "code/b.c", "newdir/inner"} {
		if _, err := os.Lstat(filepath.Join(layer, p)); err != nil {
			t.Errorf("the flattened layer lacks %s: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(layer, "code", "a.c")); !os.IsNotExist(err) {
		t.Errorf("the flattened layer has code/a.c (a whiteout or the file): %v", err)
	}
	if entries, _ := os.ReadDir(ws.Upper); len(entries) != 0 {
		t.Errorf("the upper holds %d entries after the commit", len(entries))
	}
	stack, err := os.ReadFile(filepath.Join(ws.Work, "ovlnfs-stack"))
	if err != nil || !strings.Contains(string(stack), `"flattened":true`) || !strings.Contains(string(stack), layer) {
		t.Errorf("the stack file: %s %v", stack, err)
	}
	write(t, c, shared, "written after")
	if a := c.Getattr(shared); a.Fileid != before["shared"].Fileid {
		t.Errorf("shared.txt's fileid changed when copied up from the flattened layer")
	}
	sharedWant = "written after"

	// A new server on the same layers (the stack read at start, the lowers as former
	// lowers) answers the same handles.
	s.srv.Close()
	s2 := startExports(t, []server.Export{ws})
	c = rpctest.Dial(t, s2.addr)
	check("after a restart")
}

// TestCommitIntoWhileServing: alice's commit into bob's stack through the control socket
// while both are served: bob's handles (of his own files and of lower files) keep working
// with their fileids and bob sees alice's changes under his own; alice's handles of the
// lower objects keep working and show the lowers again, those of what she made answer
// STALE; a commit into an export on other lowers, or into itself, is refused and changes
// nothing.
func TestCommitIntoWhileServing(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	rule := "127.0.0.1(rw,insecure,no_root_squash)"
	other := filepath.Join(t.TempDir(), "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	alice, bob, carol := workspace(t, root, "/alice", rule, lower), workspace(t, root, "/bob", rule, lower), workspace(t, root, "/carol", rule, other)
	s := startExports(t, []server.Export{alice, bob, carol})
	sock := serveControl(t, s)
	c := rpctest.Dial(t, s.addr)
	aRoot, bRoot := c.Mount("/alice"), c.Mount("/bob")
	made := c.Create(aRoot, "made")
	write(t, c, made, "alice made it")
	aShared := c.Lookup(aRoot, "shared.txt")
	write(t, c, aShared, "alice wrote\n")
	aDir := c.Mkdir(aRoot, "alicedir")
	bobs := c.Create(bRoot, "bobs")
	write(t, c, bobs, "bob's")
	bShared, bSrc := c.Lookup(bRoot, "shared.txt"), c.Lookup(bRoot, "src")
	bHandles := map[string][]byte{"bobs": bobs, "shared": bShared, "src": bSrc, "root": bRoot}
	before := map[string]rpctest.Fattr{}
	for name, fh := range bHandles {
		before[name] = c.Getattr(fh)
	}
	aBefore := c.Getattr(aShared)
	layer := filepath.Join(root, "alice-1")

	for _, bad := range []struct{ target, want string }{{"/carol", "other lowers"}, {"/alice", "into itself"}} {
		if _, err := callControl(t, sock, control.Request{Op: control.OpCommit, Export: "/alice", Name: layer, Target: bad.target}); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("commit into %s: %v, want %q", bad.target, err, bad.want)
		}
	}
	if got := string(readAll(c, made)); got != "alice made it" {
		t.Errorf("after the refusals alice's made reads %q", got)
	}
	resp, err := callControl(t, sock, control.Request{Op: control.OpCommit, Export: "/alice", Name: layer, Target: "/bob"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Commit == nil || resp.Commit.Target != bob.Work {
		t.Errorf("commit: %+v", resp.Commit)
	}
	for name, fh := range bHandles {
		st, r := c.NFS(nfs3.ProcGetattr, rpctest.Opaque(fh))
		if st != nfs3.StatusOK {
			t.Errorf("bob's %s: status %d", name, st)
			continue
		}
		if a := rpctest.GetFattr(r); a.Fileid != before[name].Fileid {
			t.Errorf("bob's %s: fileid %d, %d before", name, a.Fileid, before[name].Fileid)
		}
	}
	if got := string(readAll(c, bShared)); got != "alice wrote\n" {
		t.Errorf("bob's shared.txt reads %q, want alice's write", got)
	}
	if got := string(readAll(c, c.Lookup(bRoot, "made"))); got != "alice made it" {
		t.Errorf("bob's made reads %q", got)
	}
	if got := listNames(t, c, bRoot); !slices.Equal(got, []string{"alicedir", "bobs", "made", "shared.txt", "src"}) {
		t.Errorf("bob's root lists %v", got)
	}
	if got := string(readAll(c, bobs)); got != "bob's" {
		t.Errorf("bob's bobs reads %q", got)
	}
	// Alice starts over on her lowers.
	for name, fh := range map[string][]byte{"made": made, "alicedir": aDir} {
		if st := getattrStatus(c, fh); st != nfs3.StatusStale {
			t.Errorf("alice's %s after handing it over: status %d, want STALE", name, st)
		}
	}
	if a := c.Getattr(aShared); a.Fileid != aBefore.Fileid {
		t.Errorf("alice's shared.txt: fileid %d, %d before", a.Fileid, aBefore.Fileid)
	}
	if got := string(readAll(c, aShared)); got != "lower\n" {
		t.Errorf("alice's shared.txt reads %q, want the lower's", got)
	}
	if got := listNames(t, c, aRoot); !slices.Equal(got, []string{"shared.txt", "src"}) {
		t.Errorf("alice's root lists %v", got)
	}
	if entries, _ := os.ReadDir(alice.Upper); len(entries) != 0 {
		t.Errorf("alice's upper holds %d entries", len(entries))
	}
	// bob goes on over the layer: a write to alice's file lands in bob's upper.
	write(t, c, c.Lookup(bRoot, "made"), "bob")
	if _, err := os.Stat(filepath.Join(bob.Upper, "made")); err != nil {
		t.Errorf("bob's write is not in his upper: %v", err)
	}
}
