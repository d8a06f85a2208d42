package nfs3

import (
	"syscall"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// TestAccessFor checks ACCESS's answer from an object's mode and owner for root, an
// owner, group members by primary and supplementary gid, others and AUTH_NONE callers,
// on a read-write and a read-only export, and that only the rights asked for are granted.
func TestAccessFor(t *testing.T) {
	const all = access3Read | access3Lookup | access3Modify | access3Extend | access3Delete | access3Execute
	file := func(mode, uid, gid uint32) *syscall.Stat_t {
		return &syscall.Stat_t{Mode: syscall.S_IFREG | mode, Uid: uid, Gid: gid}
	}
	dir := func(mode, uid, gid uint32) *syscall.Stat_t {
		return &syscall.Stat_t{Mode: syscall.S_IFDIR | mode, Uid: uid, Gid: gid}
	}
	root := principal{oncrpc.Credential{Unix: true}}
	alice := principal{oncrpc.Credential{Unix: true, UID: 1000, GID: 1000, Groups: []uint32{50}}}
	anon := principal{oncrpc.Credential{UID: oncrpc.Nobody, GID: oncrpc.Nobody}}
	for _, tc := range []struct {
		name     string
		p        principal
		st       *syscall.Stat_t
		readOnly bool
		want     uint32
	}{
		{"root, plain file", root, file(0o644, 0, 0), false, access3Read | access3Modify | access3Extend},
		{"root, executable", root, file(0o700, 5, 5), false, access3Read | access3Modify | access3Extend | access3Execute},
		{"root, directory", root, dir(0o000, 5, 5), false, access3Read | access3Modify | access3Extend | access3Delete | access3Lookup},
		{"root, read-only export", root, file(0o755, 0, 0), true, access3Read | access3Execute},
		{"owner", alice, file(0o640, 1000, 7), false, access3Read | access3Modify | access3Extend},
		{"owner bits win over group", alice, file(0o070, 1000, 1000), false, 0},
		{"group by primary gid", alice, file(0o750, 0, 1000), false, access3Read | access3Execute},
		{"group by supplementary", alice, file(0o460, 0, 50), false, access3Read | access3Modify | access3Extend},
		{"other", alice, file(0o644, 0, 0), false, access3Read},
		{"other directory", alice, dir(0o755, 0, 0), false, access3Read | access3Lookup},
		{"own directory", alice, dir(0o755, 1000, 1000), false, access3Read | access3Lookup | access3Modify | access3Extend | access3Delete},
		{"AUTH_NONE is other", anon, file(0o604, 0, 0), false, access3Read},
	} {
		if got := accessFor(tc.p, tc.st, all, tc.readOnly); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
		if got := accessFor(tc.p, tc.st, access3Read, tc.readOnly); got != tc.want&access3Read {
			t.Errorf("%s: asked READ only, granted %#x", tc.name, got)
		}
	}
}
