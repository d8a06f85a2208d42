// Package differential runs the same random operation sequences against the
// kernel overlay and against billyunion on identical copies of generated
// layers, and compares results, visible trees and upper layers after every
// step.
package differential

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// namePool keeps names colliding across layers, which is where the overlay
// rules matter.
var namePool = []string{"a", "b", "c", "d", "e"}

var fileModes = []uint32{0o644, 0o600, 0o755, 0o640, 0o4755, 0o2750, 0o1777}

// generate builds lowers l1 (top) .. l3, an empty upper u and work dir w
// under root. With redirects, l2 and then l1 are former uppers: each is
// the upper of a kernel overlay (redirect_dir=on) over the layers below
// it for a few directory renames, so that they hold redirects, and the
// whiteouts and copied-up directories that come with them, exactly as the
// kernel leaves them.
func generate(r *rand.Rand, root string, redirects, links bool) error {
	for _, d := range []string{"l1", "l2", "l3", "u", "w"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	g := &generator{r: r, redirects: redirects, links: links}
	for i, l := range []string{"l1", "l2", "l3"} {
		g.layerDir(filepath.Join(root, l), 0, i < 2)
	}
	if g.err != nil {
		return g.err
	}
	if redirects {
		if err := g.formerUpper(root, "l2", "l3"); err != nil {
			return err
		}
		if err := g.formerUpper(root, "l1", "l2:"+filepath.Join(root, "l3")); err != nil {
			return err
		}
	}
	// Fixed times everywhere, so both copies and every run agree.
	return setTimes(root, 1_600_000_000+int64(r.IntN(1000))*100)
}

type generator struct {
	r         *rand.Rand
	redirects bool
	links     bool // many more hard links (variant.hardLinks)
	err       error
	files     []string // regular files of the current layer, for hard links
}

func (g *generator) fail(err error) {
	if g.err == nil && err != nil {
		g.err = err
	}
}

// layerDir fills one directory of a layer. Lower layers above the bottom
// may hold whiteouts and opaque directories.
func (g *generator) layerDir(dir string, depth int, canHide bool) {
	if depth == 0 {
		g.files = nil
	}
	n := 2 + g.r.IntN(3)
	used := map[string]bool{}
	for i := 0; i < n; i++ {
		name := namePool[g.r.IntN(len(namePool))]
		if used[name] {
			continue
		}
		used[name] = true
		p := filepath.Join(dir, name)
		if g.links && len(g.files) > 0 && g.r.IntN(3) == 0 {
			g.fail(os.Link(g.files[g.r.IntN(len(g.files))], p))
			continue
		}
		switch k := g.r.IntN(20); {
		case k < 7:
			g.file(p)
		case k < 12 && depth < 3:
			g.fail(os.Mkdir(p, 0o755))
			if canHide && g.r.IntN(6) == 0 {
				g.fail(unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0))
			}
			if canHide && g.r.IntN(8) == 0 {
				g.xattrWhiteoutDir(p)
			} else {
				g.layerDir(p, depth+1, canHide)
			}
		case k < 14:
			targets := []string{"a", "../b", "/etc/passwd", "../../../../..", "/", "c/d"}
			g.fail(os.Symlink(targets[g.r.IntN(len(targets))], p))
		case k < 16 && canHide:
			g.fail(unix.Mknod(p, unix.S_IFCHR, 0)) // whiteout
		case k < 18 && len(g.files) > 0:
			g.fail(os.Link(g.files[g.r.IntN(len(g.files))], p))
		case k < 19:
			g.fail(unix.Mkfifo(p, 0o644))
		default:
			g.file(p)
		}
	}
}

func (g *generator) file(p string) {
	data := make([]byte, g.r.IntN(64))
	for i := range data {
		data[i] = byte('a' + g.r.IntN(26))
	}
	g.fail(os.WriteFile(p, data, 0o644))
	g.fail(os.Chmod(p, 0)) // chmod after chown below keeps setuid bits
	ids := []int{0, 1000}
	g.fail(os.Lchown(p, ids[g.r.IntN(2)], ids[g.r.IntN(2)]))
	g.fail(unix.Chmod(p, fileModes[g.r.IntN(len(fileModes))]))
	g.files = append(g.files, p)
}

// xattrWhiteoutDir makes p a directory marked opaque=x holding an xattr
// whiteout for one name, and an ordinary file.
func (g *generator) xattrWhiteoutDir(p string) {
	g.fail(unix.Setxattr(p, "trusted.overlay.opaque", []byte("x"), 0))
	wo := filepath.Join(p, namePool[g.r.IntN(len(namePool))])
	g.fail(os.WriteFile(wo, nil, 0o644))
	g.fail(unix.Setxattr(wo, "trusted.overlay.whiteout", []byte{}, 0))
	if other := filepath.Join(p, "kept"); other != wo {
		g.file(other)
	}
}

// setTimes gives every object under root a fixed time derived from base,
// children first.
func setTimes(root string, base int64) error {
	var paths []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec((base + int64(i)) * 1e9), unix.NsecToTimespec((base + int64(i)) * 1e9)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("times %s: %w", paths[i], err)
		}
	}
	return nil
}

// copyTree copies a generated layer set with everything the overlay cares
// about: xattrs, hard links, devices, owners, times.
func copyTree(src, dst string) error {
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
	}
	return nil
}

// formerUpper mounts a kernel overlay with redirect_dir=on of layer upper
// over lowers (under root), renames a few directories in it, and unmounts.
func (g *generator) formerUpper(root, upper, lowers string) error {
	mnt, work := filepath.Join(root, "gen-mnt"), filepath.Join(root, "gen-work")
	for _, d := range []string{mnt, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	defer os.RemoveAll(work)
	defer os.Remove(mnt)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on",
		filepath.Join(root, lowers), filepath.Join(root, upper), work)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		return fmt.Errorf("kernel overlay for a former upper: %w", err)
	}
	defer unmount(mnt)
	for i := 0; i < 2+g.r.IntN(4); i++ {
		tree, err := walkHost(mnt, false)
		if err != nil {
			return err
		}
		if o, ok := dirRenameOp(g.r, tree, nil); ok {
			unix.Rename(filepath.Join(mnt, o.a), filepath.Join(mnt, o.b)) // failures are part of the game
		}
	}
	return nil
}

// unmount unmounts mnt, waiting out a busy moment, detaching at last.
func unmount(mnt string) {
	for i := 0; i < 50; i++ {
		if err := unix.Unmount(mnt, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Unmount(mnt, unix.MNT_DETACH)
}
