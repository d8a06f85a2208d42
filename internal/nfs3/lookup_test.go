package nfs3_test

import (
	"bytes"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestLookupDotAndDotDot: ".." of the export root is the root (a client walking up from
// the mount point stays in the export), "." of a directory is the directory, ".." of a
// subdirectory its parent, and a handle does not depend on how the object was reached: a
// child looked up from the root has the handle MNT gives for its path.
func TestLookupDotAndDotDot(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"a/b/f": "f\n"}})

	if got := c.Lookup(root, ".."); !bytes.Equal(got, root) {
		t.Errorf(`LOOKUP ".." of the root: handle %x, want the root's %x`, got, root)
	}
	if got := c.Lookup(root, "."); !bytes.Equal(got, root) {
		t.Errorf(`LOOKUP "." of the root: handle %x, want the root's %x`, got, root)
	}
	a := c.Lookup(root, "a")
	if mounted := c.Mount("/a"); !bytes.Equal(a, mounted) {
		t.Errorf("LOOKUP of a from the root: handle %x; MNT /a: %x", a, mounted)
	}
	if got := c.Lookup(a, "."); !bytes.Equal(got, a) {
		t.Errorf(`LOOKUP "." of a: handle %x, want a's %x`, got, a)
	}
	if got := c.Lookup(a, ".."); !bytes.Equal(got, root) {
		t.Errorf(`LOOKUP ".." of a: handle %x, want the root's %x`, got, root)
	}
	b := c.Lookup(a, "b")
	if mounted := c.Mount("/a/b"); !bytes.Equal(b, mounted) {
		t.Errorf("LOOKUP of a/b: handle %x; MNT /a/b: %x", b, mounted)
	}
	if got := c.Lookup(b, ".."); !bytes.Equal(got, a) {
		t.Errorf(`LOOKUP ".." of a/b: handle %x, want a's %x`, got, a)
	}
	if ra, rr := c.Getattr(c.Lookup(root, "..")), c.Getattr(root); ra != rr {
		t.Errorf(`attributes of the root's "..": %+v, the root's %+v`, ra, rr)
	}
}
