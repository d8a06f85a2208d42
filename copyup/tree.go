package copyup

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// TreeCopy copies whole layer trees (a workspace's upper and its index, for a
// snapshot): every object with its type, mode, owner, times and every xattr, the
// overlay's own included, since a copy of a layer must mean what the layer meant;
// regular files' data as a copy-up copies it (FICLONE first, so a snapshot on XFS or
// btrfs shares the data); and an object with several links, met more than once in the
// trees one TreeCopy copies, linked again rather than copied twice. Close releases it.
type TreeCopy struct {
	data Copier
	// links maps a source object (device, inode) with several links to where its first
	// copy is: a destination root kept open below and the path from it.
	links map[[2]uint64]copied
	roots []int
	// Method is the slowest data-copy method any file needed.
	Method Method
	// Files and Bytes count the regular files copied (not linked) and their sizes.
	Files, Bytes int64
}

type copied struct {
	root int
	path string
}

// NewTreeCopy returns a TreeCopy.
func NewTreeCopy() *TreeCopy {
	return &TreeCopy{data: Copier{log: slog.New(slog.DiscardHandler)}, links: map[[2]uint64]copied{}}
}

// Close releases the destination roots kept open for links.
func (t *TreeCopy) Close() error {
	var err error
	for _, fd := range t.roots {
		err = errors.Join(err, unix.Close(fd))
	}
	t.roots = nil
	return err
}

// Copy copies the directory srcName in srcDir, with everything below it, to dstName in
// dstDir, which must not exist. Nothing is synced: call unix.Syncfs on the destination
// filesystem once the copies are done.
func (t *TreeCopy) Copy(srcDir int, srcName string, dstDir int, dstName string) error {
	st, err := layer.Lstat(srcDir, srcName)
	if err != nil {
		return fmt.Errorf("copy %s: %w", srcName, layer.Errno(err))
	}
	if !layer.IsDir(&st) {
		return fmt.Errorf("copy %s: not a directory: %w", srcName, unix.ENOTDIR)
	}
	if err := unix.Mkdirat(dstDir, dstName, 0o700); err != nil {
		return fmt.Errorf("copy %s: %w", dstName, err)
	}
	root, err := layer.OpenDir(dstDir, dstName)
	if err != nil {
		return err
	}
	t.roots = append(t.roots, root)
	src, err := layer.OpenDir(srcDir, srcName)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if err := t.dir(src, root, root, ""); err != nil {
		return err
	}
	return t.finish(srcDir, srcName, dstDir, dstName, &st, true)
}

// dir copies the entries of src into dst, whose path from root is rel.
func (t *TreeCopy) dir(src, dst, root int, rel string) error {
	names, err := layer.ReadNames(src, "")
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := t.entry(src, dst, root, joinRel(rel, name), name); err != nil {
			return err
		}
	}
	return nil
}

func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func (t *TreeCopy) entry(src, dst, root int, rel, name string) error {
	return t.object(src, name, dst, name, root, rel, true, true)
}

// CopyObject copies the one object srcName in srcDir to dstName in dstDir (which must not
// exist) as Copy copies each object, less the overlay's own attributes (a layer with the
// overlay's metadata applied: a flattened commit's); a directory is made empty, for the
// caller to fill and then give its attributes with FinishDir. An object with several
// links that this TreeCopy copied before is linked to that copy: root is a destination
// directory the caller keeps open until Close, and rel this copy's path from it.
func (t *TreeCopy) CopyObject(srcDir int, srcName string, dstDir int, dstName string, root int, rel string) error {
	return t.object(srcDir, srcName, dstDir, dstName, root, rel, false, false)
}

// FinishDir gives a directory CopyObject made the source's attributes (less the
// overlay's), once its entries are in.
func (t *TreeCopy) FinishDir(srcDir int, srcName string, dstDir int, dstName string) error {
	st, err := layer.Lstat(srcDir, srcName)
	if err != nil {
		return layer.Errno(err)
	}
	return t.finish(srcDir, srcName, dstDir, dstName, &st, false)
}

// object copies srcName to dstName: with private the overlay's attributes too, with
// recurse a directory's entries and then its attributes.
func (t *TreeCopy) object(src int, srcName string, dst int, name string, root int, rel string, private, recurse bool) error {
	st, err := layer.Lstat(src, srcName)
	if err != nil {
		return fmt.Errorf("copy %s: %w", rel, layer.Errno(err))
	}
	key := [2]uint64{st.Dev, st.Ino}
	if !layer.IsDir(&st) && st.Nlink > 1 {
		if first, ok := t.links[key]; ok {
			if err := unix.Linkat(first.root, first.path, dst, name, 0); err != nil {
				return fmt.Errorf("copy %s: linking to %s: %w", rel, first.path, err)
			}
			return nil
		}
		t.links[key] = copied{root: root, path: rel}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dst, name, 0o700); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
		if !recurse {
			return nil
		}
		in, err := layer.OpenDir(src, srcName)
		if err != nil {
			return err
		}
		defer unix.Close(in)
		out, err := layer.OpenDir(dst, name)
		if err != nil {
			return err
		}
		defer unix.Close(out)
		if err := t.dir(in, out, root, rel); err != nil {
			return err
		}
	case unix.S_IFREG:
		if err := t.file(src, srcName, dst, name, &st); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	case unix.S_IFLNK:
		target, err := layer.Readlink(src, srcName)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, dst, name); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	default: // whiteouts (0/0 devices), other devices, fifos, sockets
		if err := unix.Mknodat(dst, name, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	}
	return t.finish(src, srcName, dst, name, &st, private)
}

func (t *TreeCopy) file(src int, srcName string, dst int, name string, st *unix.Stat_t) error {
	in, err := layer.OpenFile(src, srcName, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := layer.OpenFile(dst, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	used, err := t.data.copyContents(int(in.Fd()), int(out.Fd()))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return layer.Errno(err)
	}
	t.Method = max(t.Method, used)
	t.Files++
	t.Bytes += st.Size
	return nil
}

// finish gives the copy every xattr of the source (the overlay's with private), then its
// owner, mode and times.
func (t *TreeCopy) finish(srcDir int, srcName string, dstDir int, dstName string, st *unix.Stat_t, private bool) error {
	if err := copyXattrs(srcDir, srcName, dstDir, dstName, private); err != nil {
		return err
	}
	return SetAttrs(dstDir, dstName, st)
}
