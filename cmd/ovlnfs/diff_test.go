package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestDiffCommand: `ovlnfs diff` of a workspace being served, by its exports file, and of
// its bare layers, as text and JSON; bad arguments are refused.
func TestDiffCommand(t *testing.T) {
	l := newLayout(t)
	if err := os.WriteFile(filepath.Join(l.l1, "old"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	upper := filepath.Join(dir, "upper")
	if err := os.MkdirAll(upper, 0o755); err != nil {
		t.Fatal(err)
	}
	p := writeExports(t, dir, "layer l "+l.l1+"\nexport /ws\n  lowers l\n  upper upper\n  clients 127.0.0.1(rw,insecure,no_root_squash)\n")
	r := startServe(t, "--config="+p, "--listen=127.0.0.1:0", "--portmap=off", "--nlm=off")
	c := rpctest.Dial(t, r.field("listen"))
	root := c.Mount("/ws")
	f := c.Create(root, "new")
	c.Write(f, 0, []byte("12345"), rpctest.FileSync)
	if st, _ := c.NFS(nfs3.ProcLookup, rpctest.DirOp(root, "old")); st != 0 {
		t.Fatalf("LOOKUP old: %d", st)
	}
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(root, "old")); st != 0 {
		t.Fatalf("REMOVE old: %d", st)
	}

	code, stdout, stderr := runCLI(t, context.Background(), "diff", "--config="+p, "/ws")
	if code != exitOK || stdout != "A /new\nD /old\n" {
		t.Errorf("diff of the served export: exit %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, context.Background(), "diff", "--json", "--lowerdir="+l.l1, "--upperdir="+upper)
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); code != exitOK || err != nil || len(got) != 2 ||
		got[0]["kind"] != "added" || got[0]["path"] != "/new" || got[0]["type"] != "file" || got[0]["size"] != 5.0 ||
		got[1]["kind"] != "deleted" || got[1]["path"] != "/old" {
		t.Errorf("diff --json of the bare layers: exit %d, %s", code, stdout)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"diff", "--lowerdir=" + l.l1}, "no upper: nothing to diff"},
		{[]string{"diff"}, "give the lower layers"},
		{[]string{"diff", "--config=" + p, "/nope"}, "declares no export /nope"},
		{[]string{"diff", "--config=" + p}, "name one export"},
		{[]string{"diff", "--config=" + p, "--upperdir=" + upper, "/ws"}, "contradict"},
		{[]string{"diff", "--lowerdir=" + filepath.Join(l.root, "missing"), "--upperdir=" + upper}, "does not exist"},
	} {
		code, _, stderr := runCLI(t, context.Background(), c.args...)
		if code != exitBadConfig || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}
