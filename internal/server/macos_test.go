package server_test

// Replays of what macOS clients do (docs/macos.md): the calls of the macOS NFS client, of
// Finder and of Office as they reach the server, made with the typed test client against
// the real server. No macOS client runs here; each test names the behaviour it stands for.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// nfsStatus makes an NFS call and returns its status.
func nfsStatus(c *rpctest.Client, proc nfs3.Proc, args []byte) nfs3.Status {
	st, _ := c.NFS(proc, args)
	return st
}

// rename renames and fails the test unless the status is want.
func rename(t *testing.T, c *rpctest.Client, fromDir []byte, from string, toDir []byte, to string, want nfs3.Status) {
	t.Helper()
	if st := nfsStatus(c, nfs3.ProcRename, rpctest.RenameArgs(fromDir, from, toDir, to)); st != want {
		t.Fatalf("RENAME %s -> %s: status %d, want %d", from, to, st, want)
	}
}

// readAll reads a whole (small) file.
func readAll(c *rpctest.Client, fh []byte) []byte {
	data, _ := c.Read(fh, 0, 1<<20)
	return data
}

// listNames lists dir with READDIRPLUS (dircount 512, maxcount 1024, as small as a client
// may ask) and fails the test on a name listed twice.
func listNames(t *testing.T, c *rpctest.Client, dir []byte) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	cookie, verf := uint64(0), uint64(0)
	for range 100000 {
		pg := c.ReaddirPage(true, dir, cookie, verf, 512, 1024)
		if pg.Status != nfs3.StatusOK {
			t.Fatalf("READDIRPLUS: status %d", pg.Status)
		}
		for _, e := range pg.Entries {
			if seen[e.Name] {
				t.Fatalf("%s listed twice", e.Name)
			}
			seen[e.Name] = true
			cookie = e.Cookie
			if e.Name != "." && e.Name != ".." {
				out = append(out, e.Name)
			}
		}
		verf = pg.Verifier
		if pg.EOF {
			slices.Sort(out)
			return out
		}
	}
	t.Fatal("READDIRPLUS never reached the end")
	return nil
}

// TestMacOSSourcePorts: the macOS client mounts from an unprivileged source port unless
// mounted with resvport: such calls are served by default; with RequirePrivilegedPort
// (--require-privileged-port) MNT from them is refused (MNT3ERR_ACCES), NFS calls with
// AUTH_TOOWEAK, and calls from a port under 1024 served.
func TestMacOSSourcePorts(t *testing.T) {
	files := map[string]string{"f": "data"}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})
	if port := c.Conn().LocalAddr().(*net.TCPAddr).Port; port < 1024 {
		t.Fatalf("the test client's source port %d is privileged: the test shows nothing", port)
	}
	if got := readAll(c, c.Lookup(root, "f")); string(got) != "data" {
		t.Fatalf("READ from an unprivileged port: %q", got)
	}

	strict := rpctest.StartServer(t, rpctest.Options{Files: files, RequirePrivilegedPort: true})
	c = rpctest.Dial(t, strict.Addr)
	// MNT is refused as mountd refuses it for a secure export ("illegal port"), and an
	// NFS call with a handle got elsewhere is refused too.
	mnt := rpctest.Accepted(t, c.Call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), rpctest.Opaque([]byte("/"))), oncrpc.Success)
	if status := mnt.Uint32(); status != 13 {
		t.Fatalf("MNT from port %v with a privileged port required: status %d, want 13 (MNT3ERR_ACCES)", c.Conn().LocalAddr(), status)
	}
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcGetattr), rpctest.Opaque(root))
	if stat, detail, ok := rpctest.Rejection(reply); !ok || stat != 1 || detail != oncrpc.AuthTooWeak {
		t.Fatalf("GETATTR from port %v with a privileged port required: %x, want AUTH_ERROR AUTH_TOOWEAK",
			c.Conn().LocalAddr(), reply)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: the call from a privileged port is not tried")
		return
	}
	var conn net.Conn
	var err error
	for port := 1023; port > 600 && conn == nil; port-- {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
		conn, err = d.Dial("tcp", strict.Addr)
	}
	if conn == nil {
		t.Fatalf("no privileged source port to dial from: %v", err)
	}
	pc := rpctest.New(t, conn)
	if got := readAll(pc, pc.Lookup(pc.MountRoot(), "f")); string(got) != "data" {
		t.Fatalf("READ from port %v: %q", conn.LocalAddr(), got)
	}
}

// TestMacOSFolderRenameKeepsHandles: Finder renames a folder while the client holds handles
// of it and of files and folders in it (open files, the Finder window): every handle keeps
// working after the rename, for a folder made through NFS (upper only) and for one of the
// lower layer (redirect_dir, on by default as root).
func TestMacOSFolderRenameKeepsHandles(t *testing.T) {
	files := map[string]string{"Lower Folder/a.txt": "lower a", "Lower Folder/Sub/b.txt": "lower b"}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})

	up := c.Mkdir(root, "Untitled Folder")
	f := c.Create(up, "notes.txt")
	c.Write(f, 0, []byte("hello"), rpctest.FileSync)
	sub := c.Mkdir(up, "Sub")
	g := c.Create(sub, "deep.txt")
	rename(t, c, root, "Untitled Folder", root, "Projects 2026", nfs3.StatusOK)
	if st := nfsStatus(c, nfs3.ProcLookup, rpctest.DirOp(root, "Untitled Folder")); st != nfs3.StatusNoEnt {
		t.Errorf("LOOKUP of the old name: status %d, want NOENT", st)
	}
	if !bytes.Equal(c.Lookup(root, "Projects 2026"), up) {
		t.Error("the renamed folder has another handle")
	}
	if got := readAll(c, f); string(got) != "hello" {
		t.Errorf("READ through the held handle: %q", got)
	}
	c.Write(f, 5, []byte(" world"), rpctest.FileSync)
	c.Write(g, 0, []byte("deep"), rpctest.FileSync)
	if got := readAll(c, c.Lookup(c.Lookup(c.Lookup(root, "Projects 2026"), "Sub"), "deep.txt")); string(got) != "deep" {
		t.Errorf("the write through a held handle is not at the new path: %q", got)
	}
	if got := listNames(t, c, up); !slices.Equal(got, []string{"Sub", "notes.txt"}) {
		t.Errorf("listing the renamed folder through its held handle: %v", got)
	}
	c.Create(sub, "new.txt") // a held directory handle still names the directory
	if a := c.Getattr(c.Lookup(sub, "new.txt")); a.Ftype != rpctest.FtypeReg {
		t.Errorf("a file made through a held handle: %+v", a)
	}

	low := c.Lookup(root, "Lower Folder")
	a := c.Lookup(low, "a.txt")
	lsub := c.Lookup(low, "Sub")
	b := c.Lookup(lsub, "b.txt")
	st := nfsStatus(c, nfs3.ProcRename, rpctest.RenameArgs(root, "Lower Folder", root, "Renamed Lower"))
	if st == nfs3.StatusXDev && os.Geteuid() != 0 {
		t.Log("not root: redirect_dir is off, a lower folder's rename is EXDEV (Finder then copies)")
		return
	}
	if st != nfs3.StatusOK {
		t.Fatalf("RENAME of a lower folder: status %d", st)
	}
	for name, fh := range map[string][]byte{"a.txt": a, "Sub/b.txt": b} {
		want := map[string]string{"a.txt": "lower a", "Sub/b.txt": "lower b"}[name]
		if got := readAll(c, fh); string(got) != want {
			t.Errorf("READ of %s through the handle held across the rename: %q", name, got)
		}
	}
	c.Write(b, 0, []byte("LOWER"), rpctest.FileSync) // copies up under the new name
	if got := readAll(c, c.Lookup(c.Lookup(c.Lookup(root, "Renamed Lower"), "Sub"), "b.txt")); string(got) != "LOWER b" {
		t.Errorf("after a write through a held handle: %q", got)
	}
	if got := listNames(t, c, low); !slices.Equal(got, []string{"Sub", "a.txt"}) {
		t.Errorf("listing the renamed lower folder through its held handle: %v", got)
	}
}

// TestMacOSFinderCopy: Finder copying a file over one of the same name: it looks for the
// AppleDouble companion (._name, not there), makes a temporary with CREATE EXCLUSIVE (a
// retransmission of it answered OK, another client's EXIST), sets its mode and times
// with SETATTR, writes UNSTABLE and COMMITs, writes the companion, and renames both over
// the old names; the result has the data, mode and mtime Finder set, the replaced file's
// handle is STALE, and the temporaries are gone from the listing.
func TestMacOSFinderCopy(t *testing.T) {
	files := map[string]string{"Docs/report.pdf": "old report"}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})
	docs := c.Lookup(root, "Docs")
	old := c.Lookup(docs, "report.pdf")
	if st := nfsStatus(c, nfs3.ProcLookup, rpctest.DirOp(docs, "._report.pdf")); st != nfs3.StatusNoEnt {
		t.Fatalf("LOOKUP ._report.pdf: status %d, want NOENT", st)
	}
	tmp := ".report.pdf.sb-1f2e3d4c-XyZ12"
	verf := []byte{0x61, 0x9a, 0x3c, 0x01, 0x00, 0x00, 0x2a, 0x17}
	create := func(v []byte) (nfs3.Status, []byte) {
		st, r := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(docs, tmp, rpctest.CreateExclusive, v))
		if st != nfs3.StatusOK {
			return st, nil
		}
		return st, rpctest.NewHandle(t, r)
	}
	st, fh := create(verf)
	if st != nfs3.StatusOK {
		t.Fatalf("CREATE EXCLUSIVE: status %d", st)
	}
	if st, again := create(verf); st != nfs3.StatusOK || !bytes.Equal(again, fh) {
		t.Fatalf("the retransmitted CREATE EXCLUSIVE: status %d, same handle %v", st, bytes.Equal(again, fh))
	}
	if st, _ := create([]byte("otherone")); st != nfs3.StatusExist {
		t.Fatalf("CREATE EXCLUSIVE with another verifier: status %d, want EXIST", st)
	}
	mode := uint32(0o644)
	mtime := [2]uint32{1700000000, 123000000}
	atime := [2]uint32{1700000100, 0}
	if st := nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(fh, rpctest.Sattr{Mode: &mode, Atime: &atime, Mtime: &mtime}, nil)); st != nfs3.StatusOK {
		t.Fatalf("SETATTR after CREATE EXCLUSIVE: status %d", st)
	}
	content := bytes.Repeat([]byte("new report "), 10000) // 110,000 bytes, two WRITEs
	_, _, wverf := c.Write(fh, 0, content[:65536], rpctest.Unstable)
	_, _, wverf2 := c.Write(fh, 65536, content[65536:], rpctest.Unstable)
	if _, cverf := c.Commit(fh); !bytes.Equal(cverf, wverf) || !bytes.Equal(wverf, wverf2) {
		t.Fatalf("write verifiers %x %x, COMMIT's %x: the client would resend", wverf, wverf2, cverf)
	}
	// Finder sets the modification time again after writing (the copy keeps the source's).
	if st := nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(fh, rpctest.Sattr{Mtime: &mtime}, nil)); st != nfs3.StatusOK {
		t.Fatalf("SETATTR of the mtime: status %d", st)
	}
	ad := c.Create(docs, "._"+tmp)
	c.Write(ad, 0, []byte("\x00\x05\x16\x07AppleDouble"), rpctest.FileSync)

	rename(t, c, docs, tmp, docs, "report.pdf", nfs3.StatusOK)
	rename(t, c, docs, "._"+tmp, docs, "._report.pdf", nfs3.StatusOK)
	// The handle LOOKUP gives now carries the new name as its hint; the fileid is the
	// object's, and the handle held from CREATE keeps working (docs/handles.md).
	nfh := c.Lookup(docs, "report.pdf")
	a := c.Getattr(nfh)
	if held := c.Getattr(fh); held.Fileid != a.Fileid {
		t.Errorf("the renamed temporary: fileid %d, the created one's %d", a.Fileid, held.Fileid)
	}
	if a.Mode&0o7777 != mode || a.Mtime != mtime || a.Atime != atime || a.Size != uint64(len(content)) {
		t.Errorf("the copy's attributes: mode %o mtime %v atime %v size %d; want %o %v %v %d",
			a.Mode&0o7777, a.Mtime, a.Atime, a.Size, mode, mtime, atime, len(content))
	}
	if got := readAll(c, nfh); !bytes.Equal(got, content) {
		t.Errorf("the copy holds %d bytes, want %d", len(got), len(content))
	}
	if got := readAll(c, fh); !bytes.Equal(got, content) {
		t.Errorf("through the handle from CREATE: %d bytes, want %d", len(got), len(content))
	}
	if st := nfsStatus(c, nfs3.ProcGetattr, rpctest.Opaque(old)); st != nfs3.StatusStale {
		t.Errorf("GETATTR of the replaced file's handle: status %d, want STALE", st)
	}
	if got := listNames(t, c, docs); !slices.Equal(got, []string{"._report.pdf", "report.pdf"}) {
		t.Errorf("after the copy the folder lists %v", got)
	}
}

// TestMacOSOfficeSave: Office saving a document: it locks the file (NLM), writes the new
// version to a temporary, renames the document to a backup name, the temporary to the
// document's name, removes the backup and unlocks. The lock follows the object through
// its rename (another client's TEST denied through the old handle), the new document is
// unlocked, the unlock through the held handle is granted, and the folder ends with the
// document alone.
func TestMacOSOfficeSave(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"lower", "upper", "work"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.MkdirAll(filepath.Join(dirs[d], "Office"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dirs["lower"], "Office", "Budget.xlsx"), []byte("version 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startLockingServer(t, server.Config{Exports: []server.Export{{Path: "/", Lowers: []string{dirs["lower"]}, Upper: dirs["upper"], Work: dirs["work"], Clients: clients.Everyone(false)}}})
	c := rpctest.Dial(t, s.nfs)
	dir := c.Lookup(c.MountRoot(), "Office")
	doc := c.Lookup(dir, "Budget.xlsx")
	mac := &rpctest.NLMClient{Addr: s.nlmTCP, Netid: "tcp", Vers: 4, Name: "macbook"}
	other := &rpctest.NLMClient{Addr: s.nlmTCP, Netid: "tcp", Vers: 4, Name: "other"}
	lock := mac.LockOf(doc, 501, 0, 0)
	if st, err := mac.Lock(nlm.LockArgs{Cookie: []byte("o1"), Exclusive: true, Lock: lock, State: 1}); err != nil || st != nlm.StatGranted {
		t.Fatalf("LOCK of the document: %d %v", st, err)
	}
	owner := c.Create(dir, "~$Budget.xlsx") // Office's owner file
	c.Write(owner, 0, []byte("user"), rpctest.FileSync)
	tmp := c.Create(dir, "~WRL0001.tmp")
	c.Write(tmp, 0, []byte("version 2"), rpctest.Unstable)
	c.Commit(tmp)
	rename(t, c, dir, "Budget.xlsx", dir, "~WRL0002.tmp", nfs3.StatusOK)
	if res, err := other.Test(true, other.LockOf(doc, 7, 0, 0)); err != nil || res.Stat != nlm.StatDenied {
		t.Fatalf("another client's TEST of the renamed document: %+v %v, want DENIED: the lock did not follow it", res, err)
	}
	rename(t, c, dir, "~WRL0001.tmp", dir, "Budget.xlsx", nfs3.StatusOK)
	saved := c.Lookup(dir, "Budget.xlsx")
	if res, err := other.Test(true, other.LockOf(saved, 7, 0, 0)); err != nil || res.Stat != nlm.StatGranted {
		t.Fatalf("TEST of the new document: %+v %v, want GRANTED", res, err)
	}
	if st, err := mac.Unlock(lock); err != nil || st != nlm.StatGranted {
		t.Fatalf("UNLOCK through the held handle: %d %v", st, err)
	}
	for _, n := range []string{"~WRL0002.tmp", "~$Budget.xlsx"} {
		if st := nfsStatus(c, nfs3.ProcRemove, rpctest.DirOp(dir, n)); st != nfs3.StatusOK {
			t.Fatalf("REMOVE %s: status %d", n, st)
		}
	}
	if got := readAll(c, saved); string(got) != "version 2" {
		t.Errorf("the saved document holds %q", got)
	}
	if got := listNames(t, c, dir); !slices.Equal(got, []string{"Budget.xlsx"}) {
		t.Errorf("after the save the folder lists %v", got)
	}
	if _, err := os.Stat(filepath.Join(dirs["lower"], "Office", "Budget.xlsx")); err != nil {
		t.Errorf("the lower layer was changed: %v", err)
	}
}

// TestMacOSSmallDirectoryPages: the macOS client's READDIRPLUS with dircount 512 and
// maxcount 1024 (and READDIR with maxcount 1024) lists a folder of Finder-style names,
// lower, upper and AppleDouble ones, exactly once, every reply within maxcount.
func TestMacOSSmallDirectoryPages(t *testing.T) {
	files := map[string]string{}
	var want []string
	for i := range 150 {
		n := fmt.Sprintf("IMG_%04d copy %d.JPG", i, i%3)
		files["Photos/"+n] = "jpeg"
		want = append(want, n)
	}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})
	photos := c.Lookup(root, "Photos")
	for i := range 150 {
		n := fmt.Sprintf("._IMG_%04d copy %d.JPG", i, i%3)
		c.Create(photos, n)
		want = append(want, n)
	}
	c.Create(photos, ".DS_Store")
	want = append(want, ".DS_Store")
	slices.Sort(want)
	if got := listNames(t, c, photos); !slices.Equal(got, want) {
		t.Fatalf("READDIRPLUS 512/1024: %d names, want %d", len(got), len(want))
	}
	// READDIR in 1 KiB pages.
	var got []string
	cookie, verf := uint64(0), uint64(0)
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("READDIR never reached the end")
		}
		pg := c.ReaddirPage(false, photos, cookie, verf, 0, 1024)
		if pg.Status != nfs3.StatusOK {
			t.Fatalf("READDIR: status %d", pg.Status)
		}
		for _, e := range pg.Entries {
			cookie = e.Cookie
			if e.Name != "." && e.Name != ".." {
				got = append(got, e.Name)
			}
		}
		verf = pg.Verifier
		if pg.EOF {
			break
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("READDIR 1024: %d names (duplicates or gaps), want %d", len(got), len(want))
	}
}

// TestAppleDoubleFilesAreOrdinary: AppleDouble companions (._name) and .DS_Store are
// ordinary files to the union: lower ones are copied up when written, renamed and removed
// alongside their partners (leaving whiteouts over the lower ones), and new ones made
// next to new files.
func TestAppleDoubleFilesAreOrdinary(t *testing.T) {
	files := map[string]string{"Pics/photo.jpg": "jpeg", "Pics/._photo.jpg": "AD lower", "Pics/.DS_Store": "DS lower"}
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})
	pics := c.Lookup(root, "Pics")
	ad := c.Lookup(pics, "._photo.jpg")
	ds := c.Lookup(pics, ".DS_Store")
	if got := readAll(c, ad); string(got) != "AD lower" {
		t.Fatalf("READ ._photo.jpg: %q", got)
	}
	c.Write(ad, 0, []byte("AD upper"), rpctest.FileSync)
	size := uint64(0)
	if st := nfsStatus(c, nfs3.ProcSetattr, rpctest.SetattrArgs(ds, rpctest.Sattr{Size: &size}, nil)); st != nfs3.StatusOK {
		t.Fatalf("SETATTR size 0 of .DS_Store: status %d", st)
	}
	c.Write(ds, 0, []byte("DS upper"), rpctest.FileSync)
	for n, want := range map[string]string{"._photo.jpg": "AD upper", ".DS_Store": "DS upper"} {
		b, err := os.ReadFile(filepath.Join(srv.Layout.Upper, "Pics", n))
		if err != nil || string(b) != want {
			t.Errorf("%s in the upper layer: %q %v, want %q (copied up)", n, b, err, want)
		}
		b, _ = os.ReadFile(filepath.Join(srv.Layout.L1, "Pics", n))
		if string(b) == want {
			t.Errorf("%s: the lower layer was written", n)
		}
	}
	// Finder renames a file and its companion together.
	rename(t, c, pics, "photo.jpg", pics, "holiday.jpg", nfs3.StatusOK)
	rename(t, c, pics, "._photo.jpg", pics, "._holiday.jpg", nfs3.StatusOK)
	if got := readAll(c, ad); string(got) != "AD upper" || c.Getattr(c.Lookup(pics, "._holiday.jpg")).Fileid != c.Getattr(ad).Fileid {
		t.Errorf("the renamed companion, through the handle held from before its copy-up: %q", got)
	}
	if got := listNames(t, c, pics); !slices.Equal(got, []string{".DS_Store", "._holiday.jpg", "holiday.jpg"}) {
		t.Errorf("after the renames: %v", got)
	}
	// New ones next to a new file, then everything removed.
	nf := c.Create(pics, "new.png")
	c.Create(pics, "._new.png")
	c.Write(nf, 0, []byte("png"), rpctest.FileSync)
	for _, n := range []string{"holiday.jpg", "._holiday.jpg", "new.png", "._new.png", ".DS_Store"} {
		if st := nfsStatus(c, nfs3.ProcRemove, rpctest.DirOp(pics, n)); st != nfs3.StatusOK {
			t.Fatalf("REMOVE %s: status %d", n, st)
		}
	}
	if got := listNames(t, c, pics); len(got) != 0 {
		t.Errorf("after removing everything: %v", got)
	}
	for _, n := range []string{"._photo.jpg", ".DS_Store", "photo.jpg"} {
		if st := nfsStatus(c, nfs3.ProcLookup, rpctest.DirOp(pics, n)); st != nfs3.StatusNoEnt {
			t.Errorf("LOOKUP %s after its removal: status %d, want NOENT", n, st)
		}
		var fst syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(srv.Layout.Upper, "Pics", n), &fst); err != nil ||
			fst.Mode&syscall.S_IFMT != syscall.S_IFCHR || fst.Rdev != 0 {
			t.Errorf("%s: no whiteout in the upper over the lower one (%v)", n, err)
		}
	}
}

// TestAppleDoubleRefused: with RefuseAppleDouble (-o appledouble=refuse) no new "._name"
// or ".DS_Store" appears, made by CREATE, MKDIR, SYMLINK or LINK or renamed to (ACCES),
// while the lower ones stay readable, writable (copied up) and removable, and other names,
// ".DS_Store2" and "a._b" among them, are made as usual.
func TestAppleDoubleRefused(t *testing.T) {
	files := map[string]string{"Pics/photo.jpg": "jpeg", "Pics/._photo.jpg": "AD lower", "Pics/.DS_Store": "DS lower"}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files, RefuseAppleDouble: true})
	pics := c.Lookup(root, "Pics")
	photo := c.Lookup(pics, "photo.jpg")
	for _, n := range []string{"._new.png", ".DS_Store", "._"} {
		for proc, args := range map[nfs3.Proc][]byte{
			nfs3.ProcCreate:  rpctest.CreateArgs(pics, n, rpctest.CreateGuarded, rpctest.SattrMode(0o644)),
			nfs3.ProcMkdir:   append(rpctest.DirOp(pics, n), rpctest.SattrMode(0o755)...),
			nfs3.ProcSymlink: rpctest.SymlinkArgs(pics, n, rpctest.SattrNone(), "photo.jpg"),
			nfs3.ProcLink:    rpctest.LinkArgs(photo, pics, n),
		} {
			want := nfs3.StatusAcces
			if n == ".DS_Store" {
				want = nfs3.StatusExist // there is one already
			}
			if st := nfsStatus(c, proc, args); st != want {
				t.Errorf("procedure %d of %q: status %d, want %d", proc, n, st, want)
			}
		}
	}
	if st := nfsStatus(c, nfs3.ProcRename, rpctest.RenameArgs(pics, "photo.jpg", pics, "._photo2.jpg")); st != nfs3.StatusAcces {
		t.Errorf("RENAME to an AppleDouble name: status %d, want ACCES", st)
	}
	ad := c.Lookup(pics, "._photo.jpg")
	c.Write(ad, 0, []byte("AD upper"), rpctest.FileSync)
	if got := readAll(c, ad); string(got) != "AD upper" {
		t.Errorf("the lower ._photo.jpg after a write: %q", got)
	}
	for _, n := range []string{"._photo.jpg", ".DS_Store"} {
		if st := nfsStatus(c, nfs3.ProcRemove, rpctest.DirOp(pics, n)); st != nfs3.StatusOK {
			t.Errorf("REMOVE %s: status %d", n, st)
		}
	}
	if st := nfsStatus(c, nfs3.ProcCreate, rpctest.CreateArgs(pics, ".DS_Store", rpctest.CreateGuarded, rpctest.SattrMode(0o644))); st != nfs3.StatusAcces {
		t.Errorf("CREATE .DS_Store after its removal: status %d, want ACCES", st)
	}
	c.Create(pics, ".DS_Store2")
	c.Create(pics, "a._b")
	rename(t, c, pics, "photo.jpg", pics, "holiday.jpg", nfs3.StatusOK)
	if got := listNames(t, c, pics); !slices.Equal(got, []string{".DS_Store2", "a._b", "holiday.jpg"}) {
		t.Errorf("the folder lists %v", got)
	}
}

// TestMacOSUnicodeNames: a name written on Linux in NFC ("café.txt" with a precomposed é)
// that a Mac looks up in NFD (e and a combining accent, as its older APIs and HFS+ spell
// it), and a Finder save of the NFD spelling over it. With unicode=insensitive both
// spellings are one entry (LOOKUP gives the same handle, CREATE GUARDED of the other
// spelling answers EXIST, the folder lists the stored spelling once); with the default,
// exact, the NFD spelling is another name, as on the kernel overlay.
func TestMacOSUnicodeNames(t *testing.T) {
	const nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"
	files := map[string]string{"Docs/" + nfc: "written on linux"}

	t.Run("insensitive", func(t *testing.T) {
		_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files, Unicode: "insensitive"})
		docs := c.Lookup(root, "Docs")
		byNFC, byNFD := c.Lookup(docs, nfc), c.Lookup(docs, nfd)
		if a, b := c.Getattr(byNFC), c.Getattr(byNFD); a.Fileid != b.Fileid {
			t.Fatalf("LOOKUP of the two spellings: fileids %d and %d", a.Fileid, b.Fileid)
		}
		if got := readAll(c, byNFD); string(got) != "written on linux" {
			t.Fatalf("READ through the NFD spelling: %q", got)
		}
		if st := nfsStatus(c, nfs3.ProcCreate, rpctest.CreateArgs(docs, nfd, rpctest.CreateGuarded, rpctest.SattrMode(0o644))); st != nfs3.StatusExist {
			t.Fatalf("CREATE GUARDED of the NFD spelling: status %d, want EXIST", st)
		}
		tmp := c.Create(docs, ".sb-"+nfd)
		c.Write(tmp, 0, []byte("saved on a mac"), rpctest.FileSync)
		rename(t, c, docs, ".sb-"+nfd, docs, nfd, nfs3.StatusOK)
		if got := listNames(t, c, docs); !slices.Equal(got, []string{nfc}) {
			t.Fatalf("after the save the folder lists %+q, want the NFC name alone", got)
		}
		if got := readAll(c, c.Lookup(docs, nfc)); string(got) != "saved on a mac" {
			t.Fatalf("the NFC spelling reads %q after the save", got)
		}
		if st := nfsStatus(c, nfs3.ProcRemove, rpctest.DirOp(docs, nfd)); st != nfs3.StatusOK {
			t.Fatalf("REMOVE of the NFD spelling: status %d", st)
		}
		if got := listNames(t, c, docs); len(got) != 0 {
			t.Fatalf("after REMOVE the folder lists %+q", got)
		}
	})

	t.Run("exact", func(t *testing.T) {
		_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})
		docs := c.Lookup(root, "Docs")
		if st := nfsStatus(c, nfs3.ProcLookup, rpctest.DirOp(docs, nfd)); st != nfs3.StatusNoEnt {
			t.Fatalf("LOOKUP of the NFD spelling: status %d, want NOENT", st)
		}
		c.Create(docs, nfd)
		if got := listNames(t, c, docs); !slices.Equal(got, []string{nfd, nfc}) {
			t.Fatalf("the folder lists %+q, want both spellings", got)
		}
	})
}
