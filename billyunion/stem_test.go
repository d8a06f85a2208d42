package billyunion

import (
	"os"
	"syscall"
	"testing"
)

// An object's inode number and its ObjectID come from one stem, so they
// must name the same layer object: for a copied-up file whose ObjectID is
// its origin's, the inode number is the origin's too, and for an upper file
// whose origin record is empty or malformed, both are the upper file's own.
func TestInodeAndObjectIDNameOneObject(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "copied", "c")
	ls.file("l1", "empty", "e")
	ls.file("u", "empty", "e2")
	ls.xattr("u", "empty", "trusted.overlay.origin", "")
	ls.file("l1", "bad", "b")
	ls.file("u", "bad", "b2")
	ls.xattr("u", "bad", "trusted.overlay.origin", "\x00\xfb\x09garbage")
	fs := ls.open()
	noErr(t, "chmod", fs.Chmod("copied", 0o600))

	layerIndex := map[string]int{"u": 0, "l1": 1}
	for _, tc := range []struct{ name, layer string }{
		{"copied", "l1"}, {"empty", "u"}, {"bad", "u"},
	} {
		var st syscall.Stat_t
		noErr(t, "stat", syscall.Lstat(ls.path(tc.layer, tc.name), &st))
		id, err := fs.Identify(tc.name)
		noErr(t, "identify "+tc.name, err)
		if got := ino(t, fs, tc.name); got != st.Ino || id.Ino != st.Ino {
			t.Errorf("%s: Lstat inode %d, Identify inode %d, want %s's %d", tc.name, got, id.Ino, tc.layer, st.Ino)
		}
		li := layerIndex[tc.layer]
		want, err := fs.handleAt(li, fs.layers[li].Root, tc.name)
		noErr(t, "handle "+tc.name, err)
		if !id.ID.Equal(want) {
			t.Errorf("%s: ObjectID %+v, want %s's %+v", tc.name, id.ID, tc.layer, want)
		}
	}
}

// A directory has one ObjectID whether it is named as an entry of its
// parent (Identify) or as the directory an entry was found in
// (IdentifyWithParent), however warm the origin cache: handle hints and
// moves records name parents the second way and are confirmed the first.
func TestDirectoryObjectIDOneWay(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "merged/a", "a")
	ls.file("l1", "opaque/b", "b")
	fs := ls.open()
	noErr(t, "chmod", fs.Chmod("merged", 0o700))
	noErr(t, "chmod", fs.Chmod("opaque", 0o700))
	fs.Close()
	// An upper directory with an origin record but no lower part merged
	// into it.
	ls.xattr("u", "opaque", "trusted.overlay.opaque", "y")
	for _, dir := range []string{"merged", "opaque"} {
		if err := os.WriteFile(ls.path("u", dir+"/new"), []byte("n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fs := ls.open() // a cold origin cache
		_, parent, ok, err := fs.IdentifyWithParent(dir + "/new")
		noErr(t, "identify "+dir+"/new", err)
		id, err := fs.Identify(dir)
		noErr(t, "identify "+dir, err)
		if !ok || !parent.Equal(id.ID) {
			t.Errorf("%s: as a parent %+v, as an entry %+v", dir, parent, id.ID)
		}
		fs.Close()
	}
}
