package main

import (
	"slices"
	"syscall"
)

// Who a call comes from. NFSv3 clients send an AUTH_UNIX (AUTH_SYS, RFC 5531 appendix A)
// credential: the calling process's uid, gid and supplementary groups. The front end reads
// it from every call, so that objects a client creates belong to the user who created them
// (when the server runs as root and so may give them away), and ACCESS answers for that
// user rather than for the server. As with knfsd and no_root_squash, uid 0 on a client is
// root here: the export is a developer's own writable layer over shared read-only ones.
// A call without AUTH_UNIX (AUTH_NONE) creates as the server process and is checked as
// "other" by ACCESS.

// RPC authentication numbers (RFC 5531 sections 8.2 and 9).
const (
	authNone = 0
	authUnix = 1

	rejectAuthError = 1
	authBadCred     = 1

	// maxAuthBody is the protocol's bound on an opaque_auth body, maxAuthGroups and
	// maxMachineName those on AUTH_UNIX's fields.
	maxAuthBody    = 400
	maxAuthGroups  = 16
	maxMachineName = 255

	// nobody is the uid and gid ACCESS checks an AUTH_NONE call as.
	nobody = 65534
)

// caller is the identity a call's credential claims.
type caller struct {
	unix     bool // an AUTH_UNIX credential was sent; else the fields are nobody's
	uid, gid uint32
	groups   []uint32
}

// parseCredential reads a call's credential (flavor and body). bad reports an AUTH_UNIX
// body that does not decode: such a call is refused with AUTH_BADCRED, not served as
// someone else.
func parseCredential(flavor uint32, body []byte) (c caller, bad bool) {
	c = caller{uid: nobody, gid: nobody}
	if flavor != authUnix {
		return c, false
	}
	if len(body) > maxAuthBody {
		return c, true
	}
	r := xdrReader{buf: body}
	_ = r.uint32() // stamp
	if machine := r.opaque(); len(machine) > maxMachineName {
		return c, true
	}
	uid, gid := r.uint32(), r.uint32()
	n := r.uint32()
	if r.err != nil || n > maxAuthGroups {
		return c, true
	}
	groups := make([]uint32, n)
	for i := range groups {
		groups[i] = r.uint32()
	}
	if r.err != nil || r.pos != len(body) {
		return c, true
	}
	return caller{unix: true, uid: uid, gid: gid, groups: groups}, false
}

// authErrorReply refuses a call whose credential is malformed (MSG_DENIED, AUTH_ERROR,
// AUTH_BADCRED).
func authErrorReply(xid uint32) []byte {
	w := &xdrWriter{}
	w.uint32(xid)
	w.uint32(rpcReply)
	w.uint32(msgDenied)
	w.uint32(rejectAuthError)
	w.uint32(authBadCred)
	return w.buf
}

// ACCESS3 bits (RFC 1813 section 3.3.4).
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// rights are the read, write and execute permissions c has on an object with stat st.
func (c caller) rights(st *syscall.Stat_t) (r, w, x bool) {
	if c.unix && c.uid == 0 {
		return true, true, st.Mode&syscall.S_IFMT == syscall.S_IFDIR || st.Mode&0o111 != 0
	}
	shift := 0 // other
	switch {
	case c.uid == st.Uid:
		shift = 6
	case c.inGroup(st.Gid):
		shift = 3
	}
	bits := st.Mode >> shift & 0o7
	return bits&4 != 0, bits&2 != 0, bits&1 != 0
}

func (c caller) inGroup(gid uint32) bool { return c.gid == gid || slices.Contains(c.groups, gid) }

// checked reports whether the server checks this caller's permissions: AUTH_UNIX callers
// other than root. AUTH_NONE calls act as the server process (see above).
func (c caller) checked() bool { return c.unix && c.uid != 0 }

// The Linux client leaves the permission checks of directory changes to the server (it
// asks ACCESS before reading and writing files, not before creating or removing names),
// so the front end checks them, as the kernel would for a local process with the
// caller's ids: EACCES without write and search permission on the directory, EPERM for a
// sticky directory's entry that is neither the caller's nor in the caller's directory,
// and the owner rules of chmod, chown and utimes.

// mayChangeDir: the caller may add or remove names in the directory dir.
func (c caller) mayChangeDir(dir *syscall.Stat_t) error {
	if !c.checked() {
		return nil
	}
	if _, w, x := c.rights(dir); !w || !x {
		return syscall.EACCES
	}
	return nil
}

// mayRemove: the caller may remove or rename away entry (nil: there is none) from dir.
func (c caller) mayRemove(dir, entry *syscall.Stat_t) error {
	if err := c.mayChangeDir(dir); err != nil || entry == nil || !c.checked() {
		return err
	}
	if dir.Mode&syscall.S_ISVTX != 0 && c.uid != dir.Uid && c.uid != entry.Uid {
		return syscall.EPERM
	}
	return nil
}

// maySetattr: the caller may make the changes of s to an object with stat st.
func (c caller) maySetattr(st *syscall.Stat_t, s *sattr3) error {
	if !c.checked() {
		return nil
	}
	owner := c.uid == st.Uid
	_, w, _ := c.rights(st)
	switch {
	case s.uid != nil && *s.uid != st.Uid:
		return syscall.EPERM // only root gives files away
	case s.gid != nil && *s.gid != st.Gid && (!owner || !c.inGroup(*s.gid)):
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

// accessFor answers ACCESS: which of the asked rights c has on an object with stat st,
// by the object's mode bits as the kernel checks them (root may read and write anything
// and execute what anyone may execute; others get the owner's, the group's or the other
// bits, the first class they fall in). A read-only export grants no change.
func accessFor(c caller, st *syscall.Stat_t, asked uint32, readOnly bool) uint32 {
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	r, w, x := c.rights(st)
	if readOnly {
		w = false
	}
	var granted uint32
	if r {
		granted |= access3Read
	}
	if w {
		granted |= access3Modify | access3Extend
		if isDir {
			granted |= access3Delete
		}
	}
	if x {
		if isDir {
			granted |= access3Lookup
		} else {
			granted |= access3Execute
		}
	}
	return granted & asked
}
