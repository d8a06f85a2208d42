package handles

import (
	"strings"
	"testing"
)

// FuzzFromHandle feeds arbitrary bytes to FromHandle on a real union. It
// must never panic, and whatever it resolves must be the object the
// handle's identity names (so nothing outside the export, and no other
// object, is ever reached). Seeds: real handles of every kind plus the
// committed corpus in testdata/fuzz/FuzzFromHandle.
//
//	go test ./handles -run '^$' -fuzz FuzzFromHandle -fuzztime 60s
func FuzzFromHandle(f *testing.F) {
	if testing.Short() {
		f.Skip("SKIPPED in -short")
	}
	requireRoot(f)
	s := newStackTB(f, map[string]string{
		"l1/f": "x", "l2/d/e/g": "y", "u/up": "z", "u/ud/k": "k", "l1/" + longName: "l",
	})
	for _, p := range []string{"", "f", "d", "d/e", "d/e/g", "up", "ud", "ud/k", longName} {
		fh, err := s.h.ToHandle(split(p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fh)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path, err := s.h.FromHandle(b)
		if err != nil {
			return
		}
		hd, derr := decode(b)
		if derr != nil {
			t.Fatalf("malformed %x resolved to %q", b, path)
		}
		id, ierr := s.fs.Identify(strings.Join(path, "/"))
		if ierr != nil || !id.ID.Equal(hd.obj) || id.Dir != hd.dir {
			t.Fatalf("%x resolved to %q, which is %+v (%v), not %+v", b, path, id, ierr, hd.obj)
		}
	})
}
