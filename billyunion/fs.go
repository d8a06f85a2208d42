package billyunion

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/helper/chroot"
	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// Options configures a union.
type Options struct {
	// Lowers are the read-only layers, topmost first (lowerdir=L1:L2).
	Lowers []string
	// Upper is the writable layer; empty serves a read-only union.
	Upper string
	// Work is the work directory, on the upper's filesystem; required
	// with Upper. The union owns Work/work and empties it at start, so the
	// caller must make sure no other process uses Work.
	Work string
	// XattrPrefix is the overlay's attribute namespace: "trusted.overlay."
	// (the kernel's default) or "user.overlay." (the kernel's userxattr
	// mode). Empty picks the first when running as root, else the second.
	XattrPrefix string
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// DirCacheEntries bounds the merged directory listings kept (and as
	// many recent snapshots for clients paging through them); 0 means
	// DefaultDirCacheEntries.
	DirCacheEntries int
	// RedirectDir is the kernel's redirect_dir option (redirect.go): "on"
	// (renaming a directory with lower parts records a redirect, and
	// redirects are followed), "follow" (followed, not made: such renames
	// answer EXDEV), "nofollow" (neither: a lookup that meets a redirect
	// answers EPERM), "off" (as the kernel built with
	// redirect_always_follow=y: follow). Empty means "on", or "nofollow"
	// with the user.overlay. prefix, where the kernel (userxattr) allows
	// nothing else.
	RedirectDir string
	// Unicode is how names are compared (unicode.go): UnicodeExact (as
	// bytes, the kernel's way; the default when empty) or
	// UnicodeInsensitive (canonically equivalent spellings, NFC and NFD,
	// find the same entry, as on APFS).
	Unicode string
	// Index is the kernel's index option (index.go): "on" (the default
	// when empty) keeps the names of a lower file with several links
	// together across copy-up, in WORK/index; "off" copies each name up
	// on its own, as the kernel without index does. With an upper layer,
	// "on" refuses to start when the upper root's origin or the index
	// directory's upper record does not match the layers.
	Index string
	// CommittedLowers is how many of the topmost lower layers were committed from the
	// upper (Workspace.Commit): LayerSetID leaves them out, so that the union's identity,
	// and every file handle that carries it, outlives a commit.
	CommittedLowers int
	// FormerLowers are lowers a flattened commit took out of the stack (Stack.Lowers): not
	// searched, but opened so that the identities made from their objects stay what they
	// were: their filesystems keep their indexes and decode origin records, and
	// LayerSetID counts them where they stood.
	FormerLowers []string
	// FormerCommitted is how many of FormerLowers (the first) were committed layers, which
	// LayerSetID leaves out as it leaves out CommittedLowers.
	FormerCommitted int
	// Shared, when set, is the lower work this union shares with the other unions
	// over the same lowers (shared.go): their descriptors, the listings of
	// lower-only directories, the origin-decode and handle path caches. Lowers
	// must then be empty or equal to the Shared's, and XattrPrefix resolve to
	// the Shared's.
	Shared *Shared
	// QuotaBytes and QuotaInodes limit the upper layer (quota.go, docs/quotas.md): the
	// apparent size of its regular files and its number of objects, whiteouts included.
	// A change that would pass a limit answers EDQUOT and changes nothing. 0 is no limit.
	QuotaBytes, QuotaInodes uint64
}

// DefaultDirCacheEntries is the listing cache size when none is configured.
const DefaultDirCacheEntries = 1024

// FS is the union filesystem. It implements billy.Filesystem, billy.Change,
// billy.Capable and go-nfs's UnixChange (Mknod, Mkfifo, Socket, Link)
// without importing go-nfs.
type FS struct {
	log      *slog.Logger
	layers   []*layer.Layer // top-down; layers[0] is the upper when hasUpper
	hasUpper bool
	work     *copyup.WorkDir
	copier   *copyup.Copier
	x        copyup.Xattrs
	locks    *lockTable
	ino      *inodes
	// rootParts are the union root's parts as stat'ed when fs was made: the layers' root
	// descriptors, whose device, inode and type never change (their other attributes
	// do). For identifying names at the root (parentToIdentify); set in New.
	rootParts []part
	// copyUps counts completed copy-ups; files opened read-only on a lower
	// layer compare it to notice that their object moved up.
	copyUps atomic.Uint64
	// copyUpBytes and copyUpNanos add up the copy-ups' regular-file bytes and time
	// (CopyUpStats).
	copyUpBytes atomic.Uint64
	copyUpNanos atomic.Int64
	// owner owns the objects the union creates unless a Caller creates
	// them: the server process itself.
	owner owner
	// originUUIDs: origin records carry the lower filesystem's uuid (the
	// kernel's uuid=on, chosen for a fresh upper); else zeros (uuid=null).
	originUUIDs bool
	// layerUUID holds each layer's filesystem uuid.
	layerUUID [][16]byte
	// listings caches merged directory listings (readdircache).
	listings *readdircache.Cache[os.FileInfo]
	// shared is the lower work shared with other unions (shared.go), or nil;
	// sharedListings is its listing cache for lower-only directories of unions
	// like this one.
	shared *Shared
	// committed: Options.CommittedLowers.
	committed int
	// former: Options.FormerLowers, opened (roots only); formerCommitted:
	// Options.FormerCommitted.
	former          []*layer.Layer
	formerCommitted int
	sharedListings  *readdircache.Cache[os.FileInfo]
	// rootPaths holds each layer root's path as the kernel reports it
	// (export.go matches reconnected handles against them).
	rootPaths []string
	// moves records where renamed and linked objects went (moves.go); nil
	// when read-only.
	moves *moves
	// dirs caches resolved directories (dircache.go); off without fanotify.
	dirs *dirCache
	// lower is the Shared's lower-only union whose directory cache resolves this
	// union's lower-pure directories (lowercache.go); nil without a Shared or a cache.
	lower *FS
	// redirectCreate: renaming a directory with lower parts records a
	// redirect (redirect_dir=on); redirectFollow: lookups follow redirects
	// (on, follow, off). Both fixed at New.
	redirectCreate, redirectFollow bool
	// unicodeInsensitive: client paths are respelt to the canonically
	// equivalent existing names (Options.Unicode, unicode.go).
	unicodeInsensitive bool
	// indexFD is WORK/index (index.go), -1 with index=off or read-only.
	indexFD int
	indexMu indexLocks
	// redirectWarned is when a malformed redirect was last logged (unix ns).
	redirectWarned atomic.Int64
	// quota counts the upper against Options.QuotaBytes and QuotaInodes; nil without
	// a quota or with project, and then nothing is counted. project is the quota the
	// upper's filesystem enforces (projquota.go), or nil.
	quota   *quota
	project *projectQuota
	// beforeOpen, when set (tests only), runs in OpenFile between the
	// lookup and the open, to force a change into that window.
	beforeOpen func(p string)
}

var (
	_ billy.Filesystem = (*FS)(nil)
	_ billy.Change     = (*FS)(nil)
	_ billy.Capable    = (*FS)(nil)
)

// New opens the layers and returns the union. It changes nothing on disk
// except creating Work/work and emptying it.
func New(opts Options) (*FS, error) {
	if opts.Shared != nil && len(opts.Lowers) == 0 {
		opts.Lowers = opts.Shared.lowers
	}
	if len(opts.Lowers) == 0 {
		return nil, fmt.Errorf("billyunion: at least one lower layer is required: %w", syscall.EINVAL)
	}
	if opts.CommittedLowers < 0 || opts.CommittedLowers > len(opts.Lowers) {
		return nil, fmt.Errorf("billyunion: %d committed lowers of %d: %w", opts.CommittedLowers, len(opts.Lowers), syscall.EINVAL)
	}
	if opts.Upper == "" && (opts.QuotaBytes != 0 || opts.QuotaInodes != 0) {
		return nil, fmt.Errorf("billyunion: a quota needs an upper layer: %w", syscall.EINVAL)
	}
	if opts.Upper != "" && opts.Work == "" {
		return nil, fmt.Errorf("billyunion: an upper layer needs a work directory: %w", syscall.EINVAL)
	}
	fs := &FS{log: opts.Logger, locks: newLockTable(), owner: owner{uid: os.Geteuid(), gid: os.Getegid()}, indexFD: -1,
		committed: opts.CommittedLowers}
	if fs.log == nil {
		fs.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if fs.x.Prefix, err = xattrPrefix(opts.XattrPrefix); err != nil {
		return nil, err
	}
	mode, err := redirectMode(opts.RedirectDir, fs.x.Prefix)
	if err != nil {
		return nil, err
	}
	fs.redirectCreate, fs.redirectFollow = mode == "on", mode != "nofollow"
	if fs.unicodeInsensitive, err = unicodeMode(opts.Unicode); err != nil {
		return nil, err
	}
	indexOn, err := indexMode(opts.Index)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			fs.Close()
		}
	}()
	dirs := opts.Lowers
	if opts.Upper != "" {
		dirs = []string{opts.Upper}
		if opts.Shared == nil {
			dirs = append(dirs, opts.Lowers...)
		}
		fs.hasUpper = true
	} else if opts.Shared != nil {
		dirs = nil
	}
	for _, p := range dirs {
		l, err := layer.Open(p)
		if err != nil {
			return nil, fmt.Errorf("billyunion: %w", err)
		}
		fs.layers = append(fs.layers, l)
	}
	if opts.Shared != nil {
		lowers, err := opts.Shared.attach(&opts, fs.x.Prefix)
		if err != nil {
			return nil, err
		}
		fs.shared = opts.Shared
		fs.layers = append(fs.layers, lowers...)
	}
	if fs.hasUpper {
		wl, err := layer.Open(opts.Work)
		if err != nil {
			return nil, fmt.Errorf("billyunion: work directory: %w", err)
		}
		wdev := wl.Dev
		wl.Close()
		if wdev != fs.layers[0].Dev {
			return nil, fmt.Errorf("billyunion: work directory %s is not on the upper layer's filesystem: %w", opts.Work, syscall.EXDEV)
		}
		if fs.work, err = copyup.OpenWorkDir(opts.Work); err != nil {
			return nil, fmt.Errorf("billyunion: %w", err)
		}
		fs.copier = copyup.NewCopier(fs.work, fs.x, fs.log)
	}
	fs.layerUUID = make([][16]byte, len(fs.layers))
	for i, l := range fs.layers {
		fs.layerUUID[i] = layer.FilesystemUUID(l.Root)
	}
	if fs.hasUpper {
		if fs.originUUIDs, err = initUpperUUID(fs.layers[0].Root, fs.x); err != nil {
			return nil, fmt.Errorf("billyunion: upper %s: %w", opts.Upper, err)
		}
	}
	if opts.FormerCommitted < 0 || opts.FormerCommitted > len(opts.FormerLowers) {
		return nil, fmt.Errorf("billyunion: %d committed former lowers of %d: %w", opts.FormerCommitted, len(opts.FormerLowers), syscall.EINVAL)
	}
	fs.formerCommitted = opts.FormerCommitted
	for _, p := range opts.FormerLowers {
		l, err := layer.Open(p)
		if err != nil {
			return nil, fmt.Errorf("billyunion: former lower: %w", err)
		}
		fs.former = append(fs.former, l)
	}
	fs.ino = newInodes(append(slices.Clone(fs.layers), fs.former...), fs.hasUpper)
	root, err := fs.rootDir()
	if err != nil {
		return nil, fmt.Errorf("billyunion: stat of a layer root: %w", err)
	}
	fs.rootParts = root.parts
	if fs.shared != nil {
		fs.ino.origins = fs.shared.origins
	}
	if fs.hasUpper && indexOn {
		if err := fs.openIndex(opts.Work); err != nil {
			return nil, fmt.Errorf("billyunion: index=on: %w", err)
		}
	}
	size := opts.DirCacheEntries
	if size == 0 {
		size = DefaultDirCacheEntries
	}
	if fs.listings, err = readdircache.New[os.FileInfo](size); err != nil {
		return nil, fmt.Errorf("billyunion: %w", err)
	}
	if fs.shared != nil {
		if fs.sharedListings, err = fs.shared.listingsFor(fs); err != nil {
			return nil, fmt.Errorf("billyunion: %w", err)
		}
	}
	for _, l := range fs.layers {
		p, err := os.Readlink(layer.ProcPath(l.Root))
		if err != nil {
			return nil, fmt.Errorf("billyunion: %w", err)
		}
		fs.rootPaths = append(fs.rootPaths, p)
	}
	if err := fs.checkHandles(); err != nil {
		return nil, err
	}
	fs.dirs = newDirCache(fs.rootPaths, fs.layers, cachePerEvent)
	if fs.shared != nil && fs.dirs.on() {
		fs.lower = fs.shared.lowerUnion(fs)
		if err := fs.checkLowerUnion(); err != nil {
			return nil, err
		}
	}
	if fs.hasUpper {
		wl, err := layer.Open(opts.Work)
		if err != nil {
			return nil, fmt.Errorf("billyunion: work directory: %w", err)
		}
		fs.moves, err = openMoves(wl.Root, fs)
		wl.Close()
		if err != nil {
			return nil, fmt.Errorf("billyunion: work directory %s: %w", opts.Work, err)
		}
	}
	if fs.hasUpper {
		index := ""
		if fs.indexFD >= 0 {
			index = path.Join(opts.Work, "index")
		}
		if err := fs.openQuota(opts, index); err != nil {
			return nil, err
		}
	}
	ok = true
	return fs, nil
}

// initUpperUUID follows the kernel's uuid=auto: an upper root carrying a
// uuid xattr keeps it; a fresh upper (no uuid, not yet impure) gets a new
// random one, and then origins record the lower filesystem's uuid; an upper
// used before without one stays without (origins carry zeros).
func initUpperUUID(root int, x copyup.Xattrs) (bool, error) {
	v, err := layer.Getxattr(root, "", x.UUID())
	if err == nil && len(v) == 16 {
		return true, nil
	}
	if err != nil && err != unix.ENODATA {
		return false, err
	}
	impure, err := layer.HasXattr(root, "", x.Impure())
	if err != nil || impure {
		return false, err
	}
	var uuid [16]byte
	if _, err := crand.Read(uuid[:]); err != nil {
		return false, err
	}
	uuid[6] = uuid[6]&0x0f | 0x40 // version 4
	uuid[8] = uuid[8]&0x3f | 0x80 // RFC 4122 variant
	return true, layer.Setxattr(root, "", x.UUID(), uuid[:])
}

// Close releases the layers' descriptors.
func (fs *FS) Close() error {
	fs.dirs.close()
	own := fs.layers
	if fs.shared != nil && len(own) > 0 {
		// The lowers are the Shared's.
		own = own[:len(own)-len(fs.shared.lowers)]
		fs.shared.detach()
	}
	for _, l := range own {
		l.Close()
	}
	fs.layers = nil
	for _, l := range fs.former {
		l.Close()
	}
	fs.former = nil
	if fs.indexFD >= 0 {
		unix.Close(fs.indexFD)
		fs.indexFD = -1
	}
	fs.moves.close()
	fs.moves = nil
	if fs.work != nil {
		fs.work.Close()
		fs.work = nil
	}
	return nil
}

// ReadOnly reports whether the union has no upper layer.
func (fs *FS) ReadOnly() bool { return !fs.hasUpper }

// Capabilities tells go-nfs whether to answer writes with ROFS.
func (fs *FS) Capabilities() billy.Capability {
	c := billy.ReadCapability | billy.SeekCapability | billy.ReadAndWriteCapability
	if fs.hasUpper {
		c |= billy.WriteCapability | billy.TruncateCapability | billy.LockCapability
	}
	return c
}

// Join joins path elements with "/".
func (fs *FS) Join(elem ...string) string { return path.Join(elem...) }

// Root is the union's root path.
func (fs *FS) Root() string { return "/" }

// Chroot returns a view of the union below p.
func (fs *FS) Chroot(p string) (billy.Filesystem, error) {
	fi, err := fs.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, syscall.ENOTDIR
	}
	return chroot.New(fs, p), nil
}

// Lstat describes the object at p without following a symlink.
func (fs *FS) Lstat(p string) (os.FileInfo, error) {
	p = fs.respell(p)
	d, e, err := fs.lookup(p)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return fs.newFileInfo(d, &e), nil
}

// Stat is Lstat: the union never follows symlinks stored in layers.
func (fs *FS) Stat(p string) (os.FileInfo, error) { return fs.Lstat(p) }

// Readlink returns a symlink's target as stored; EINVAL if p is no symlink.
func (fs *FS) Readlink(p string) (string, error) {
	p = fs.respell(p)
	d, e, err := fs.lookup(p)
	if err != nil {
		return "", err
	}
	defer d.close()
	if d == nil || !e.isSymlink() {
		return "", syscall.EINVAL
	}
	t, err := layer.Readlink(d.partFor(e.top().li).fd, e.name)
	return t, errnoOf(err)
}

// Create creates or truncates the file at p, like os.Create.
func (fs *FS) Create(p string) (billy.File, error) {
	return fs.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Open opens the file at p for reading.
func (fs *FS) Open(p string) (billy.File, error) { return fs.OpenFile(p, os.O_RDONLY, 0) }

// TempFile creates a new file with a unique name in dir.
func (fs *FS) TempFile(dir, prefix string) (billy.File, error) {
	for i := 0; i < 100; i++ {
		name := prefix + strconv.FormatUint(rand.Uint64(), 36)
		f, err := fs.OpenFile(fs.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, syscall.EEXIST) {
			return f, err
		}
	}
	return nil, syscall.EEXIST
}

// errnoOf converts any error to a syscall.Errno (nil stays nil).
func errnoOf(err error) error {
	if err == nil {
		return nil
	}
	return layer.Errno(err)
}
