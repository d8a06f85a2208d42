package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestParseCredential(t *testing.T) {
	good := authUnixBody(1000, 100, 4, 27)
	c, bad := parseCredential(authUnix, good)
	if bad || !c.unix || c.uid != 1000 || c.gid != 100 || len(c.groups) != 2 || c.groups[1] != 27 {
		t.Errorf("good AUTH_UNIX: %+v bad=%v", c, bad)
	}
	if c, bad := parseCredential(authNone, nil); bad || c.unix || c.uid != nobody {
		t.Errorf("AUTH_NONE: %+v bad=%v, want nobody", c, bad)
	}
	tooManyGroups := authUnixBody(1, 1, make([]uint32, 17)...)
	var longName xdrWriter
	longName.uint32(0)
	longName.opaque(make([]byte, 256))
	longName.buf = append(longName.buf, make([]byte, 12)...)
	for name, body := range map[string][]byte{
		"truncated":         good[:len(good)-3],
		"trailing bytes":    append(append([]byte(nil), good...), 0, 0, 0, 0),
		"17 groups":         tooManyGroups,
		"long machine name": longName.buf,
		"empty":             nil,
	} {
		if _, bad := parseCredential(authUnix, body); !bad {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAccessFor(t *testing.T) {
	const all = access3Read | access3Lookup | access3Modify | access3Extend | access3Delete | access3Execute
	file := func(mode, uid, gid uint32) *syscall.Stat_t {
		return &syscall.Stat_t{Mode: syscall.S_IFREG | mode, Uid: uid, Gid: gid}
	}
	dir := func(mode, uid, gid uint32) *syscall.Stat_t {
		return &syscall.Stat_t{Mode: syscall.S_IFDIR | mode, Uid: uid, Gid: gid}
	}
	root := caller{unix: true}
	alice := caller{unix: true, uid: 1000, gid: 1000, groups: []uint32{50}}
	anon := caller{uid: nobody, gid: nobody}
	for _, tc := range []struct {
		name     string
		c        caller
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
		if got := accessFor(tc.c, tc.st, all, tc.readOnly); got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
		if got := accessFor(tc.c, tc.st, access3Read, tc.readOnly); got != tc.want&access3Read {
			t.Errorf("%s: asked READ only, granted %#x", tc.name, got)
		}
	}
}

// accessCall sends ACCESS for all rights and returns the granted ones.
func (c *rpcClient) accessCall(fh []byte) uint32 {
	c.t.Helper()
	const all = 0x3f
	st, r := c.nfsCall(procAccess, append(opaqueArg(fh), 0, 0, 0, all))
	if st != 0 {
		c.t.Fatalf("ACCESS: status %d", st)
	}
	if _, ok := r.postOp(); !ok {
		c.t.Errorf("ACCESS reply without attributes")
	}
	granted := r.uint32()
	if r.err != nil {
		c.t.Fatal(r.err)
	}
	return granted
}

// TestCallersOwnWhatTheyCreate: objects a client creates belong to the uid and gid of its
// AUTH_UNIX credential (the parent's gid in a setgid directory), and ACCESS answers for
// the caller; a malformed credential is refused with AUTH_ERROR and changes nothing.
func TestCallersOwnWhatTheyCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		requireInCI(t, "giving files away needs root")
	}
	srv := startTestServer(t, map[string]string{"lower.txt": "lower\n"})
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	if err := os.MkdirAll(filepath.Join(srv.layout.upper, "sgid"), 0o777); err != nil {
		t.Fatal(err)
	}
	sgid := filepath.Join(srv.layout.upper, "sgid")
	if err := os.Chown(sgid, 0, 50); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(sgid, 0o2777); err != nil { // os.Chmod ignores raw 0o2000
		t.Fatal(err)
	}
	sgidFH := c.lookup(root, "sgid")

	pubDir := filepath.Join(srv.layout.upper, "pub")
	if err := os.Mkdir(pubDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(pubDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pubDir, "others"), []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(pubDir, "others"), 2000, 2000)
	pub := c.lookup(root, "pub")

	c.as(1000, 1000, 27)
	made := map[string][]byte{}
	made["pub/file"] = c.create(pub, "file")
	made["pub/dir"] = c.mkdir(pub, "dir")
	var sl xdrWriter
	sl.buf = append(dirop(pub, "link"), sattrNone()...)
	sl.opaque([]byte("file"))
	if st, r := c.nfsCall(procSymlink, sl.buf); st != 0 {
		t.Fatalf("SYMLINK: status %d", st)
	} else {
		made["pub/link"] = newHandle(t, r)
	}
	var fifo xdrWriter
	fifo.buf = dirop(pub, "fifo")
	fifo.uint32(nf3Fifo)
	fifo.buf = append(fifo.buf, sattrMode(0o644)...)
	if st, r := c.nfsCall(procMknod, fifo.buf); st != 0 {
		t.Fatalf("MKNOD: status %d", st)
	} else {
		made["pub/fifo"] = newHandle(t, r)
	}
	made["sgid/inherits"] = c.create(sgidFH, "inherits")

	for name, fh := range made {
		wantGID := uint32(1000)
		if filepath.Dir(name) == "sgid" {
			wantGID = 50
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(srv.layout.upper, name), &st); err != nil {
			t.Errorf("%s: not in the upper: %v", name, err)
			continue
		}
		if st.Uid != 1000 || st.Gid != wantGID {
			t.Errorf("%s: upper object owned by %d:%d, want 1000:%d", name, st.Uid, st.Gid, wantGID)
		}
		if a := c.getattr(fh); a.uid != 1000 || a.gid != wantGID {
			t.Errorf("%s: GETATTR owner %d:%d, want 1000:%d", name, a.uid, a.gid, wantGID)
		}
	}

	// What uid 1000 may not do, as the kernel refuses it to a local process.
	lower := c.lookup(root, "lower.txt") // root's, 0644
	size0 := uint64(0)
	mode := uint32(0o777)
	var chown xdrWriter
	chown.opaque(made["pub/file"])
	chown.buf = append(chown.buf, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0) // no mode; uid 0
	chown.buf = append(chown.buf, make([]byte, 20)...)                // no gid, size, times; no guard
	for _, tc := range []struct {
		what string
		proc uint32
		args []byte
		want uint32
	}{
		{"CREATE in root's directory", procCreate, createArgs(root, "nope", createGuarded, sattrMode(0o644)), 13},
		{"MKDIR in root's directory", procMkdir, append(dirop(root, "nope"), sattrMode(0o755)...), 13},
		{"REMOVE from root's directory", procRemove, dirop(root, "lower.txt"), 13},
		{"REMOVE another user's file from a sticky directory", procRemove, dirop(pub, "others"), 1},
		{"RENAME out of root's directory", procRename, append(dirop(root, "lower.txt"), dirop(pub, "stolen")...), 13},
		{"LINK into root's directory", procLink, append(opaqueArg(made["pub/file"]), dirop(root, "nope")...), 13},
		{"SETATTR mode of root's file", procSetattr, setattrArgs(lower, &mode, nil, nil, nil, nil), 1},
		{"SETATTR size of root's 0644 file", procSetattr, setattrArgs(lower, nil, &size0, nil, nil, nil), 13},
		{"SETATTR giving a file to root", procSetattr, chown.buf, 1},
	} {
		if st, _ := c.nfsCall(tc.proc, tc.args); st != tc.want {
			t.Errorf("%s as uid 1000: status %d, want %d", tc.what, st, tc.want)
		}
	}
	for _, name := range []string{"nope", "lower.txt", "pub/stolen"} {
		if _, err := os.Lstat(filepath.Join(srv.layout.upper, name)); !os.IsNotExist(err) {
			t.Errorf("upper has %s after refused calls (%v)", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(pubDir, "others")); err != nil {
		t.Errorf("another user's file in the sticky directory is gone: %v", err)
	}
	if a := c.getattr(lower); a.mode != 0o644 || a.size != 6 {
		t.Errorf("root's file changed by refused calls: mode %o size %d", a.mode, a.size)
	}
	if a := c.getattr(made["pub/file"]); a.uid != 1000 {
		t.Errorf("refused chown changed the owner to %d", a.uid)
	}

	if got, want := c.accessCall(made["pub/file"]), uint32(access3Read|access3Modify|access3Extend); got != want {
		t.Errorf("ACCESS of the caller's own 0644 file: %#x, want %#x", got, want)
	}
	if got, want := c.accessCall(lower), uint32(access3Read); got != want {
		t.Errorf("ACCESS of root's 0644 file for uid 1000: %#x, want %#x", got, want)
	}
	if got, want := c.accessCall(root), uint32(access3Read|access3Lookup); got != want {
		t.Errorf("ACCESS of root's 0755 directory for uid 1000: %#x, want %#x", got, want)
	}
	c.as(0, 0)
	if got, want := c.accessCall(lower), uint32(access3Read|access3Modify|access3Extend); got != want {
		t.Errorf("ACCESS of a 0644 file for root: %#x, want %#x", got, want)
	}

	// A malformed AUTH_UNIX credential is refused before anything happens.
	c.credBody = authUnixBody(1000, 1000)[:10]
	reply := c.call(progNFS, nfsVersion, procCreate, createArgs(root, "refused", createGuarded, sattrMode(0o644)))
	r := xdrReader{buf: reply, pos: 8}
	if r.uint32() != msgDenied || r.uint32() != rejectAuthError || r.uint32() != authBadCred {
		t.Errorf("CREATE with a malformed credential: reply %x, want MSG_DENIED AUTH_ERROR AUTH_BADCRED", reply)
	}
	if _, err := os.Lstat(filepath.Join(srv.layout.upper, "refused")); !os.IsNotExist(err) {
		t.Errorf("CREATE with a malformed credential created the file (%v)", err)
	}
}
