// Package billyunion presents a stack of directory layers as one
// billy.Filesystem with Linux overlayfs semantics and on-disk format: N
// read-only lower layers (top-down, as in lowerdir=L1:L2), one writable
// upper layer and a work directory on the upper's filesystem. A layer
// written by this package can be mounted by the kernel overlay and the other
// way round.
//
// Files, one concern each (after the kernel's fs/overlayfs split):
//
//	fs.go        Options, New, Close, the billy.Filesystem surface
//	caller.go    Caller (As): the union as one client user, who owns what it creates
//	names.go     path and name validation
//	namei.go     lookup: resolving paths to per-layer parts
//	redirect.go  the redirect_dir feature: the redirect xattr's format and
//	             modes, following redirects in a lookup, the redirect a
//	             renamed directory gets
//	dircache.go  resolved directories and identities kept by path, exact
//	             through fanotify: each event drops what depends on the entry
//	             it names
//	fanotify.go  reading fanotify's records: the directory handle and name an
//	             event names
//	readdir.go   merged directory listings, through package readdircache:
//	             candidate names and one lookup per name, with no lock; a
//	             build spoiled by changes is mended by looking up again the
//	             names they touched
//	dir.go       locking a change's target; create, mkdir, symlink, mknod, unlink, rmdir
//	rename.go    locking two names; rename, link
//	copy_up.go   driving the copyup package (parents first, one at a time)
//	index.go     the index feature (index=on): WORK/index entries of lower
//	             files with several links, the nlink xattr, the origin and
//	             upper records checked at start, index cleanup
//	attr.go      chmod, chown, utimes, truncate, xattrs
//	diff.go      Diff: what an upper layer changes in its lowers, by path (A, C, D),
//	             from the union over the upper against the lowers' union
//	check.go     Check: a layer set's consistency (work leftovers, stale index
//	             entries, dangling origins and redirects, useless whiteouts), and
//	             the repairs that lose no data
//	commit.go    Workspace.Commit: the upper baked into a new lower layer by moving
//	             its entries (identities kept), the stack of committed layers, a
//	             commit into another workspace's stack, crash-safe
//	flatten.go   a flattened commit: the whole merged tree as one plain layer
//	             replacing the lowers (StageFlatten, the stage's merge)
//	workspace.go Workspace: snapshots of an upper and its index, and resetting a
//	             closed workspace to its lowers or a snapshot, crash-safe (one
//	             RENAME_EXCHANGE, then a redoable finish; Recover)
//	file.go      open files, switching to the upper copy after a copy-up
//	stem.go      the identity rule: the layer object a union object stems from
//	inode.go     inode numbers from stems (layer filesystem index in high bits), FileInfo
//	export.go    ObjectIDs from stems and their binary forms; Identify, FindDir,
//	             FindConnected, LayerSetID
//	moves.go     the moves index (Work/ovlnfs-index): where renamed and linked
//	             non-directories, and directories renamed with a redirect,
//	             went; Locations, FindMoved
//	unicode.go   unicode=insensitive: respelling client paths to the
//	             canonically equivalent names that exist
//	locks.go     per-directory locks
//	quota.go     quotas per upper (Options.QuotaBytes, QuotaInodes): the
//	             union's own count of the upper's bytes and objects, made
//	             at start and kept by every change; EDQUOT before anything
//	             past a limit is written; Quota for FSSTAT
//	shared.go    Shared: the lower work unions over the same lowers share (the
//	             lowers' descriptors, listings of lower-only directories, the
//	             origin-decode and handle path caches, lower directory
//	             descriptors of the directory caches)
//	lowercache.go the Shared's lower directory cache: a workspace's lower-pure
//	             directories resolved once for all workspaces, by a lower-only
//	             union, seen through views with the workspace's layer indices
//
// Package layer (billyunion/layer) holds the descriptor-relative access to
// one layer every file above goes through.
//
// The union never follows a symlink stored in a layer: every path is
// walked one component at a time with descriptors (package layer), Stat
// behaves as Lstat, and symlinks are returned to clients as symlinks.
// Errors are syscall.Errno values.
//
// # Lock order
//
// Directory locks come first. Every other lock is a leaf: taken alone or
// under directory locks, never the other way round, and held for a map
// update or the I/O named below, with nothing locked under it but the
// internal mutex of a golang-lru cache.
//
// Directory locks (locks.go) are per-directory mutexes keyed by the inode
// number of the directory's upper part, so a rename of an ancestor neither
// loses nor confuses one. They are always taken all at once, in ascending
// key order (lockTable.lock), and nothing takes a directory lock while
// holding one. Two callers take them:
//
//   - a namespace change (dir.go, rename.go) locks the upper directories
//     it changes, and the directory it removes or replaces;
//   - copy-up (copy_up.go) locks the destination parent alone, for the
//     final rename of a finished copy.
//
// A listing (readdir.go) takes none, however often changes spoil its
// builds, so a create never waits for a listing: a change tells the listing
// cache which names it touches (BeginChange, under the lock), and a spoiled
// build looks only those up again, lock-free, once the change has ended.
//
// A namespace change does everything that can take long before it locks:
//
//  1. validate against a lock-free lookup (no copy-up for a failing call);
//  2. copy up what is needed, holding nothing (copyup builds the copy in
//     the work directory; only its final rename takes the destination
//     parent's lock, alone);
//  3. lock the directory set, look up again and re-validate under the
//     locks, retrying from 1 when the tree moved underneath;
//  4. make the change with single renames out of the work directory.
//
// Under directory locks the I/O is: lookups and the re-validation (stat,
// getxattr; for rmdir and a rename over a directory, listing that
// directory to check it is empty, with visibleNames, not the listing
// cache), building a new object in the work
// directory (create, mkdir, symlink, mknod: one syscall each, plus owner,
// mode and opaque mark), the renames, links and whiteouts of the change,
// impure and opaque marks, a renamed directory's redirect (its own and its
// ancestors' read from the upper, one xattr each, then its new one set),
// the index's I/O (index.go: a copy-up through the index links the finished
// copy into WORK/index and then places it, or links the index entry to the
// name, and sets the nlink xattr, under the destination parent's lock; a
// removal reads the removed inode's origin and nlink xattrs and removes its
// index entry when the union's count reaches zero; a link or removal of an
// indexed inode rewrites a count left relative to the lower inode's, one
// getxattr and at most one setxattr),
// the ObjectIDs the moves index records
// (name_to_handle_at, open_by_handle_at for an origin not yet decoded), the
// moves record itself, and removing, from the work directory, an upper
// directory taken out of the tree with the whiteouts it held (rmdir, and
// a rename over a directory). No lock is held across copy-up data copying;
// lookups, reads and writes of open files, attribute changes (attr.go: they
// change no names) and listings (building and mending) take no directory
// lock.
//
// The leaves:
//
//   - lockTable.mu (locks.go) guards the table of directory locks; it is
//     released before waiting for a directory lock.
//   - The listing cache's mutex (readdircache's Cache.mu) is taken under
//     directory locks by a change's BeginChange, EndChange and
//     Invalidate, and with or without them by Forget and ForgetAll, each
//     for a few map updates. It is never held while a listing is built or
//     mended. Mending a listing waits, holding nothing, for the change in
//     progress in that directory to end (its EndChange); a change never
//     waits for a listing, and never lists through the cache a directory
//     it is changing.
//   - The moves index's stripes (moves.go) are taken under the directory
//     locks of a rename, link or unlink, around the read-merge-write
//     (or removal) of one record file in Work/ovlnfs-index. Reading the
//     index (Locations) takes none: records are replaced by rename.
//   - The index's stripes (index.go indexLocks) are taken under the
//     directory locks of a copy-up through the index, a link, an unlink or
//     a rename over a name, one at a time, around reading and rewriting one
//     index entry's link count (its nlink xattr, a link, the entry's
//     removal): the kernel's overlay inode lock in ovl_nlink_start.
//   - The origin cache's own mutex (inodes.origins, golang-lru), for one
//     map operation, with or without directory locks.
//   - dirCache.mu (dircache.go), around non-blocking reads of the fanotify
//     queue, applying their events (map operations) and one lookup or store,
//     with or without directory locks; no descriptor is opened under it
//     (evicted ones are closed), and the file handles a store records are
//     read before it is taken.
//   - Shared.mu (shared.go), for a map operation: a union attaching,
//     detaching or finding its shared listing cache or lower-only union
//     (lowercache.go; one is made, and a spare one closed, without it). The shared listing
//     caches are readdircache Caches, whose mutex is a leaf as above; no
//     union changes a shared (lower-only) directory, so their BeginChange
//     is never called.
//   - sharedFDs.mu (shared.go), under dirCache.mu (a store adopting the
//     shared descriptors of a cached directory's lower parts, an eviction
//     releasing them) or alone, for map operations and closing a
//     descriptor.
//   - copyup's Copier.mu registers in-flight copy-ups; it is never held
//     with a directory lock, nor across I/O. A copy-up of an object that is
//     being copied up already waits for that one, holding no lock.
//   - file.mu (file.go) serialises one open file's switch to the upper
//     copy after a copy-up: a lock-free lookup and an open happen under it.
//     It is never held together with a directory lock.
//   - The quota's inode locks (quota.writing, a lockTable of its own), with a
//     quota set only: the lock of one upper inode is taken, alone (no
//     directory lock, not file.mu; the table's mu, a leaf, only for the map), around one
//     write or truncate of an upper file and the fstat its charge is
//     computed from, so that two writes extending one inode are counted
//     once each; the kernel holds the inode's lock across a buffered write
//     the same way. The counters themselves are atomics (a compare-and-swap
//     refuses a charge past the limit), taken under directory locks or none.
package billyunion
