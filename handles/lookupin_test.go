package handles

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// lookupInStack is a union over one lower, with Handles: shared says the lowers come
// from a billyunion.Shared, as the server makes every export's, so lower directories
// are the shared lower cache's views.
func lookupInStack(t *testing.T, shared bool) (string, *billyunion.FS, *Handles) {
	requireRoot(t)
	root := t.TempDir()
	lower, up, wk := filepath.Join(root, "l"), filepath.Join(root, "u"), filepath.Join(root, "w")
	for _, p := range []string{"d/sub", "p/q", up, wk} {
		if !filepath.IsAbs(p) {
			p = filepath.Join(lower, p)
		}
		must(t, os.MkdirAll(p, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(lower, "d", "x"), []byte("lower x"), 0o644))
	opts := billyunion.Options{Upper: up, Work: wk, XattrPrefix: "trusted.overlay."}
	if shared {
		s, err := billyunion.NewShared(billyunion.SharedOptions{Lowers: []string{lower}, XattrPrefix: "trusted.overlay."})
		must(t, err)
		t.Cleanup(func() { s.Close() })
		opts.Shared = s
	} else {
		opts.Lowers = []string{lower}
	}
	fs, err := billyunion.New(opts)
	must(t, err)
	t.Cleanup(func() { fs.Close() })
	h, err := New(fs, Options{})
	must(t, err)
	return lower, fs, h
}

// sameAttrs compares two FileInfos of the union but for the access time.
func sameAttrs(t *testing.T, what string, got, want os.FileInfo) {
	t.Helper()
	g, w := *got.Sys().(*syscall.Stat_t), *want.Sys().(*syscall.Stat_t)
	g.Atim, w.Atim = syscall.Timespec{}, syscall.Timespec{}
	if g != w {
		t.Fatalf("%s: attributes\n%+v\nwant\n%+v", what, g, w)
	}
}

func TestLookupInConfirmsTheDirectory(t *testing.T) {
	for _, shared := range []bool{false, true} {
		name := "own lowers"
		if shared {
			name = "shared lowers"
		}
		t.Run(name, func(t *testing.T) {
			lower, fs, h := lookupInStack(t, shared)
			lookupIn := func(dirFH []byte, name string) Found {
				t.Helper()
				f := h.LookupIn(dirFH, name)
				if f.DirErr == nil {
					want, err := fs.Lstat(f.DirPath)
					must(t, err)
					sameAttrs(t, "the directory "+f.DirPath, f.DirInfo, want)
				}
				return f
			}
			fhD, err := h.ToHandle([]string{"d"})
			must(t, err)

			f := lookupIn(fhD, "x")
			want, wantInfo, err := h.Lookup([]string{"d", "x"})
			must(t, err)
			if f.Err != nil || !sameObject(f.Handle, want) || f.DirPath != "d" {
				t.Fatalf("LookupIn(d, x) = %+v, want the handle of d/x", f)
			}
			sameAttrs(t, "d/x", f.Info, wantInfo)
			if f = lookupIn(fhD, "missing"); f.DirErr != nil || f.Err != syscall.ENOENT || f.DirInfo == nil {
				t.Fatalf("LookupIn(d, missing) = %+v, want ENOENT with the directory's attributes", f)
			}

			// The directory's attributes are the disk's after a change in it, and after
			// one made in the lower behind the union's back.
			must(t, fs.MkdirAll("d/new", 0o700))
			time.Sleep(10 * time.Millisecond)
			lookupIn(fhD, "new")
			fhP, err := h.ToHandle([]string{"p"})
			must(t, err)
			lookupIn(fhP, "q")
			fhQ, err := h.ToHandle([]string{"p", "q"})
			must(t, err)
			lookupIn(fhQ, "none")
			must(t, os.Chmod(filepath.Join(lower, "p", "q"), 0o711))
			must(t, os.Mkdir(filepath.Join(lower, "p", "q", "behind"), 0o755))
			if f = lookupIn(fhP, "q"); f.Err != nil || f.Info.Mode().Perm() != 0o711 {
				t.Fatalf("LookupIn(p, q) after a chmod in the lower: %+v, want mode 0711", f)
			}
			if f = lookupIn(fhQ, "behind"); f.Err != nil || !f.Info.IsDir() {
				t.Fatalf("LookupIn(p/q, behind): %+v, want the directory made in the lower", f)
			}

			// Another directory takes d's path: the handle's directory is found where it
			// went, never the newcomer.
			must(t, fs.Rename("d", "e"))
			must(t, fs.MkdirAll("d", 0o755))
			nf, err := fs.Create("d/x")
			must(t, err)
			must(t, nf.Close())
			f = lookupIn(fhD, "x")
			want, _, err = h.Lookup([]string{"e", "x"})
			must(t, err)
			if f.DirErr != nil || f.Err != nil || f.DirPath != "e" || !sameObject(f.Handle, want) {
				t.Fatalf("LookupIn(d, x) after d moved to e: %+v, want e/x", f)
			}

			must(t, fs.Remove("e/x"))
			must(t, fs.Remove("e/sub"))
			must(t, fs.Remove("e/new"))
			must(t, fs.Remove("e"))
			if f = lookupIn(fhD, "x"); f.DirErr != syscall.ESTALE {
				t.Fatalf("LookupIn of a removed directory: %+v, want ESTALE", f)
			}
		})
	}
}
