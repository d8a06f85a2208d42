package oncrpc

import (
	"errors"

	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Who a call comes from. NFSv3 clients send an AUTH_UNIX (AUTH_SYS, RFC 5531 appendix A)
// credential: the calling process's uid, gid and supplementary groups. A call with another
// flavor (AUTH_NONE) is nobody's.

// Authentication flavors.
const (
	AuthNone = 0
	AuthUnix = 1
)

// The protocol's bounds: an opaque_auth body, AUTH_UNIX's groups and machine name.
const (
	maxAuthBody    = 400
	maxAuthGroups  = 16
	maxMachineName = 255
)

// Nobody is the uid and gid of a call without an AUTH_UNIX credential.
const Nobody = 65534

var errBadAuth = errors.New("oncrpc: authentication body over 400 bytes")

// Credential is the identity a call's credential claims.
type Credential struct {
	Unix     bool // an AUTH_UNIX credential was sent; else UID and GID are Nobody
	UID, GID uint32
	Groups   []uint32
}

// ParseCredential reads a call's credential (flavor and body). bad reports an AUTH_UNIX
// body that does not decode: such a call is refused with AUTH_BADCRED, not served as
// someone else.
func ParseCredential(flavor uint32, body []byte) (c Credential, bad bool) {
	c = Credential{UID: Nobody, GID: Nobody}
	if flavor != AuthUnix {
		return c, false
	}
	if len(body) > maxAuthBody {
		return c, true
	}
	r := xdr.NewReader(body, 0)
	_ = r.Uint32() // stamp
	if machine := r.Opaque(); len(machine) > maxMachineName {
		return c, true
	}
	uid, gid := r.Uint32(), r.Uint32()
	n := r.Uint32()
	if r.Err() != nil || n > maxAuthGroups {
		return c, true
	}
	groups := make([]uint32, n)
	for i := range groups {
		groups[i] = r.Uint32()
	}
	if r.Err() != nil || r.Remaining() != 0 {
		return c, true
	}
	return Credential{Unix: true, UID: uid, GID: gid, Groups: groups}, false
}

// AuthUnixBody encodes an AUTH_UNIX credential body (for clients: the tests' and the
// benchmarks').
func AuthUnixBody(machine string, uid, gid uint32, groups ...uint32) []byte {
	var w xdr.Writer
	w.Uint32(0) // stamp
	w.String(machine)
	w.Uint32(uid)
	w.Uint32(gid)
	w.Uint32(uint32(len(groups)))
	for _, g := range groups {
		w.Uint32(g)
	}
	return w.Buf
}
