package differential

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// op is one operation, applied to both sides.
type op struct {
	kind string
	a, b string // union-relative paths
	mode uint32
	size int64
	data string
	uid  int
	// linked: chosen to work on a name of a file with several names
	// (hardLinkOp), counted in the statistics.
	linked bool
}

func (o op) String() string {
	s := o.kind + " " + o.a
	if o.b != "" {
		s += " -> " + o.b
	}
	switch o.kind {
	case "create", "mkdir", "chmod", "mkfifo":
		s += fmt.Sprintf(" mode=%o", o.mode)
	case "truncate", "writeat":
		s += fmt.Sprintf(" size=%d", o.size)
	case "lchown":
		s += fmt.Sprintf(" uid=%d", o.uid)
	}
	return s
}

// hasDotDot marks operations whose paths climb with "..": the union refuses
// them (EINVAL) by design, the kernel resolves them. They are applied to the
// union only, which must refuse them and change nothing (a deliberate
// divergence listed in docs/semantics.md).
func (o op) hasDotDot() bool {
	for _, p := range []string{o.a, o.b} {
		for _, c := range strings.Split(p, "/") {
			if c == ".." {
				return true
			}
		}
	}
	return false
}

// throughSymlink reports whether a path of o walks through a symlink (an
// intermediate component that is a symlink in the current tree).
func (o op) throughSymlink(tree map[string]entryInfo) bool {
	for _, p := range []string{o.a, o.b} {
		comps := strings.Split(p, "/")
		for i := 1; i < len(comps); i++ {
			if tree[strings.Join(comps[:i], "/")].kind == "symlink" {
				return true
			}
		}
	}
	return false
}

type result struct {
	errno syscall.Errno
	data  string // what a read returned
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.Errno(0xffff) // not an errno: always a divergence
}

var when = time.Unix(1_700_000_000, 500)

// applyKernel performs o on the kernel overlay mounted at mnt, never
// following symlinks (the union never does).
func applyKernel(mnt string, o op) result {
	a, b := path.Join(mnt, o.a), path.Join(mnt, o.b)
	switch o.kind {
	case "create":
		fd, err := unix.Open(a, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW, o.mode)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		_, err = unix.Write(fd, []byte(o.data))
		unix.Close(fd)
		return result{errno: errnoOf(err)}
	case "overwrite", "append", "writeat":
		flags := map[string]int{"overwrite": unix.O_TRUNC, "append": unix.O_APPEND, "writeat": 0}[o.kind]
		fd, err := unix.Open(a, unix.O_WRONLY|unix.O_NOFOLLOW|flags, 0)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		defer unix.Close(fd)
		if o.kind == "writeat" {
			_, err = unix.Pwrite(fd, []byte(o.data), o.size)
		} else {
			_, err = unix.Write(fd, []byte(o.data))
		}
		return result{errno: errnoOf(err)}
	case "truncate":
		fd, err := unix.Open(a, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		defer unix.Close(fd)
		return result{errno: errnoOf(unix.Ftruncate(fd, o.size))}
	case "read":
		fd, err := unix.Open(a, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		f := os.NewFile(uintptr(fd), a)
		defer f.Close()
		data, err := io.ReadAll(f)
		return result{errno: errnoOf(err), data: string(data)}
	case "mkdir":
		return result{errno: errnoOf(unix.Mkdir(a, o.mode))}
	case "symlink":
		return result{errno: errnoOf(unix.Symlink(o.data, a))}
	case "mkfifo":
		return result{errno: errnoOf(unix.Mkfifo(a, o.mode))}
	case "link":
		return result{errno: errnoOf(unix.Linkat(unix.AT_FDCWD, a, unix.AT_FDCWD, b, 0))}
	case "unlink":
		return result{errno: errnoOf(unix.Unlink(a))}
	case "rmdir":
		return result{errno: errnoOf(unix.Rmdir(a))}
	case "rename":
		return result{errno: errnoOf(unix.Rename(a, b))}
	case "chmod":
		return result{errno: errnoOf(unix.Fchmodat(unix.AT_FDCWD, a, o.mode, unix.AT_SYMLINK_NOFOLLOW))}
	case "lchown":
		return result{errno: errnoOf(unix.Lchown(a, o.uid, o.uid))}
	case "utimes":
		ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.UnixNano())}
		return result{errno: errnoOf(unix.UtimesNanoAt(unix.AT_FDCWD, a, ts, unix.AT_SYMLINK_NOFOLLOW))}
	case "readlink":
		buf := make([]byte, 4096)
		n, err := unix.Readlink(a, buf)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		return result{data: string(buf[:n])}
	}
	panic("unknown op " + o.kind)
}

// applyUnion performs o through billyunion.
func applyUnion(fs *billyunion.FS, o op) result {
	switch o.kind {
	case "create":
		f, err := fs.OpenFile(o.a, os.O_CREATE|os.O_EXCL|os.O_WRONLY, billyunion.FileMode(o.mode))
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		_, err = f.Write([]byte(o.data))
		f.Close()
		return result{errno: errnoOf(err)}
	case "overwrite", "append", "writeat":
		flags := map[string]int{"overwrite": os.O_TRUNC, "append": os.O_APPEND, "writeat": 0}[o.kind]
		f, err := fs.OpenFile(o.a, os.O_WRONLY|flags, 0)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		defer f.Close()
		if o.kind == "writeat" {
			if _, err = f.Seek(o.size, io.SeekStart); err != nil {
				return result{errno: errnoOf(err)}
			}
		}
		_, err = f.Write([]byte(o.data))
		return result{errno: errnoOf(err)}
	case "truncate":
		f, err := fs.OpenFile(o.a, os.O_WRONLY, 0)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		defer f.Close()
		return result{errno: errnoOf(f.Truncate(o.size))}
	case "read":
		f, err := fs.Open(o.a)
		if err != nil {
			return result{errno: errnoOf(err)}
		}
		defer f.Close()
		data, err := io.ReadAll(f)
		return result{errno: errnoOf(err), data: string(data)}
	case "mkdir":
		return result{errno: errnoOf(fs.Mkdir(o.a, billyunion.FileMode(o.mode)))}
	case "symlink":
		return result{errno: errnoOf(fs.Symlink(o.data, o.a))}
	case "mkfifo":
		return result{errno: errnoOf(fs.Mkfifo(o.a, o.mode))}
	case "link":
		return result{errno: errnoOf(fs.Link(o.a, o.b))}
	case "unlink":
		return result{errno: errnoOf(fs.Unlink(o.a))}
	case "rmdir":
		return result{errno: errnoOf(fs.Rmdir(o.a))}
	case "rename":
		return result{errno: errnoOf(fs.Rename(o.a, o.b))}
	case "chmod":
		return result{errno: errnoOf(fs.Chmod(o.a, billyunion.FileMode(o.mode)))}
	case "lchown":
		return result{errno: errnoOf(fs.Lchown(o.a, o.uid, o.uid))}
	case "utimes":
		return result{errno: errnoOf(fs.Chtimes(o.a, when, when))}
	case "readlink":
		t, err := fs.Readlink(o.a)
		return result{errno: errnoOf(err), data: t}
	}
	panic("unknown op " + o.kind)
}

// randomOp picks an operation on the current tree (paths visible through
// the kernel overlay, with their kinds).
func randomOp(r *rand.Rand, tree map[string]entryInfo) op {
	var all, dirs []string
	dirs = append(dirs, "")
	for p, e := range tree {
		if p != "" { // the root as an operand crosses mounts on the kernel side
			all = append(all, p)
		}
		if e.kind == "dir" {
			dirs = append(dirs, p)
		}
	}
	sortStrings(all)
	sortStrings(dirs)
	existing := func() string {
		if len(all) == 0 || r.IntN(10) == 0 {
			return fresh(r, dirs)
		}
		return all[r.IntN(len(all))]
	}
	target := func() string {
		if r.IntN(3) == 0 && len(all) > 0 {
			return all[r.IntN(len(all))]
		}
		return fresh(r, dirs)
	}
	data := strings.Repeat(string(rune('A'+r.IntN(26))), r.IntN(40))
	modes := []uint32{0o644, 0o700, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o000}
	o := op{mode: modes[r.IntN(len(modes))], data: data, size: int64(r.IntN(80))}
	switch k := r.IntN(100); {
	case k < 10:
		o.kind, o.a = "create", target()
	case k < 15:
		o.kind, o.a = "overwrite", existing()
	case k < 20:
		o.kind, o.a = "append", existing()
	case k < 23:
		o.kind, o.a = "writeat", existing()
	case k < 27:
		o.kind, o.a = "truncate", existing()
	case k < 31:
		o.kind, o.a = "read", existing()
	case k < 38:
		o.kind, o.a = "mkdir", target()
	case k < 41:
		o.kind, o.a = "symlink", target()
		o.data = []string{"a", "../x", "/etc/shadow", "../../../.."}[r.IntN(4)]
	case k < 43:
		o.kind, o.a = "mkfifo", target()
	case k < 48:
		o.kind, o.a, o.b = "link", existing(), target()
	case k < 58:
		o.kind, o.a = "unlink", existing()
	case k < 65:
		o.kind, o.a = "rmdir", existing()
	case k < 78:
		o.kind, o.a, o.b = "rename", existing(), target()
	case k < 84:
		o.kind, o.a = "chmod", existing()
	case k < 88:
		o.kind, o.a = "lchown", existing()
		o.uid = []int{0, 1000, 1234}[r.IntN(3)]
	case k < 92:
		o.kind, o.a = "utimes", existing()
	case k < 94:
		o.kind, o.a = "readlink", existing()
	case k < 96:
		o.kind, o.a = "rmrf", existing()
	default:
		// Bad names: too long, climbing, or through a non-directory.
		bad := []string{strings.Repeat("n", 256), existing() + "/../x", "../x", existing() + "/child"}
		o.kind, o.a = []string{"mkdir", "create", "unlink", "rename"}[r.IntN(4)], bad[r.IntN(len(bad))]
		if o.kind == "rename" {
			o.b = target()
		}
	}
	return o
}

// fresh names a new entry in an existing directory (or under a file, or
// deeper than exists, which must fail alike).
func fresh(r *rand.Rand, dirs []string) string {
	parent := dirs[r.IntN(len(dirs))]
	return strings.TrimPrefix(parent+"/"+[]string{"a", "b", "c", "n", "m"}[r.IntN(5)], "/")
}
