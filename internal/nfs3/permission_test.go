package nfs3_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestCallersOwnWhatTheyCreate: objects a client creates belong to the uid and gid of its
// AUTH_UNIX credential (the parent's gid in a setgid directory), the server refuses a
// caller what the kernel refuses a local process with the caller's ids, and ACCESS
// answers for the caller; a malformed credential is refused with AUTH_ERROR and changes
// nothing.
func TestCallersOwnWhatTheyCreate(t *testing.T) {
	requireRoot(t, "giving files away needs root")
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"lower.txt": "lower\n"}})
	upper := srv.Layout.Upper
	sgid := filepath.Join(upper, "sgid")
	if err := os.MkdirAll(sgid, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sgid, 0, 50); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(sgid, 0o2777); err != nil { // os.Chmod ignores raw 0o2000
		t.Fatal(err)
	}
	sgidFH := c.Lookup(root, "sgid")

	pubDir := filepath.Join(upper, "pub")
	if err := os.Mkdir(pubDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(pubDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pubDir, "others"), []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(pubDir, "others"), 2000, 2000); err != nil {
		t.Fatal(err)
	}
	pub := c.Lookup(root, "pub")

	c.As(1000, 1000, 27)
	made := map[string][]byte{}
	made["pub/file"] = c.Create(pub, "file")
	made["pub/dir"] = c.Mkdir(pub, "dir")
	if st, r := c.NFS(nfs3.ProcSymlink, rpctest.SymlinkArgs(pub, "link", rpctest.SattrNone(), "file")); st != nfs3.StatusOK {
		t.Fatalf("SYMLINK: status %d", st)
	} else {
		made["pub/link"] = rpctest.NewHandle(t, r)
	}
	if st, r := c.NFS(nfs3.ProcMknod, rpctest.MknodArgs(pub, "fifo", rpctest.FtypeFifo, rpctest.SattrMode(0o644), 0, 0)); st != nfs3.StatusOK {
		t.Fatalf("MKNOD: status %d", st)
	} else {
		made["pub/fifo"] = rpctest.NewHandle(t, r)
	}
	made["sgid/inherits"] = c.Create(sgidFH, "inherits")

	for name, fh := range made {
		wantGID := uint32(1000)
		if filepath.Dir(name) == "sgid" {
			wantGID = 50
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(upper, name), &st); err != nil {
			t.Errorf("%s: not in the upper: %v", name, err)
			continue
		}
		if st.Uid != 1000 || st.Gid != wantGID {
			t.Errorf("%s: upper object owned by %d:%d, want 1000:%d", name, st.Uid, st.Gid, wantGID)
		}
		if a := c.Getattr(fh); a.UID != 1000 || a.GID != wantGID {
			t.Errorf("%s: GETATTR owner %d:%d, want 1000:%d", name, a.UID, a.GID, wantGID)
		}
	}

	// What uid 1000 may not do, as the kernel refuses it to a local process.
	lower := c.Lookup(root, "lower.txt") // root's, 0644
	for _, tc := range []struct {
		what string
		proc nfs3.Proc
		args []byte
		want nfs3.Status
	}{
		{"CREATE in root's directory", nfs3.ProcCreate, rpctest.CreateArgs(root, "nope", rpctest.CreateGuarded, rpctest.SattrMode(0o644)), nfs3.StatusAcces},
		{"MKDIR in root's directory", nfs3.ProcMkdir, append(rpctest.DirOp(root, "nope"), rpctest.SattrMode(0o755)...), nfs3.StatusAcces},
		{"REMOVE from root's directory", nfs3.ProcRemove, rpctest.DirOp(root, "lower.txt"), nfs3.StatusAcces},
		{"REMOVE another user's file from a sticky directory", nfs3.ProcRemove, rpctest.DirOp(pub, "others"), nfs3.StatusPerm},
		{"RENAME out of root's directory", nfs3.ProcRename, rpctest.RenameArgs(root, "lower.txt", pub, "stolen"), nfs3.StatusAcces},
		{"LINK into root's directory", nfs3.ProcLink, rpctest.LinkArgs(made["pub/file"], root, "nope"), nfs3.StatusAcces},
		{"SETATTR mode of root's file", nfs3.ProcSetattr, rpctest.SetattrArgs(lower, rpctest.Sattr{Mode: new(uint32(0o777))}, nil), nfs3.StatusPerm},
		{"SETATTR size of root's 0644 file", nfs3.ProcSetattr, rpctest.SetattrArgs(lower, rpctest.Sattr{Size: new(uint64(0))}, nil), nfs3.StatusAcces},
		{"SETATTR giving a file to root", nfs3.ProcSetattr, rpctest.SetattrArgs(made["pub/file"], rpctest.Sattr{UID: new(uint32(0))}, nil), nfs3.StatusPerm},
	} {
		if st, _ := c.NFS(tc.proc, tc.args); st != tc.want {
			t.Errorf("%s as uid 1000: status %d, want %d", tc.what, st, tc.want)
		}
	}
	for _, name := range []string{"nope", "lower.txt", "pub/stolen"} {
		if _, err := os.Lstat(filepath.Join(upper, name)); !os.IsNotExist(err) {
			t.Errorf("upper has %s after refused calls (%v)", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(pubDir, "others")); err != nil {
		t.Errorf("another user's file in the sticky directory is gone: %v", err)
	}
	if a := c.Getattr(lower); a.Mode != 0o644 || a.Size != 6 {
		t.Errorf("root's file changed by refused calls: mode %o size %d", a.Mode, a.Size)
	}
	if a := c.Getattr(made["pub/file"]); a.UID != 1000 {
		t.Errorf("refused chown changed the owner to %d", a.UID)
	}

	access := func(fh []byte) uint32 {
		t.Helper()
		granted, attr := c.Access(fh)
		if attr == nil {
			t.Errorf("ACCESS reply without attributes")
		}
		return granted
	}
	if got, want := access(made["pub/file"]), uint32(rpctest.AccessRead|rpctest.AccessModify|rpctest.AccessExtend); got != want {
		t.Errorf("ACCESS of the caller's own 0644 file: %#x, want %#x", got, want)
	}
	if got, want := access(lower), uint32(rpctest.AccessRead); got != want {
		t.Errorf("ACCESS of root's 0644 file for uid 1000: %#x, want %#x", got, want)
	}
	if got, want := access(root), uint32(rpctest.AccessRead|rpctest.AccessLookup); got != want {
		t.Errorf("ACCESS of root's 0755 directory for uid 1000: %#x, want %#x", got, want)
	}
	c.As(0, 0)
	if got, want := access(lower), uint32(rpctest.AccessRead|rpctest.AccessModify|rpctest.AccessExtend); got != want {
		t.Errorf("ACCESS of a 0644 file for root: %#x, want %#x", got, want)
	}

	// A malformed AUTH_UNIX credential is refused before anything happens.
	c.SetCredential(oncrpc.AuthUnix, oncrpc.AuthUnixBody("test", 1000, 1000)[:10])
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcCreate),
		rpctest.CreateArgs(root, "refused", rpctest.CreateGuarded, rpctest.SattrMode(0o644)))
	if rej, stat, ok := rpctest.Rejection(reply); !ok || rej != oncrpc.RejectAuthError || stat != oncrpc.AuthBadCred {
		t.Errorf("CREATE with a malformed credential: reply %x, want MSG_DENIED AUTH_ERROR AUTH_BADCRED", reply)
	}
	if _, err := os.Lstat(filepath.Join(upper, "refused")); !os.IsNotExist(err) {
		t.Errorf("CREATE with a malformed credential created the file (%v)", err)
	}
}

// TestReadWriteCheckedForTheCaller: a client that skips ACCESS still gets EACCES from
// READ and WRITE without the permission (the owner may always, as with knfsd; an
// execute-only file may be read, so binaries run), a WRITE by a caller who is not root
// clears setuid, and setgid where group execute is set (chmod/12.t of pjdfstest), and
// a chown that names the owner or group is EPERM for anyone but the owner even when it
// changes nothing (chown/07.t). Refused calls change nothing.
func TestReadWriteCheckedForTheCaller(t *testing.T) {
	requireRoot(t, "files of other users need root")
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{})
	upper := srv.Layout.Upper
	mk := func(name string, mode uint32, uid, gid int) []byte {
		t.Helper()
		p := filepath.Join(upper, name)
		if err := os.WriteFile(p, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return c.Lookup(root, name)
	}
	private := mk("private", 0o600, 2000, 2000)
	execOnly := mk("exec-only", 0o711, 2000, 2000)
	own := mk("own", 0o000, 1000, 1000)
	suid := mk("suid", 0o4777, 2000, 2000)
	sgidX := mk("sgid-x", 0o2777, 2000, 2000)
	sgidLock := mk("sgid-lock", 0o2666, 2000, 1000) // no group execute: a locking mark
	both := mk("both", 0o6777, 2000, 2000)
	theirs := mk("theirs", 0o644, 2000, 2000)

	c.As(1000, 1000)
	read := func(fh []byte) nfs3.Status {
		st, _ := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(fh, 0, 100))
		return st
	}
	write := func(fh []byte) nfs3.Status {
		st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(fh, 0, []byte("X"), rpctest.FileSync))
		return st
	}
	for _, tc := range []struct {
		what string
		got  nfs3.Status
		want nfs3.Status
	}{
		{"READ of another user's 0600 file", read(private), nfs3.StatusAcces},
		{"WRITE of another user's 0600 file", write(private), nfs3.StatusAcces},
		{"WRITE of another user's 0644 file", write(theirs), nfs3.StatusAcces},
		{"READ of an execute-only file", read(execOnly), nfs3.StatusOK},
		{"READ of the caller's own 0000 file", read(own), nfs3.StatusOK},
		{"WRITE of the caller's own 0000 file", write(own), nfs3.StatusOK},
		{"chown of another user's file to its own owner", nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(theirs, rpctest.Sattr{UID: new(uint32(2000)), GID: new(uint32(2000))}, nil)), nfs3.StatusPerm},
		{"chgrp of another user's file to its own group", nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(theirs, rpctest.Sattr{GID: new(uint32(2000))}, nil)), nfs3.StatusPerm},
		{"chown of the caller's file to itself", nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(own, rpctest.Sattr{UID: new(uint32(1000)), GID: new(uint32(1000))}, nil)), nfs3.StatusOK},
	} {
		if tc.got != tc.want {
			t.Errorf("%s as uid 1000: status %d, want %d", tc.what, tc.got, tc.want)
		}
	}
	for name, want := range map[string]string{"private": "secret", "theirs": "secret"} {
		if b, _ := os.ReadFile(filepath.Join(upper, name)); string(b) != want {
			t.Errorf("%s holds %q after a refused WRITE", name, b)
		}
	}

	for _, tc := range []struct {
		name string
		fh   []byte
		want uint32
	}{
		{"suid", suid, 0o777},
		{"sgid-x", sgidX, 0o777},
		{"both", both, 0o777},
		{"sgid-lock", sgidLock, 0o2666}, // the writer is in the file's group: kept
	} {
		if st := write(tc.fh); st != nfs3.StatusOK {
			t.Errorf("WRITE of %s: status %d", tc.name, st)
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(upper, tc.name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != tc.want {
			t.Errorf("%s after a WRITE by uid 1000: mode %o on disk, want %o", tc.name, st.Mode&0o7777, tc.want)
		}
		if a := c.Getattr(tc.fh); a.Mode != tc.want {
			t.Errorf("%s after a WRITE by uid 1000: GETATTR mode %o, want %o", tc.name, a.Mode, tc.want)
		}
	}
	// Root (no root squash yet) keeps the bits, as a writer with CAP_FSETID does.
	rootSuid := mk("root-suid", 0o4755, 2000, 2000)
	c.As(0, 0)
	if st := write(rootSuid); st != nfs3.StatusOK {
		t.Fatalf("WRITE by root: status %d", st)
	}
	if a := c.Getattr(rootSuid); a.Mode != 0o4755 {
		t.Errorf("a WRITE by root changed the mode to %o", a.Mode)
	}
}

func nfsStatus(c *rpctest.Client, proc nfs3.Proc, args []byte) nfs3.Status {
	st, _ := c.NFS(proc, args)
	return st
}
