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
	// commitTarget names the workspace a commit hands its layer to (JSON journalTarget);
	// commitReceived is in that workspace's own journal, naming the giver's workdir.
	commitTarget   = "target"
	commitReceived = "received"
	// commitDoneName is a journal being removed (dropJournal).
	commitDoneName = "ovlnfs-commit.done"
)

// CommitInfo describes a finished commit.
type CommitInfo struct {
	Layer   string `json:"layer"`   // the new lower layer
	Entries int    `json:"entries"` // entries of the upper root moved into it
	// Flattened: the layer is the whole tree, which replaced the lowers.
	Flattened bool `json:"flattened,omitempty"`
	// Target is the workdir of the workspace the layer went to, when not this one's.
	Target string `json:"target,omitempty"`
}

// Stack is what commits made of a workspace's lowers, as WORK/ovlnfs-stack records it.
type Stack struct {
	// Layers are the committed layers, top-most first.
	Layers []string `json:"layers"`
	// Flattened: the bottom committed layer is a flattened commit's, the whole tree of
	// the workspace at that commit, which replaced the configured lowers (Lowers).
	Flattened bool `json:"flattened,omitempty"`
	// Former are the committed layers flattened commits replaced, top-most first: no
	// longer searched, but their objects are origins of the flattened layer's copies.
	Former []string `json:"former,omitempty"`
}

// Lowers is a union's lowers for a workspace configured over configured: the committed
// layers on top of configured, or, once flattened, the committed layers alone, with the
// replaced committed layers and configured as former lowers (Options.FormerLowers, the
// first formerCommitted of them committed ones), which keep the identities of the
// objects copied from them. committed is Options.CommittedLowers.
func (s Stack) Lowers(configured []string) (lowers []string, committed int, former []string, formerCommitted int) {
	if s.Flattened {
		return slices.Clone(s.Layers), len(s.Layers), append(slices.Clone(s.Former), configured...), len(s.Former)
	}
	return append(slices.Clone(s.Layers), configured...), len(s.Layers), nil, 0
}

// flattenedOver is the stack a flattened commit into into makes of s.
func (s Stack) flattenedOver(into string) Stack {
	return Stack{Layers: []string{into}, Flattened: true, Former: append(slices.Clone(s.Layers), s.Former...)}
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

// CommitOptions are a commit's choices beyond the new layer's path.
type CommitOptions struct {
	// Flatten makes the new layer the workspace's whole merged tree without the overlay's
	// metadata, replacing its lowers (flatten.go); StageFlatten must have staged it.
	Flatten bool
	// Target, when set, is the workspace whose stack gets the new layer instead of this
	// one's: this workspace hands its changes over and starts over on its unchanged
	// lowers. Both must stand on the same lowers (Lowers and TargetLowers are their
	// configured ones; the stacks they make must be equal), their uppers on one
	// filesystem. No union may have either open.
	Target               *Workspace
	Lowers, TargetLowers []string
}

// Commit moves the upper's contents into the new layer directory into (absolute, not
// existing, its parent on the upper's filesystem) and records it on top of the
// workspace's committed layers. No union may have the workspace open.
func (w Workspace) Commit(into string) (CommitInfo, error) {
	return w.CommitWith(into, CommitOptions{})
}

// CommitWith is Commit with opts.
func (w Workspace) CommitWith(into string, opts CommitOptions) (CommitInfo, error) {
	if err := w.recover(opts.Flatten); err != nil {
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
	t := opts.Target
	if t != nil {
		if err := w.checkTarget(into, &ust, opts); err != nil {
			return CommitInfo{}, err
		}
	}
	work, err := w.openWork()
	if err != nil {
		return CommitInfo{}, err
	}
	defer unix.Close(work)
	if opts.Flatten {
		if _, err := layer.Lstat(work, flattenStage); err != nil {
			return CommitInfo{}, fmt.Errorf("commit --flatten: nothing staged (StageFlatten): %w", err)
		}
	}
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
		_ = w.dropJournal(work)
		_ = layer.RemoveAll(work, flattenStage)
		return CommitInfo{}, err
	}
	if err := writeFileAt(journal, commitInto, []byte(into)); err != nil {
		return abandon(err)
	}
	if t != nil {
		b, _ := json.Marshal(journalTarget{Upper: t.Upper, Work: t.Work, XattrPrefix: t.XattrPrefix})
		if err := writeFileAt(journal, commitTarget, b); err != nil {
			return abandon(err)
		}
	}
	if opts.Flatten {
		if err := unix.Renameat(work, flattenStage, journal, stageInJournal); err != nil {
			return abandon(err)
		}
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
	if opts.Flatten {
		// From here on forward only: the stage is merged into the new layer.
		if err := w.setJournalPhase(work, commitDirName, journal, phaseFlatten); err != nil {
			return CommitInfo{}, err
		}
		if err := w.flattenInto(work, journal, into); err != nil {
			return CommitInfo{}, fmt.Errorf("commit --flatten: %w", err) // Recover redoes it
		}
	}
	if t != nil {
		if err := t.receive(w, into); err != nil {
			return CommitInfo{}, err
		}
		if err := w.finishCommit(work, upper, ""); err != nil {
			return CommitInfo{}, err
		}
		return CommitInfo{Layer: into, Entries: moved, Target: t.Work}, nil
	}
	stack, err := w.ReadStack()
	if err != nil {
		return CommitInfo{}, err
	}
	if opts.Flatten {
		stack = stack.flattenedOver(into)
	} else {
		stack.Layers = append([]string{into}, stack.Layers...)
	}
	// The commit's moment: the stack names the new layer.
	if err := w.writeStack(work, stack); err != nil {
		return CommitInfo{}, err
	}
	w.step("stacked")
	if err := w.finishCommit(work, upper, into); err != nil {
		return CommitInfo{}, err
	}
	return CommitInfo{Layer: into, Entries: moved, Flattened: opts.Flatten}, nil
}

// flattenInto merges the journal's stage into the new layer into and syncs it.
func (w Workspace) flattenInto(work, journal int, into string) error {
	stage, err := layer.OpenDir(journal, stageInJournal)
	if err != nil {
		return err
	}
	defer unix.Close(stage)
	dst, err := layer.OpenDir(unix.AT_FDCWD, into)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	w.step("flattening")
	if err := w.mergeStage(stage, dst, true); err != nil {
		return err
	}
	if err := w.finishSkeleton(stage, dst); err != nil {
		return err
	}
	w.step("flattened")
	return unix.Syncfs(work)
}

// journalTarget is the journal's record of the workspace a commit hands its layer to.
type journalTarget struct {
	Upper, Work, XattrPrefix string
}

// checkTarget refuses a commit into opts.Target that could not keep its meaning: the
// layer's whiteouts and origin records are relative to this workspace's lowers, and its
// objects must lie on a filesystem the target's identities already count.
func (w Workspace) checkTarget(into string, ust *unix.Stat_t, opts CommitOptions) error {
	t := opts.Target
	if opts.Flatten {
		return fmt.Errorf("commit: --flatten and a target workspace do not go together (a flattened layer replaces lowers): %w", syscall.EINVAL)
	}
	if filepath.Clean(t.Work) == filepath.Clean(w.Work) {
		return fmt.Errorf("commit: the target is this workspace: %w", syscall.EINVAL)
	}
	if t.prefix() != w.prefix() {
		return fmt.Errorf("commit: the target's overlay xattrs are %s, this workspace's %s: %w", t.prefix(), w.prefix(), syscall.EINVAL)
	}
	var tst unix.Stat_t
	if err := unix.Stat(t.Upper, &tst); err != nil {
		return fmt.Errorf("commit: target upper %s: %w", t.Upper, err)
	}
	if tst.Dev != ust.Dev {
		return fmt.Errorf("commit: the target's upper %s is not on this upper's filesystem: %w", t.Upper, syscall.EXDEV)
	}
	if within(into, t.Upper) || within(into, t.Work) {
		return fmt.Errorf("commit: %s lies inside the target's upper or workdir: %w", into, syscall.EINVAL)
	}
	if err := t.Recover(); err != nil {
		return fmt.Errorf("commit: target: %w", err)
	}
	mine, err := w.ReadStack()
	if err != nil {
		return err
	}
	theirs, err := t.ReadStack()
	if err != nil {
		return err
	}
	ml, _, mf, mc := mine.Lowers(opts.Lowers)
	tl, _, tf, tc := theirs.Lowers(opts.TargetLowers)
	if !slices.Equal(ml, tl) || !slices.Equal(mf, tf) || mc != tc {
		return fmt.Errorf("commit: the target stands on other lowers (%s) than this workspace (%s): a layer's whiteouts and origins mean something only over the lowers it was made on: %w",
			strings.Join(tl, ":"), strings.Join(ml, ":"), syscall.EINVAL)
	}
	return nil
}

// receive puts the layer into, which the workspace from committed, on top of t's stack:
// a journal of t's own first (a kill before the stack names the layer leaves it for t's
// Recover to drop, one after for it to finish), then the stack, then the finish.
func (t Workspace) receive(from Workspace, into string) error {
	t.killAt = from.killAt
	twork, err := t.openWork()
	if err != nil {
		return err
	}
	defer unix.Close(twork)
	if err := unix.Mkdirat(twork, commitDirName, 0o700); err != nil {
		return fmt.Errorf("target %s: %w", t.Work, err)
	}
	journal, err := layer.OpenDir(twork, commitDirName)
	if err != nil {
		return err
	}
	err = writeFileAt(journal, commitInto, []byte(into))
	if err == nil {
		err = writeFileAt(journal, commitReceived, []byte(from.Work))
	}
	unix.Close(journal)
	if err == nil {
		err = unix.Syncfs(twork)
	}
	if err != nil {
		_ = t.dropJournal(twork)
		return err
	}
	t.step("target journal")
	stack, err := t.ReadStack()
	if err != nil {
		return err
	}
	stack.Layers = append([]string{into}, stack.Layers...)
	// The commit's moment: the target's stack names the new layer.
	if err := t.writeStack(twork, stack); err != nil {
		return err
	}
	t.step("stacked")
	return t.finishReceive(twork, into)
}

// finishReceive completes a received layer: the upper root's origin pointed at the new
// top lower (as finishCommit does), the journal removed.
func (t Workspace) finishReceive(twork int, into string) error {
	upper, err := unix.Open(t.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(upper)
	if err := t.pointRootOrigin(upper, into); err != nil {
		return err
	}
	if err := unix.Syncfs(twork); err != nil {
		return err
	}
	return t.dropJournal(twork)
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
//
// A flattened commit keeps the moves index: a directory renamed with a redirect keeps
// the identity of the lower directory it was, whose handle leads to that directory's old
// place in a former lower, and only the index's records lead from there to where it is.
func (w Workspace) finishCommit(work, upper int, into string) error {
	phase, _ := os.ReadFile(filepath.Join(w.Work, commitDirName, phaseFile))
	keepMoves := string(phase) == phaseFlatten
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
	if !keepMoves {
		if err := layer.RemoveAll(work, movesDir); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	if into != "" {
		if err := w.pointRootOrigin(upper, into); err != nil {
			return err
		}
	}
	if err := unix.Syncfs(work); err != nil {
		return err
	}
	return w.dropJournal(work)
}

// pointRootOrigin points the upper root's origin, where it has one, at the new top lower
// into (the index checks it at start, as the kernel does).
func (w Workspace) pointRootOrigin(upper int, into string) error {
	x := copyup.Xattrs{Prefix: w.prefix()}
	if _, err := layer.Getxattr(upper, "", x.Origin()); err != nil {
		return nil
	}
	top, err := unix.Open(into, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	// The record the union's index check expects (openIndex): the new top lower's
	// filesystem uuid when the upper records uuids (initUpperUUID), else zeros.
	var uuid [16]byte
	if v, err := layer.Getxattr(upper, "", x.UUID()); err == nil && len(v) == 16 {
		uuid = layer.FilesystemUUID(top)
	}
	rec, err := layer.EncodeOrigin(top, "", uuid)
	unix.Close(top)
	if err != nil {
		return err
	}
	return layer.Setxattr(upper, "", x.Origin(), rec)
}

// dropJournal removes the commit journal of the workdir work: renamed out of the way
// first, in one step, since a journal missing some of its files (a removal killed
// halfway) would mean another operation, then removed (Recover removes what a kill
// left of it).
func (w Workspace) dropJournal(work int) error {
	if err := layer.RemoveAll(work, commitDoneName); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := unix.Renameat(work, commitDirName, work, commitDoneName); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	if err := unix.Fsync(work); err != nil {
		return err
	}
	w.step("journal renamed")
	return layer.RemoveAll(work, commitDoneName)
}

// recoverCommit takes back or finishes an interrupted commit (Recover calls it), and
// removes a flattened commit's stage that no commit took (unless keepStage).
func (w Workspace) recoverCommit(work int, keepStage bool) error {
	// A stack file a kill left before renaming it into place: the stack is the old one.
	if err := unix.Unlinkat(work, stackFile+".tmp", 0); err != nil && err != unix.ENOENT {
		return err
	}
	// A finished commit's journal a kill left half removed.
	if err := layer.RemoveAll(work, commitDoneName); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if !keepStage {
		if err := layer.RemoveAll(work, flattenStage); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	journal, err := layer.OpenDir(work, commitDirName)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(journal)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(w.Work, commitDirName, name))
		return string(b)
	}
	into, phase := read(commitInto), read(phaseFile)
	stack, err := w.Committed()
	if err != nil {
		return err
	}
	if _, err := layer.Lstat(journal, commitReceived); err == nil {
		// The receiving end of a commit into this workspace: finished once the stack names
		// the layer; else the giving workspace takes its commit back.
		if into != "" && slices.Contains(stack, into) {
			return w.finishReceive(work, into)
		}
		return w.dropJournal(work)
	}
	upper, err := unix.Open(w.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(upper)
	if tb := read(commitTarget); tb != "" {
		var jt journalTarget
		if err := json.Unmarshal([]byte(tb), &jt); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(w.Work, commitDirName, commitTarget), err)
		}
		t := Workspace{Upper: jt.Upper, Work: jt.Work, XattrPrefix: jt.XattrPrefix}
		theirs, err := t.Committed()
		if err != nil {
			return fmt.Errorf("the target of an interrupted commit: %w", err)
		}
		if into != "" && slices.Contains(theirs, into) {
			// Handed over: the target's end finished, then this one's.
			if err := t.Recover(); err != nil {
				return fmt.Errorf("the target of an interrupted commit: %w", err)
			}
			return w.finishCommit(work, upper, "")
		}
	} else if into != "" && len(stack) > 0 && stack[0] == into {
		return w.finishCommit(work, upper, into) // stacked: forward
	}
	if into != "" && phase == phaseFlatten {
		// All moved, the stage being merged: forward.
		if err := w.flattenInto(work, journal, into); err != nil {
			return fmt.Errorf("finishing an interrupted flattened commit: %w", err)
		}
		old, err := w.ReadStack()
		if err != nil {
			return err
		}
		if err := w.writeStack(work, old.flattenedOver(into)); err != nil {
			return err
		}
		return w.finishCommit(work, upper, into)
	}
	if into != "" && phase == phaseOut {
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
	return w.dropJournal(work)
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
