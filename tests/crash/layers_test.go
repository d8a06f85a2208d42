package crash_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// buildLayers writes two lower layers with one subtree per worker (w0, w1, ...), an empty
// upper and workdir under dir. Each subtree holds what the multi-step changes need to
// start from: a large lower file (copy-up takes long enough for kills to land in it),
// small files, lower files with several names (with lowerLinks), a symlink, a lower-only tree three deep (renames
// get relative and absolute redirects), directories merged from both lowers, a lower
// whiteout, an opaque lower directory and an empty one.
func buildLayers(r *rand.Rand, dir string, workers int, lowerLinks bool) (l1, l2, upper, work string, err error) {
	l1, l2 = filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	upper, work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{l1, l2, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", "", "", "", err
		}
	}
	file := func(p string, size int) {
		if err != nil {
			return
		}
		if err = os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if err = os.WriteFile(p, b, 0o644); err == nil {
			err = os.Chmod(p, os.FileMode(modes[r.IntN(len(modes))]))
		}
	}
	mkdir := func(p string) {
		if err == nil {
			err = os.MkdirAll(p, 0o755)
		}
	}
	small := func() int { return r.IntN(20 << 10) }
	for w := range workers {
		b := filepath.Join(l2, fmt.Sprintf("w%d", w))
		t := filepath.Join(l1, fmt.Sprintf("w%d", w))
		file(filepath.Join(b, "big"), 4<<20)
		for i := range 10 {
			file(filepath.Join(b, fmt.Sprintf("f%d", i)), small())
		}
		if lowerLinks { // three names in two directories, and a pair in a merged one
			file(filepath.Join(b, "h1"), small())
			file(filepath.Join(b, "m", "j1"), small())
			mkdir(filepath.Join(b, "a"))
			for _, l := range [][2]string{{"h1", "h2"}, {"h1", "a/h3"}, {"m/j1", "m/j2"}} {
				if err == nil {
					err = os.Link(filepath.Join(b, l[0]), filepath.Join(b, l[1]))
				}
			}
		}
		if err == nil {
			err = os.Symlink("f0", filepath.Join(b, "s1"))
		}
		for i := range 5 {
			file(filepath.Join(b, "a", fmt.Sprintf("x%d", i)), small())
		}
		for i := range 4 {
			file(filepath.Join(b, "a", "b", fmt.Sprintf("y%d", i)), small())
		}
		file(filepath.Join(b, "a", "b", "c", "z0"), small())
		file(filepath.Join(b, "a", "b", "c", "z1"), 300<<10)
		for i := range 4 {
			file(filepath.Join(b, "m", fmt.Sprintf("p%d", i)), small())
		}
		file(filepath.Join(b, "m", "q", "r0"), small())
		file(filepath.Join(b, "o", "hidden0"), small())
		mkdir(filepath.Join(b, "e"))

		file(filepath.Join(t, "m", "p0"), small())
		file(filepath.Join(t, "m", "p4"), small())
		file(filepath.Join(t, "m", "p5"), 1<<20)
		file(filepath.Join(t, "m", "q", "r1"), small())
		file(filepath.Join(t, "f1"), small())
		file(filepath.Join(t, "o", "v0"), small())
		file(filepath.Join(t, "g", "t0"), small())
		file(filepath.Join(t, "g", "t1"), small())
		if err != nil {
			return "", "", "", "", err
		}
		if err = unix.Mknod(filepath.Join(t, "f2"), unix.S_IFCHR, 0); err != nil {
			return "", "", "", "", fmt.Errorf("lower whiteout: %w", err)
		}
		if err = unix.Setxattr(filepath.Join(t, "o"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return "", "", "", "", fmt.Errorf("opaque lower dir: %w", err)
		}
	}
	return l1, l2, upper, work, err
}
