package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// go-nfs answers LOOKUP ".." with ACCES when the directory's path is empty and otherwise
// uses path[:len-1] as the parent; the root must therefore decode to a one-element path
// whose parent path encodes back to the root handle.
func TestRootParentIsRoot(t *testing.T) {
	lower := t.TempDir()
	if err := os.MkdirAll(filepath.Join(lower, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	fs, err := billyunion.New(billyunion.Options{Lowers: []string{lower}})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	h, _, err := newNFSHandler(fs, fs, lower, true, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	root := h.ToHandle(fs, []string{})
	_, p, err := h.FromHandle(root)
	if err != nil || len(p) == 0 {
		t.Fatalf("root decodes to %q, %v; want a non-empty path", p, err)
	}
	parent := h.ToHandle(fs, p[:len(p)-1])
	if !reflect.DeepEqual(parent, root) {
		t.Errorf("parent of the root has handle %x, want the root's %x", parent, root)
	}
	// A child looked up from the root gets the same handle as the same path spelled plainly.
	child := h.ToHandle(fs, append(p, "a"))
	if plain := h.ToHandle(fs, []string{"a"}); !reflect.DeepEqual(child, plain) {
		t.Errorf("child handle %x differs from %x", child, plain)
	}
	_, cp, err := h.FromHandle(child)
	if err != nil || !reflect.DeepEqual(cp, []string{"a"}) {
		t.Errorf("child decodes to %q, %v", cp, err)
	}
}
