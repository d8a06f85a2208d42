package nfs3

import (
	"slices"
	"syscall"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Permission checks for the principal a call acts for. The Linux client leaves the checks
// of directory changes to the server (it asks ACCESS before reading and writing files, not
// before creating or removing names), so the server makes them, as the kernel would for a
// local process with the caller's ids: EACCES without write and search permission on the
// directory, EPERM for a sticky directory's entry that is neither the caller's nor in the
// caller's directory, and the owner rules of chmod, chown and utimes. READ and WRITE are
// checked too, with knfsd's exceptions (mayRead, mayWrite), since a client need not ask
// ACCESS first; and as the server writes with its own privileges, a WRITE drops the
// setuid and setgid bits the kernel drops for an unprivileged writer (privilegesDropped).
// A read-only export (or grant) answers ROFS to a change before any of these checks, as a
// read-only mount and knfsd do: the client learns why the change cannot be, not whose
// permissions would also have stopped it.
// The principal is the caller as the export's client rules serve it (servedAs): squashed
// (root_squash by default; uid 0 stays root only with no_root_squash), and a call without
// AUTH_UNIX (AUTH_NONE) is the anonymous user, checked like any other.

// ACCESS3 bits (RFC 1813 section 3.3.4).
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// principal is whom a call acts for: the identity its credential claims.
type principal struct{ oncrpc.Credential }

// rights are the read, write and execute permissions p has on an object with stat st.
func (p principal) rights(st *syscall.Stat_t) (r, w, x bool) {
	if p.Unix && p.UID == 0 {
		return true, true, isDir(st) || st.Mode&0o111 != 0
	}
	shift := 0 // other
	switch {
	case p.UID == st.Uid:
		shift = 6
	case p.inGroup(st.Gid):
		shift = 3
	}
	bits := st.Mode >> shift & 0o7
	return bits&4 != 0, bits&2 != 0, bits&1 != 0
}

func (p principal) inGroup(gid uint32) bool { return p.GID == gid || slices.Contains(p.Groups, gid) }

// checked reports whether the server checks this principal's permissions: AUTH_UNIX
// callers other than root.
func (p principal) checked() bool { return p.Unix && p.UID != 0 }

// mayChangeDir: p may add or remove names in the directory dir.
func (p principal) mayChangeDir(dir *syscall.Stat_t) error {
	if !p.checked() {
		return nil
	}
	if _, w, x := p.rights(dir); !w || !x {
		return syscall.EACCES
	}
	return nil
}

// mayRemove: p may remove or rename away entry (nil: there is none) from dir.
func (p principal) mayRemove(dir, entry *syscall.Stat_t) error {
	if err := p.mayChangeDir(dir); err != nil || entry == nil || !p.checked() {
		return err
	}
	if dir.Mode&syscall.S_ISVTX != 0 && p.UID != dir.Uid && p.UID != entry.Uid {
		return syscall.EPERM
	}
	return nil
}

// maySetattr: p may make the changes of s to an object with stat st.
func (p principal) maySetattr(st *syscall.Stat_t, s *sattr3) error {
	if !p.checked() {
		return nil
	}
	owner := p.UID == st.Uid
	_, w, _ := p.rights(st)
	switch {
	// As the kernel's chown_ok and chgrp_ok: only root gives files away, and only the
	// owner may name the owner or group at all, even unchanged (chown(f, -1, its gid) by
	// another user is EPERM, not a no-op).
	case s.uid != nil && (!owner || *s.uid != st.Uid):
		return syscall.EPERM
	case s.gid != nil && (!owner || *s.gid != st.Gid && !p.inGroup(*s.gid)):
		return syscall.EPERM
	case s.mode != nil && !owner:
		return syscall.EPERM
	case s.clientTime && !owner:
		return syscall.EPERM
	case (s.atime != nil || s.mtime != nil) && !owner && !w:
		return syscall.EACCES
	case s.size != nil && !owner && !w:
		// The owner may truncate without write permission: over NFS an ftruncate of a
		// file opened for writing before a chmod looks the same as a truncate.
		return syscall.EACCES
	}
	return nil
}

// mayRead: p may READ the regular file with stat st. As knfsd checks READ: the owner
// always may (over NFS a read through a descriptor opened before a chmod looks the same
// as any read), and so may whoever may execute it (a client reads a binary to run it).
func (p principal) mayRead(st *syscall.Stat_t) error {
	if !p.checked() || p.UID == st.Uid {
		return nil
	}
	if r, _, x := p.rights(st); !r && !x {
		return syscall.EACCES
	}
	return nil
}

// mayWrite: p may WRITE the regular file with stat st: the owner always (as for READ),
// others with write permission.
func (p principal) mayWrite(st *syscall.Stat_t) error {
	if !p.checked() || p.UID == st.Uid {
		return nil
	}
	if _, w, _ := p.rights(st); !w {
		return syscall.EACCES
	}
	return nil
}

// privilegesDropped is the mode a WRITE by p leaves on a regular file of stat st, and
// whether it differs: the server writes with its own privileges, so it does for the caller
// what the kernel does for a writer without CAP_FSETID (file_remove_privs): the setuid bit
// goes, and the setgid bit where group execute is set or the writer is not in the file's
// group (without group execute it is a locking mark, kept for its group).
func (p principal) privilegesDropped(st *syscall.Stat_t) (uint32, bool) {
	if !p.Unix || p.UID == 0 || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0, false
	}
	mode := st.Mode & 0o7777
	kept := mode &^ syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&0o010 != 0 || !p.inGroup(st.Gid)) {
		kept &^= syscall.S_ISGID
	}
	return kept, kept != mode
}

// accessFor answers ACCESS: which of the asked rights p has on an object with stat st,
// by the object's mode bits as the kernel checks them (root may read and write anything
// and execute what anyone may execute; others get the owner's, the group's or the other
// bits, the first class they fall in). A read-only export grants no change.
func accessFor(p principal, st *syscall.Stat_t, asked uint32, readOnly bool) uint32 {
	r, w, x := p.rights(st)
	if readOnly {
		w = false
	}
	var granted uint32
	if r {
		granted |= access3Read
	}
	if w {
		granted |= access3Modify | access3Extend
		if isDir(st) {
			granted |= access3Delete
		}
	}
	if x {
		if isDir(st) {
			granted |= access3Lookup
		} else {
			granted |= access3Execute
		}
	}
	return granted & asked
}

// servedAs is the principal a call is served as under grant: its credential squashed
// (clients.Grant.Map), and a call without one (AUTH_NONE) served as the anonymous user,
// checked like any other, as knfsd serves it.
func servedAs(grant clients.Grant, cred oncrpc.Credential) principal {
	id := grant.Map(clients.Identity{Anonymous: !cred.Unix, UID: cred.UID, GID: cred.GID, Groups: cred.Groups})
	return principal{oncrpc.Credential{Unix: true, UID: id.UID, GID: id.GID, Groups: id.Groups}}
}
