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

// accessFor answers ACCESS: which of the asked rights c has on an object with stat st,
// by the object's mode bits as the kernel checks them (root may read and write anything
// and execute what anyone may execute; others get the owner's, the group's or the other
// bits, the first class they fall in). A read-only export grants no change.
func accessFor(c caller, st *syscall.Stat_t, asked uint32, readOnly bool) uint32 {
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	var r, w, x bool
	switch {
	case c.unix && c.uid == 0:
		r, w = true, true
		x = isDir || st.Mode&0o111 != 0
	default:
		shift := 0 // other
		switch {
		case c.uid == st.Uid:
			shift = 6
		case c.gid == st.Gid || slices.Contains(c.groups, st.Gid):
			shift = 3
		}
		bits := st.Mode >> shift & 0o7
		r, w, x = bits&4 != 0, bits&2 != 0, bits&1 != 0
	}
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
