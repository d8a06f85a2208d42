package billyunion

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// A commit bakes a workspace's upper into a new lower layer, put on top of its lowers,
// and starts the upper over empty. The new layer is a directory on the upper's
// filesystem, and the upper's entries are moved into it, not copied: every object keeps
// its inode, so its file handles (which name layer objects by their filesystem's
// handles) keep finding it, and clients see no STALE. The layer keeps the overlay's
// format (whiteouts, opaque directories, redirects), so the kernel overlay mounts it as a
// lower under the old ones.
//
// The layers committed so far are recorded in WORK/ovlnfs-stack (JSON, top-most first);
// a union of the workspace has them on top of its configured lowers (Committed).
//
// Like a reset, a commit moves entries out of the upper root in phases a journal in
// WORK/ovlnfs-commit.new records: a commit killed while moving is taken back (the
// entries moved back, the new layer removed), one killed after the stack file names the
// new layer is finished (the index emptied of the moved files' entries, the upper root's
// origin pointed at the new top lower). Recover does both.

const (
	stackFile     = "ovlnfs-stack"
	commitDirName = "ovlnfs-commit.new"
	commitInto    = "into" // the journal's file naming the new layer's path
)

// CommitInfo describes a finished commit.
type CommitInfo struct {
	Layer   string `json:"layer"`   // the new lower layer
	Entries int    `json:"entries"` // entries of the upper root moved into it
}

// Stack is what commits made of a workspace's lowers, as WORK/ovlnfs-stack records it.
type Stack struct {
	// Layers are the committed layers, top-most first.
	Layers []string `json:"layers"`
	// Flattened: the bottom committed layer is a flattened commit's, the whole tree of
	// the workspace at that commit, which replaced the configured lowers (Lowers).
	Flattened bool `json:"flattened,omitempty"`
}

// Lowers is a union's lowers for a workspace configured over configured: the committed
// layers on top of configured, or, once flattened, the committed layers alone, with
// configured as former lowers (Options.FormerLowers), which keep the identities of the
// objects copied from them. committed is Options.CommittedLowers.
func (s Stack) Lowers(configured []string) (lowers []string, committed int, former []string) {
	if s.Flattened {
		return slices.Clone(s.Layers), len(s.Layers), slices.Clone(configured)
	}
	return append(slices.Clone(s.Layers), configured...), len(s.Layers), nil
}

// ReadStack reads the workspace's stack (none: no commits yet).
func (w Workspace) ReadStack() (Stack, error) {
	name := filepath.Join(w.Work, stackFile)
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return Stack{}, nil
	}
	if err != nil {
		return Stack{}, err
	}
	var s Stack
	// A stack of plain commits is a JSON array of layers; one with a flattened layer an
	// object.
	if len(b) > 0 && b[0] == '[' {
		err = json.Unmarshal(b, &s.Layers)
	} else {
		err = json.Unmarshal(b, &s)
	}
	if err != nil {
		return Stack{}, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// Committed is the layers commits added to the workspace, top-most first: a union of it
// has them above its configured lowers (Options.CommittedLowers counts them), or alone
// once one was flattened (ReadStack).
func (w Workspace) Committed() ([]string, error) {
	s, err := w.ReadStack()
	return s.Layers, err
}

// Commit moves the upper's contents into the new layer directory into (absolute, not
// existing, its parent on the upper's filesystem) and records it on top of the
// workspace's committed layers. lowers are the workspace's configured lowers (for the
// upper root's origin with the index). No union may have the workspace open.
func (w Workspace) Commit(into string) (CommitInfo, error) {
	if err := w.Recover(); err != nil {
		return CommitInfo{}, err
	}
	if !filepath.IsAbs(into) || filepath.Clean(into) != into {
		return CommitInfo{}, fmt.Errorf("commit: the new layer %q must be an absolute, clean path: %w", into, syscall.EINVAL)
	}
	if _, err := os.Lstat(into); err == nil {
		return CommitInfo{}, fmt.Errorf("commit: %s exists: %w", into, syscall.EEXIST)
	}
	var pst, ust unix.Stat_t
	if err := unix.Stat(filepath.Dir(into), &pst); err != nil {
		return CommitInfo{}, fmt.Errorf("commit: %s: %w", filepath.Dir(into), err)
	}
	if err := unix.Stat(w.Upper, &ust); err != nil {
		return CommitInfo{}, err
	}
	if pst.Dev != ust.Dev {
		return CommitInfo{}, fmt.Errorf("commit: %s is not on the upper's filesystem (the upper's entries are moved, not copied): %w", into, syscall.EXDEV)
	}
	if within(into, w.Upper) || within(into, w.Work) {
		return CommitInfo{}, fmt.Errorf("commit: %s lies inside the upper or the workdir: %w", into, syscall.EINVAL)
	}
	work, err := w.openWork()
	if err != nil {
		return CommitInfo{}, err
	}
	defer unix.Close(work)
	if err := unix.Mkdirat(work, commitDirName, 0o700); err != nil {
		return CommitInfo{}, err
	}
	journal, err := layer.OpenDir(work, commitDirName)
	if err != nil {
		return CommitInfo{}, err
	}
	defer unix.Close(journal)
	abandon := func(err error) (CommitInfo, error) {
		_ = os.Remove(into)
		_ = layer.RemoveAll(work, commitDirName)
		return CommitInfo{}, err
	}
	if err := writeFileAt(journal, commitInto, []byte(into)); err != nil {
		return abandon(err)
	}
	if err := w.emptyLike(unix.AT_FDCWD, w.Upper, unix.AT_FDCWD, into); err != nil {
		return abandon(err)
	}
	// The root of a lower layer is no merged directory's copy: no overlay marks.
	if err := w.stripRootMarks(into); err != nil {
		return abandon(err)
	}
	if err := unix.Syncfs(work); err != nil {
		return abandon(err)
	}
	if err := w.setJournalPhase(work, commitDirName, journal, phaseOut); err != nil {
		return abandon(err)
	}
	upper, err := unix.Open(w.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return abandon(err)
	}
	defer unix.Close(upper)
	dst, err := unix.Open(into, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return abandon(err)
	}
	defer unix.Close(dst)
	moved, err := w.moveEntries(upper, dst, "half committed")
	if err != nil {
		return CommitInfo{}, fmt.Errorf("commit: %w", err) // Recover moves them back
	}
	if err := errors.Join(unix.Fsync(upper), unix.Fsync(dst)); err != nil {
		return CommitInfo{}, err
	}
	w.step("all moved")
	stack, err := w.ReadStack()
	if err != nil {
		return CommitInfo{}, err
	}
	stack.Layers = append([]string{into}, stack.Layers...)
	// The commit's moment: the stack names the new layer.
	if err := w.writeStack(work, stack); err != nil {
		return CommitInfo{}, err
	}
	w.step("stacked")
	if err := w.finishCommit(work, upper, into); err != nil {
		return CommitInfo{}, err
	}
	return CommitInfo{Layer: into, Entries: moved}, nil
}

// stripRootMarks removes the overlay's marks of a directory's contents from the new
// layer's root.
func (w Workspace) stripRootMarks(root string) error {
	x := copyup.Xattrs{Prefix: w.prefix()}
	for _, n := range []string{x.Origin(), x.Impure(), x.Opaque(), x.Redirect(), x.UUID()} {
		if err := layer.Removexattr(unix.AT_FDCWD, root, n); err != nil && err != unix.ENODATA {
			return err
		}
	}
	return nil
}

func (w Workspace) writeStack(work int, s Stack) error {
	var b []byte
	var err error
	if s.Flattened {
		b, err = json.Marshal(s)
	} else {
		b, err = json.Marshal(s.Layers) // the format of stacks without a flattened layer
	}
	if err != nil {
		return err
	}
	tmp := stackFile + ".tmp"
	_ = unix.Unlinkat(work, tmp, 0)
	f, err := layer.OpenFile(work, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		w.step("stack written")
		err = unix.Renameat(work, tmp, work, stackFile)
	}
	if err == nil {
		err = unix.Fsync(work)
	}
	return err
}

// finishCommit completes a commit the stack names: the index emptied (its entries link
// files that are lower files now, which a later copy-up must not write through), the
// moves index dropped (the union rebuilds it from the upper), the upper root's origin
// pointed at the new top lower (the index checks it at start, as the kernel does), the
// journal removed. Each step can be redone.
func (w Workspace) finishCommit(work, upper int, into string) error {
	if idx, err := layer.OpenDir(work, indexDirName); err == nil {
		names, rerr := layer.ReadNames(idx, "")
		for _, n := range names {
			if err := layer.RemoveAll(idx, n); err != nil {
				rerr = errors.Join(rerr, err)
			}
		}
		unix.Close(idx)
		if rerr != nil {
			return rerr
		}
	}
	if err := layer.RemoveAll(work, movesDir); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	x := copyup.Xattrs{Prefix: w.prefix()}
	if _, err := layer.Getxattr(upper, "", x.Origin()); err == nil {
		top, err := unix.Open(into, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		var uuid [16]byte
		if old, err := layer.Getxattr(upper, "", x.Origin()); err == nil {
			if o, err := layer.DecodeOrigin(old); err == nil {
				uuid = o.UUID
			}
		}
		rec, err := layer.EncodeOrigin(top, "", uuid)
		unix.Close(top)
		if err != nil {
			return err
		}
		if err := layer.Setxattr(upper, "", x.Origin(), rec); err != nil {
			return err
		}
	}
	if err := unix.Syncfs(work); err != nil {
		return err
	}
	return layer.RemoveAll(work, commitDirName)
}

// recoverCommit takes back or finishes an interrupted commit (Recover calls it).
func (w Workspace) recoverCommit(work int) error {
	// A stack file a kill left before renaming it into place: the stack is the old one.
	if err := unix.Unlinkat(work, stackFile+".tmp", 0); err != nil && err != unix.ENOENT {
		return err
	}
	journal, err := layer.OpenDir(work, commitDirName)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(journal)
	intoB, _ := os.ReadFile(filepath.Join(w.Work, commitDirName, commitInto))
	into := string(intoB)
	phase, _ := os.ReadFile(filepath.Join(w.Work, commitDirName, phaseFile))
	upper, err := unix.Open(w.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(upper)
	stack, err := w.Committed()
	if err != nil {
		return err
	}
	if into != "" && len(stack) > 0 && stack[0] == into {
		return w.finishCommit(work, upper, into) // stacked: forward
	}
	if into != "" && string(phase) == phaseOut {
		// Back: what was moved goes back into the upper root.
		if dst, err := unix.Open(into, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err == nil {
			_, err := w.moveEntries(dst, upper, "")
			unix.Close(dst)
			if err == nil {
				err = unix.Fsync(upper)
			}
			if err != nil {
				return fmt.Errorf("taking back an interrupted commit: %w", err)
			}
		}
	}
	if into != "" {
		if err := os.Remove(into); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("taking back an interrupted commit: removing %s: %w", into, err)
		}
	}
	return layer.RemoveAll(work, commitDirName)
}

// within reports whether p is dir or lies below it (both clean and absolute).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// CoverIndexedAliases copies up every lower name of a file the index holds: such a name
// shows the index entry's copy only through the index, which a commit empties (the copy
// becomes a lower file), so before a commit each name is linked to the copy in the upper
// (as a copy-up of it through the index does) and the names stay one file in the new
// layer. It walks the whole union when the index has entries, and returns how many names
// it covered. The workspace must be frozen: a change meanwhile could be missed.
func (fs *FS) CoverIndexedAliases() (int, error) {
	if fs.indexFD < 0 {
		return 0, nil
	}
	if names, err := layer.ReadNames(fs.indexFD, ""); err != nil || len(names) == 0 {
		return 0, err
	}
	covered := 0
	var walk func(p string) error
	walk = func(p string) error {
		infos, err := fs.ReadDir(p)
		if err != nil {
			return err
		}
		for _, fi := range infos {
			c := path.Join(p, fi.Name())
			if fi.IsDir() {
				if err := walk(c); err != nil {
					return err
				}
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink < 2 {
				continue
			}
			d, e, err := fs.lookup(c)
			if err != nil {
				continue // gone meanwhile
			}
			d.close()
			if e.index == nil || fs.inUpper(&e) {
				continue
			}
			comps, err := splitPath(c)
			if err != nil {
				return err
			}
			ud, _, err := fs.upperEntry(comps)
			if err != nil {
				return fmt.Errorf("linking %s to its index entry: %w", c, err)
			}
			ud.close()
			covered++
		}
		return nil
	}
	return covered, walk("")
}
