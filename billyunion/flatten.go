package billyunion

import (
	"errors"
	"fmt"
	"path"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// A flattened commit (CommitOptions.Flatten) makes the new layer the workspace's whole
// merged tree with the overlay's metadata applied: no whiteouts, opaque marks, redirects
// or impure marks, so that it is a plain directory tree any overlay (or a bind mount)
// can use alone, and it replaces the workspace's lowers (Stack.Flattened).
//
// Its objects keep their identities (stem.go) as a commit's do:
//
//   - what the upper holds is moved into the layer as a commit moves it (same inodes,
//     same origin records);
//   - what only the lowers hold is copied (copyup.TreeCopy: FICLONE, then
//     copy_file_range), each copy with an origin record naming the object whose
//     identity it had (the record it had in a committed layer, else the lower object's
//     handle), as a copy-up records it; the lowers stay open as former lowers
//     (Options.FormerLowers), which decode those records;
//   - an upper directory whose identity was its topmost lower part (a merged directory
//     without a usable origin record) gets an origin record naming that part.
//
// It runs in two parts. StageFlatten, with the union open (and the export frozen),
// copies what the lowers add to the upper into the stage WORK/ovlnfs-flatten.new: a
// tree of the union's paths in which each directory the upper holds is a skeleton (the
// flattenMark, the times the upper directory has, the origin record it must get), and
// everything else is a copy. Then Commit, with the union closed, moves the stage into
// its journal, moves the upper's entries into the new layer (taken back if killed),
// and merges the stage into it (redone if killed): each copy renamed into place, each
// skeleton's directory rid of whiteouts and marks and given its times; then the stack
// names the new layer alone.

const (
	flattenStage   = "ovlnfs-flatten.new"
	stageInJournal = "stage"
	phaseFlatten   = "flatten" // a commit's phase: all moved, the stage being merged
)

// flattenMark is the xattr a skeleton directory of the stage carries.
func (w Workspace) flattenMark() string {
	return w.resetMark()[:len(w.resetMark())-len("reset")] + "flatten"
}

// StageFlatten prepares a flattened commit of the workspace fs is the union of (open,
// and nothing changing it meanwhile): the copies of what its lowers add to its upper,
// in WORK/ovlnfs-flatten.new, for Commit with CommitOptions.Flatten. It returns how many
// objects it copied.
func (w Workspace) StageFlatten(fs *FS) (int, error) {
	if !fs.hasUpper {
		return 0, fmt.Errorf("flatten: the union has no upper: %w", unix.EROFS)
	}
	work, err := w.openWork()
	if err != nil {
		return 0, err
	}
	defer unix.Close(work)
	if err := layer.RemoveAll(work, flattenStage); err != nil && !errors.Is(err, unix.ENOENT) {
		return 0, err
	}
	ust, err := layer.Fstat(fs.layers[0].Root)
	if err != nil {
		return 0, err
	}
	if err := unix.Mkdirat(work, flattenStage, 0o700); err != nil {
		return 0, err
	}
	root, err := layer.OpenDir(work, flattenStage)
	if err != nil {
		return 0, err
	}
	defer unix.Close(root)
	s := stager{w: w, fs: fs, tc: copyup.NewTreeCopy(), root: root}
	defer s.tc.Close()
	err = s.dir("", root, "")
	if err == nil {
		err = w.skeleton(root, "", &ust, nil)
	}
	if err == nil {
		err = unix.Syncfs(work)
	}
	if err != nil {
		_ = layer.RemoveAll(work, flattenStage)
		return 0, fmt.Errorf("flatten: staging: %w", err)
	}
	return s.copied, nil
}

type stager struct {
	w      Workspace
	fs     *FS
	tc     *copyup.TreeCopy
	root   int // the stage's root
	copied int
}

// dir stages the entries of the union directory p into dst (rel from the stage's root).
func (s *stager) dir(p string, dst int, rel string) error {
	infos, err := s.fs.ReadDir(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, fi := range infos {
		if err := s.entry(path.Join(p, fi.Name()), dst, joinStage(rel, fi.Name())); err != nil {
			return err
		}
	}
	return nil
}

func joinStage(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func (s *stager) entry(p string, dst int, rel string) error {
	fs := s.fs
	d, e, err := fs.lookup(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer d.close()
	top := &e.parts[0]
	isDir := layer.IsDir(&top.st)
	st, err := fs.entryStem(d, &e)
	if err != nil {
		return fmt.Errorf("%s: its identity: %w", p, err)
	}
	// The origin record the object in the flattened layer needs for its identity.
	record := func() ([]byte, error) {
		if len(st.origin) > 0 {
			return st.origin, nil
		}
		id, err := fs.objectID(st)
		if err != nil {
			return nil, err
		}
		var uuid [16]byte
		if fs.originUUIDs {
			uuid = fs.layerUUID[st.li]
		}
		return layer.MakeOrigin(id.Type, id.Handle, uuid), nil
	}
	if fs.isUpper(top.li) {
		if !isDir {
			return nil // moved with the upper's entries
		}
		var rec []byte
		if len(st.origin) == 0 && st.devIno != (devIno{top.st.Dev, top.st.Ino}) {
			// Its identity was its topmost lower part's.
			if rec, err = record(); err != nil {
				return fmt.Errorf("%s: its identity: %w", p, err)
			}
		}
		name := path.Base(p)
		if err := unix.Mkdirat(dst, name, 0o700); err != nil {
			return err
		}
		sk, err := layer.OpenDir(dst, name)
		if err != nil {
			return err
		}
		defer unix.Close(sk)
		if err := s.dir(p, sk, rel); err != nil {
			return err
		}
		return s.w.skeleton(dst, name, &top.st, rec)
	}
	// Only the lowers have it: a copy, with the identity it had.
	srcDir, srcName, done, err := fs.partPlace(d, &e, top)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer done()
	rec, err := record()
	if err != nil {
		return fmt.Errorf("%s: its identity: %w", p, err)
	}
	name := path.Base(p)
	if err := s.tc.CopyObject(srcDir, srcName, dst, name, s.root, rel); err != nil {
		return err
	}
	s.copied++
	if isDir {
		sub, err := layer.OpenDir(dst, name)
		if err != nil {
			return err
		}
		defer unix.Close(sub)
		if err := s.dir(p, sub, rel); err != nil {
			return err
		}
		if err := s.tc.FinishDir(srcDir, srcName, dst, name); err != nil {
			return err
		}
	}
	if len(rec) == 0 {
		return nil
	}
	return layer.Setxattr(dst, name, fs.x.Origin(), rec)
}

// partPlace is where the part p of entry e, a child of d, lies in its layer: a directory
// descriptor and a name there; done releases what it opened.
func (fs *FS) partPlace(d *dir, e *entry, p *part) (int, string, func(), error) {
	none := func() {}
	switch {
	case p.abs != nil:
		if len(p.abs) == 1 {
			return fs.layers[p.li].Root, p.abs[0], none, nil
		}
		fd, err := fs.openPath(p.li, p.abs[:len(p.abs)-1])
		if err != nil {
			return -1, "", none, layer.Errno(err)
		}
		return fd, p.abs[len(p.abs)-1], func() { unix.Close(fd) }, nil
	case p.name != "":
		return d.partFor(p.li).fd, p.name, none, nil
	default:
		return d.partFor(p.li).fd, e.name, none, nil
	}
}

// skeleton marks the stage directory name in dir (dir itself for "") as a skeleton of an
// upper directory with stat st, and records the origin record rec it must get, if any.
func (w Workspace) skeleton(dir int, name string, st *unix.Stat_t, rec []byte) error {
	if err := layer.Setxattr(dir, name, w.flattenMark(), []byte("skeleton")); err != nil {
		return err
	}
	if rec != nil {
		if err := layer.Setxattr(dir, name, copyup.Xattrs{Prefix: w.prefix()}.Origin(), rec); err != nil {
			return err
		}
	}
	return layer.SetTimes(dir, name, st.Atim, st.Mtim)
}

// mergeStage merges the stage directory stage into the new layer's directory dst (its
// upper directory, moved): copies renamed in, skeletons merged into the directories they
// stand for, which are then rid of whiteouts and of the overlay's marks and given the
// upper directory's times. Redoable after a kill: what was merged has left the stage.
func (w Workspace) mergeStage(stage, dst int, top bool) error {
	names, err := layer.ReadNames(stage, "")
	if err != nil {
		return err
	}
	for i, n := range names {
		if top && i == len(names)/2 {
			w.step("half flattened")
		}
		if ok, _ := layer.HasXattr(stage, n, w.flattenMark()); !ok {
			if err := unix.Renameat2(stage, n, dst, n, unix.RENAME_NOREPLACE); err != nil {
				return fmt.Errorf("placing %s: %w", n, err)
			}
			continue
		}
		sub, err := layer.OpenDir(stage, n)
		if err != nil {
			return err
		}
		into, err := layer.OpenDir(dst, n)
		if err == nil {
			err = w.mergeStage(sub, into, false)
			if err == nil {
				err = w.finishSkeleton(sub, into)
			}
			unix.Close(into)
		}
		unix.Close(sub)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := unix.Unlinkat(stage, n, unix.AT_REMOVEDIR); err != nil {
			return err
		}
	}
	return nil
}

// finishSkeleton applies the overlay's metadata to the directory dst of the new layer
// that the stage's skeleton sk stands for.
func (w Workspace) finishSkeleton(sk, dst int) error {
	names, err := layer.ReadNames(dst, "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if st, err := layer.Lstat(dst, n); err == nil && layer.IsWhiteout(&st) {
			if err := unix.Unlinkat(dst, n, 0); err != nil && err != unix.ENOENT {
				return err
			}
		}
	}
	x := copyup.Xattrs{Prefix: w.prefix()}
	for _, n := range []string{x.Opaque(), x.Redirect(), x.Impure()} {
		if err := layer.Removexattr(dst, "", n); err != nil && err != unix.ENODATA {
			return err
		}
	}
	if rec, err := layer.Getxattr(sk, "", x.Origin()); err == nil {
		if err := layer.Setxattr(dst, "", x.Origin(), rec); err != nil {
			return err
		}
	}
	st, err := layer.Fstat(sk)
	if err != nil {
		return err
	}
	return layer.SetTimes(dst, "", st.Atim, st.Mtim)
}
