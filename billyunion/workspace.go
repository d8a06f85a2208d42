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
//	ovlnfs-reset.new              a reset in progress: the new upper and index, then the
//	                              old ones once swapped in (see Reset)
type Workspace struct {
	Upper, Work string
	// XattrPrefix is the overlay's xattr namespace, as Options.XattrPrefix ("" picks as
	// New does); the reset's marks use the same namespace.
	XattrPrefix string
	// killAt, in tests, stops a reset at the named step as a kill would: no cleanup.
	killAt string
}

// errKilled is the panic a test's killAt raises.
var errKilled = errors.New("killed (test)")

func (w Workspace) step(name string) {
	if w.killAt == name {
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

func (w Workspace) prefix() string {
	if w.XattrPrefix != "" {
		return w.XattrPrefix
	}
	if os.Geteuid() == 0 {
		return "trusted.overlay."
	}
	return "user.overlay."
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

// Reset replaces the upper and the index with empty ones (snapshot ""), which shows the
// lowers alone, or with copies of the snapshot's. The new upper root keeps the old one's
// attributes and its origin. It is built beside, synced, and swapped in with one
// renameat2(RENAME_EXCHANGE): the moment the workspace changes. The upper must not be a
// mount point (it could not be swapped).
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
	parent, base := filepath.Split(w.Upper)
	pfd, err := unix.Open(parent, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
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
		err = w.emptyLike(pfd, base, fresh, "upper")
		if err == nil && hasIndex {
			err = w.emptyLike(work, indexDirName, fresh, "index")
		}
	}
	if err != nil {
		_ = layer.RemoveAll(work, resetDirName)
		return err
	}
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	mark := []byte(hex.EncodeToString(token))
	for _, n := range []string{"upper", "index"} {
		if _, err := layer.Lstat(fresh, n); err != nil {
			continue
		}
		if err := layer.Setxattr(fresh, n, w.resetMark(), mark); err != nil {
			_ = layer.RemoveAll(work, resetDirName)
			return fmt.Errorf("marking the new %s: %w", n, err)
		}
	}
	if err := writeFileAt(fresh, resetTokenFile, mark); err != nil {
		_ = layer.RemoveAll(work, resetDirName)
		return err
	}
	if err := unix.Syncfs(work); err != nil {
		_ = layer.RemoveAll(work, resetDirName)
		return err
	}
	w.step("prepared")
	if err := unix.Renameat2(pfd, base, fresh, "upper", unix.RENAME_EXCHANGE); err != nil {
		_ = layer.RemoveAll(work, resetDirName)
		return fmt.Errorf("swapping in the new upper %s (is it a mount point?): %w", w.Upper, err)
	}
	if err := unix.Fsync(pfd); err != nil {
		return err
	}
	w.step("swapped")
	return w.finishReset(work, pfd, base, fresh, mark)
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

// finishReset completes a reset whose upper has been swapped in: the index swapped too
// (once), the moves index dropped (the union rebuilds it from the new upper), the marks
// removed, the old upper and index deleted. Each step can be redone after a kill.
func (w Workspace) finishReset(work, upperParent int, upperBase string, fresh int, mark []byte) error {
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
	w.step("index unmarked")
	if marked(upperParent, upperBase) {
		if err := layer.Removexattr(upperParent, upperBase, w.resetMark()); err != nil {
			return err
		}
	}
	if err := unix.Fsync(upperParent); err != nil {
		return err
	}
	w.step("upper unmarked")
	// What is left in ovlnfs-reset.new is the old upper and index.
	return layer.RemoveAll(work, resetDirName)
}

// Recover finishes a reset that was interrupted after its new upper was swapped in, or
// discards one interrupted before, and removes snapshots left half taken or half removed.
func (w Workspace) Recover() error {
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
	fresh, err := layer.OpenDir(work, resetDirName)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fresh)
	mark, err := os.ReadFile(filepath.Join(w.Work, resetDirName, resetTokenFile))
	parent, base := filepath.Split(w.Upper)
	pfd, perr := unix.Open(parent, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if perr != nil {
		return perr
	}
	defer unix.Close(pfd)
	if err == nil {
		if v, xerr := layer.Getxattr(pfd, base, w.resetMark()); xerr == nil && string(v) == string(mark) {
			return w.finishReset(work, pfd, base, fresh, mark) // swapped in: go forward
		}
	}
	// Not swapped in (or already finished but for the removal): the old workspace stands.
	return layer.RemoveAll(work, resetDirName)
}
