package billyunion

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// Workspace is a workspace's writable part, an upper layer and its workdir, for the
// operations that replace what the upper holds: Snapshot, Reset (to the lowers or to a
// snapshot) and the snapshots' list. No union may have the workspace open meanwhile (the
// server closes its union around them); each is crash-safe: after a kill at any point the
// workspace is the old one or the new one, once Recover has run (Reset and Snapshot run it
// first, and the server before it opens a union).
//
// On disk, in the workdir beside the kernel's work and index directories:
//
//	ovlnfs-snapshots/NAME/upper   a copy of the upper (FICLONE where the filesystem can)
//	ovlnfs-snapshots/NAME/index   a copy of WORK/index, links to the upper kept as links
//	ovlnfs-snapshots/NAME/info    JSON: when it was taken, files and bytes copied
//	ovlnfs-snapshots/.tmp-NAME    a snapshot being taken (removed by Recover)
//	ovlnfs-reset.new              a reset in progress: the new upper's entries and index,
//	                              the old entries moved out, the phase (see Reset)
type Workspace struct {
	Upper, Work string
	// XattrPrefix is the overlay's xattr namespace, as Options.XattrPrefix ("" picks as
	// New does); the reset's marks use the same namespace.
	XattrPrefix string
	// Progress, when set, hears how far a commit or reset has moved the upper root's
	// entries: done of total, every progressEvery entries and at the end.
	Progress func(done, total int)
	// killAt, in tests, stops a reset at the named step as a kill would: no cleanup.
	killAt string
}

// progressEvery is how many entries moved make a progress report.
const progressEvery = 1000

// errKilled is the panic a test's killAt raises.
var errKilled = errors.New("killed (test)")

func (w Workspace) step(name string) {
	if w.killAt != "" && w.killAt == name {
		panic(errKilled)
	}
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	Name         string    `json:"name"`
	Taken        time.Time `json:"taken"`
	Files, Bytes int64     // regular files copied (not linked) and their bytes
}

const (
	snapshotsDirName = "ovlnfs-snapshots"
	snapshotTemp     = ".tmp-"
	resetDirName     = "ovlnfs-reset.new"
	resetTokenFile   = "token"
	indexDirName     = "index"
	maxSnapshotName  = 128
)

// prefix is the xattr namespace as New resolves it (xattrPrefix).
func (w Workspace) prefix() string {
	if p, err := xattrPrefix(w.XattrPrefix); err == nil {
		return p
	}
	return w.XattrPrefix // refused by the union that opens the workspace
}

// resetMark is the xattr a reset's new upper and index carry until the reset is whole:
// in the overlay's namespace family, outside the overlay's own names.
func (w Workspace) resetMark() string {
	return strings.TrimSuffix(w.prefix(), "overlay.") + "ovlnfs.reset"
}

// ValidSnapshotName refuses names that are not a plain file name of letters, digits,
// '-', '_' and '.', not starting with '.'.
func ValidSnapshotName(name string) error {
	if name == "" || len(name) > maxSnapshotName || name[0] == '.' {
		return fmt.Errorf("snapshot name %q: 1 to %d letters, digits, '-', '_' or '.', not starting with '.': %w", name, maxSnapshotName, syscall.EINVAL)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("snapshot name %q: only letters, digits, '-', '_' and '.': %w", name, syscall.EINVAL)
		}
	}
	return nil
}

func (w Workspace) openWork() (int, error) {
	fd, err := unix.Open(w.Work, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, fmt.Errorf("workdir %s: %w", w.Work, err)
	}
	return fd, nil
}

// Snapshot copies the upper and the index to the snapshot name, which must not exist.
func (w Workspace) Snapshot(name string) (SnapshotInfo, error) {
	if err := ValidSnapshotName(name); err != nil {
		return SnapshotInfo{}, err
	}
	if err := w.Recover(); err != nil {
		return SnapshotInfo{}, err
	}
	work, err := w.openWork()
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer unix.Close(work)
	if err := unix.Mkdirat(work, snapshotsDirName, 0o700); err != nil && err != unix.EEXIST {
		return SnapshotInfo{}, err
	}
	snaps, err := layer.OpenDir(work, snapshotsDirName)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer unix.Close(snaps)
	if _, err := layer.Lstat(snaps, name); err == nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot %s exists: %w", name, syscall.EEXIST)
	}
	tmp := snapshotTemp + name
	if err := layer.RemoveAll(snaps, tmp); err != nil && !errors.Is(err, unix.ENOENT) {
		return SnapshotInfo{}, err
	}
	if err := unix.Mkdirat(snaps, tmp, 0o700); err != nil {
		return SnapshotInfo{}, err
	}
	fail := func(err error) (SnapshotInfo, error) {
		_ = layer.RemoveAll(snaps, tmp)
		return SnapshotInfo{}, err
	}
	dst, err := layer.OpenDir(snaps, tmp)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(dst)
	tc := copyup.NewTreeCopy()
	defer tc.Close()
	parent, base := filepath.Split(w.Upper)
	pfd, err := unix.Open(parent, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(pfd)
	if err := tc.Copy(pfd, base, dst, "upper"); err != nil {
		return fail(err)
	}
	if _, err := layer.Lstat(work, indexDirName); err == nil {
		if err := tc.Copy(work, indexDirName, dst, "index"); err != nil {
			return fail(err)
		}
	}
	info := SnapshotInfo{Name: name, Taken: time.Now().UTC(), Files: tc.Files, Bytes: tc.Bytes}
	if err := writeJSONAt(dst, "info", info); err != nil {
		return fail(err)
	}
	// The workdir's descriptor: dst and snaps are O_PATH ones, which sync nothing.
	if err := unix.Syncfs(work); err != nil {
		return fail(err)
	}
	if err := unix.Renameat(snaps, tmp, snaps, name); err != nil {
		return fail(err)
	}
	return info, fsyncDir(work, snapshotsDirName)
}

// fsyncDir makes the entries of the directory name inside dir durable.
func fsyncDir(dir int, name string) error {
	f, err := layer.OpenDirForReading(dir, name)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func writeJSONAt(dir int, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := layer.OpenFile(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// Snapshots lists the snapshots, oldest first.
func (w Workspace) Snapshots() ([]SnapshotInfo, error) {
	dir := filepath.Join(w.Work, snapshotsDirName)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info := SnapshotInfo{Name: e.Name()}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "info")); err == nil {
			_ = json.Unmarshal(b, &info)
			info.Name = e.Name()
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return a.Taken.Compare(b.Taken) })
	return out, nil
}

// RemoveSnapshot removes the snapshot name.
func (w Workspace) RemoveSnapshot(name string) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	dir := filepath.Join(w.Work, snapshotsDirName)
	if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("snapshot %s: %w", name, syscall.ENOENT)
	}
	// Out of the list first (one rename), then removed: a kill between leaves a
	// temporary that Recover removes.
	tmp := snapshotTemp + name + ".rm"
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, tmp)); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(dir, tmp))
}

// Reset replaces what the upper and the index hold with nothing (snapshot ""), which shows
// the lowers alone, or with copies of the snapshot's. The upper root itself stays (its
// inode names the union's root and the layer set in every file handle, so clients stay
// mounted): the new contents are built beside and synced, the old entries moved out of
// the root and the new ones in, one rename each, in phases a journal records, so that
// Recover can take back a reset killed before all the old entries were out, and finish
// one killed after.
func (w Workspace) Reset(snapshot string) error {
	if snapshot != "" {
		if err := ValidSnapshotName(snapshot); err != nil {
			return err
		}
	}
	if err := w.Recover(); err != nil {
		return err
	}
	work, err := w.openWork()
	if err != nil {
		return err
	}
	defer unix.Close(work)
	snap := -1
	if snapshot != "" {
		snaps, err := layer.OpenDir(work, snapshotsDirName)
		if err == nil {
			snap, err = layer.OpenDir(snaps, snapshot)
			unix.Close(snaps)
		}
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", snapshot, syscall.ENOENT)
		}
		defer unix.Close(snap)
	}
	if err := unix.Mkdirat(work, resetDirName, 0o700); err != nil {
		return err
	}
	fresh, err := layer.OpenDir(work, resetDirName)
	if err != nil {
		return err
	}
	defer unix.Close(fresh)
	abandon := func(err error) error {
		_ = layer.RemoveAll(work, resetDirName)
		return err
	}
	_, indexErr := layer.Lstat(work, indexDirName)
	hasIndex := indexErr == nil
	if snap >= 0 {
		tc := copyup.NewTreeCopy()
		err = tc.Copy(snap, "upper", fresh, "upper")
		if err == nil {
			if _, serr := layer.Lstat(snap, "index"); serr == nil {
				err = tc.Copy(snap, "index", fresh, "index")
				if err == nil {
					err = dropUpperRecord(fresh, w.prefix())
				}
			} else if hasIndex {
				err = w.emptyLike(work, indexDirName, fresh, "index")
			}
		}
		err = errors.Join(err, tc.Close())
	} else {
		// Empty, with the root's own attributes, which the root then keeps.
		err = w.emptyLike(unix.AT_FDCWD, w.Upper, fresh, "upper")
		if err == nil && hasIndex {
			err = w.emptyLike(work, indexDirName, fresh, "index")
		}
	}
	if err == nil {
		err = unix.Mkdirat(fresh, "old", 0o700)
	}
	if err != nil {
		return abandon(err)
	}
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	mark := []byte(hex.EncodeToString(token))
	if _, err := layer.Lstat(fresh, "index"); err == nil {
		if err := layer.Setxattr(fresh, "index", w.resetMark(), mark); err != nil {
			return abandon(fmt.Errorf("marking the new index: %w", err))
		}
	}
	if err := writeFileAt(fresh, resetTokenFile, mark); err != nil {
		return abandon(err)
	}
	if err := unix.Syncfs(work); err != nil {
		return abandon(err)
	}
	w.step("prepared")
	upper, err := unix.Open(w.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return abandon(err)
	}
	defer unix.Close(upper)
	if err := w.setPhase(work, fresh, phaseOut); err != nil {
		return abandon(err)
	}
	if err := w.moveAll(upper, fresh, "old", true); err != nil {
		return err // Recover moves them back
	}
	return w.finishReset(work, upper, fresh, mark)
}

// The phases of a reset, in WORK/ovlnfs-reset.new/phase.
const (
	phaseFile = "phase"
	phaseOut  = "out" // the old entries are being moved out of the upper root
	phaseIn   = "in"  // they are all out; the new ones are being moved in
)

func (w Workspace) setPhase(work, fresh int, phase string) error {
	return w.setJournalPhase(work, resetDirName, fresh, phase)
}

// setJournalPhase records phase in the journal directory name (descriptor fresh) inside
// the workdir, durably.
func (w Workspace) setJournalPhase(work int, name string, fresh int, phase string) error {
	tmp := phaseFile + ".tmp"
	_ = unix.Unlinkat(fresh, tmp, 0)
	if err := writeFileAt(fresh, tmp, []byte(phase)); err != nil {
		return err
	}
	f, err := layer.OpenFile(fresh, tmp, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = errors.Join(f.Sync(), f.Close())
	if err == nil {
		err = unix.Renameat(fresh, tmp, fresh, phaseFile)
	}
	if err == nil {
		err = fsyncDir(work, name)
	}
	return err
}

// moveAll renames every entry of the directory from into dirName inside fresh (out), or
// every entry of dirName inside fresh into from (!out), and syncs both directories.
func (w Workspace) moveAll(upper, fresh int, dirName string, out bool) error {
	other, err := layer.OpenDir(fresh, dirName)
	if err != nil {
		return err
	}
	defer unix.Close(other)
	src, dst := upper, other
	if !out {
		src, dst = other, upper
	}
	if _, err := w.moveEntries(src, dst, "half moved "+map[bool]string{true: "out", false: "in"}[out]); err != nil {
		return err
	}
	if err := unix.Fsync(upper); err != nil {
		return err
	}
	return fsyncDir(fresh, dirName)
}

// moveEntries renames every entry of the directory src into dst (the test step half
// halfway); it returns how many it moved. The caller syncs the two directories (an
// O_PATH descriptor syncs nothing).
func (w Workspace) moveEntries(src, dst int, half string) (int, error) {
	names, err := layer.ReadNames(src, "")
	if err != nil {
		return 0, err
	}
	for i, n := range names {
		if i == len(names)/2 {
			w.step(half)
		}
		if err := unix.Renameat(src, n, dst, n); err != nil {
			return i, fmt.Errorf("moving %s: %w", n, err)
		}
		if w.Progress != nil && (i+1)%progressEvery == 0 {
			w.Progress(i+1, len(names))
		}
	}
	if w.Progress != nil {
		w.Progress(len(names), len(names))
	}
	return len(names), nil
}

// dropUpperRecord removes the upper record of a new index: it names the old upper root,
// and the union (as the kernel) records the new one when it first opens the index.
func dropUpperRecord(dir int, prefix string) error {
	err := layer.Removexattr(dir, "index", copyup.Xattrs{Prefix: prefix}.Upper())
	if err == unix.ENODATA {
		return nil
	}
	return err
}

func writeFileAt(dir int, name string, data []byte) error {
	f, err := layer.OpenFile(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// emptyLike makes dstName in dstDir an empty directory with srcName's attributes and
// xattrs, less the marks that describe contents (opaque, impure, redirect), an index's
// upper record (the new index belongs to the new upper) and a reset's.
func (w Workspace) emptyLike(srcDir int, srcName string, dstDir int, dstName string) error {
	st, err := layer.Lstat(srcDir, srcName)
	if err != nil {
		return err
	}
	if err := unix.Mkdirat(dstDir, dstName, 0o700); err != nil {
		return err
	}
	names, err := layer.Listxattr(srcDir, srcName)
	if err != nil {
		return err
	}
	x := copyup.Xattrs{Prefix: w.prefix()}
	for _, n := range names {
		if n == x.Opaque() || n == x.Impure() || n == x.Redirect() || n == x.Upper() || n == w.resetMark() {
			continue
		}
		v, err := layer.Getxattr(srcDir, srcName, n)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return err
		}
		if err := layer.Setxattr(dstDir, dstName, n, v); err != nil {
			return err
		}
	}
	return copyup.SetAttrs(dstDir, dstName, &st)
}

// finishReset completes a reset whose old entries are all out of the upper root: the new
// ones moved in, the root given the snapshot's attributes, the index swapped (once), the
// moves index dropped (the union rebuilds it from the new upper), the old entries
// deleted. Each step can be redone after a kill.
func (w Workspace) finishReset(work, upper, fresh int, mark []byte) error {
	if err := w.setPhase(work, fresh, phaseIn); err != nil {
		return err
	}
	w.step("all out")
	if err := w.moveAll(upper, fresh, "upper", false); err != nil {
		return err
	}
	if st, err := layer.Lstat(fresh, "upper"); err == nil {
		if err := copyup.SetAttrs(upper, ".", &st); err != nil {
			return err
		}
	}
	marked := func(dir int, name string) bool {
		v, err := layer.Getxattr(dir, name, w.resetMark())
		return err == nil && string(v) == string(mark)
	}
	if _, err := layer.Lstat(fresh, "index"); err == nil && marked(fresh, "index") && !marked(work, indexDirName) {
		if _, err := layer.Lstat(work, indexDirName); err == nil {
			if err := unix.Renameat2(work, indexDirName, fresh, "index", unix.RENAME_EXCHANGE); err != nil {
				return fmt.Errorf("swapping in the new index: %w", err)
			}
		} else if err := unix.Renameat(fresh, "index", work, indexDirName); err != nil {
			return fmt.Errorf("placing the new index: %w", err)
		}
	}
	w.step("index swapped")
	if err := layer.RemoveAll(work, movesDir); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if marked(work, indexDirName) {
		if err := layer.Removexattr(work, indexDirName, w.resetMark()); err != nil {
			return err
		}
	}
	if err := unix.Fsync(work); err != nil {
		return err
	}
	w.step("finished")
	// What is left in ovlnfs-reset.new is the old entries and index.
	return layer.RemoveAll(work, resetDirName)
}

// Recover takes back a reset that was interrupted while moving the old entries out of
// the upper root, or finishes one interrupted later, and removes snapshots left half
// taken or half removed.
func (w Workspace) Recover() error {
	return w.recover(false)
}

// recover is Recover; keepStage keeps a flattened commit's stage (the commit about to
// take it runs it).
func (w Workspace) recover(keepStage bool) error {
	work, err := w.openWork()
	if err != nil {
		return err
	}
	defer unix.Close(work)
	if snaps, err := layer.OpenDir(work, snapshotsDirName); err == nil {
		names, _ := layer.ReadNames(snaps, "")
		for _, n := range names {
			if strings.HasPrefix(n, snapshotTemp) {
				_ = layer.RemoveAll(snaps, n)
			}
		}
		unix.Close(snaps)
	}
	if err := w.recoverCommit(work, keepStage); err != nil {
		return err
	}
	fresh, err := layer.OpenDir(work, resetDirName)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fresh)
	phase, _ := os.ReadFile(filepath.Join(w.Work, resetDirName, phaseFile))
	mark, _ := os.ReadFile(filepath.Join(w.Work, resetDirName, resetTokenFile))
	upper, err := unix.Open(w.Upper, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(upper)
	switch string(phase) {
	case phaseIn:
		return w.finishReset(work, upper, fresh, mark) // forward
	case phaseOut:
		// Back: what was moved out goes back in; nothing new was moved in yet.
		if err := w.moveAll(upper, fresh, "old", false); err != nil {
			return fmt.Errorf("taking back an interrupted reset: %w", err)
		}
	}
	return layer.RemoveAll(work, resetDirName)
}
