package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// exportsServer is an in-process server of many exports on 127.0.0.1.
type exportsServer struct {
	srv  *server.Server
	addr string
	log  *rpctest.LockedBuffer
}

func startExports(t *testing.T, exports []server.Export) *exportsServer {
	t.Helper()
	log := &rpctest.LockedBuffer{}
	srv, err := server.New(server.Config{Exports: exports, ActAsCaller: os.Geteuid() == 0,
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	addr := rpctest.ServeBuilt(t, srv)
	return &exportsServer{srv: srv, addr: addr, log: log}
}

// sharedLower is a lower layer every workspace of a test stacks.
func sharedLower(t *testing.T) string {
	t.Helper()
	lower := filepath.Join(t.TempDir(), "lower")
	for name, data := range map[string]string{"shared.txt": "lower\n", "src/a.c": "int a;\n"} {
		p := filepath.Join(lower, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return lower
}

// workspace is an export at path over lowers with an upper and workdir of its own under
// root.
func workspace(t *testing.T, root, path string, rules string, lowers ...string) server.Export {
	t.Helper()
	dir := filepath.Join(root, filepath.Base(path))
	e := server.Export{Path: path, Lowers: lowers, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"),
		Clients: mustRules(t, rules)}
	for _, d := range []string{e.Upper, e.Work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func mustRules(t *testing.T, specs ...string) clients.Rules {
	t.Helper()
	var rs clients.Rules
	for _, s := range specs {
		r, err := clients.ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// dialFrom connects to addr from the source address src (127.0.0.2 is on loopback too).
func dialFrom(t *testing.T, src, addr string) *rpctest.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return rpctest.New(t, conn)
}

func write(t *testing.T, c *rpctest.Client, fh []byte, data string) {
	t.Helper()
	c.Write(fh, 0, []byte(data), rpctest.FileSync)
}

func getattrStatus(c *rpctest.Client, fh []byte) nfs3.Status {
	st, _ := c.NFS(nfs3.ProcGetattr, rpctest.Opaque(fh))
	return st
}

// TestFiftyWorkspaces: 50 exports over one lower layer, each written by its own client at
// once, a new file and a copy-up of the same lower file: each client sees only its own
// writes, each upper holds only its own export's files, the lower is untouched, and every
// export has an fsid of its own.
func TestFiftyWorkspaces(t *testing.T) {
	root := t.TempDir()
	lower := sharedLower(t)
	var exports []server.Export
	for i := range 50 {
		exports = append(exports, workspace(t, root, fmt.Sprintf("/ws/u%02d", i), "127.0.0.1(rw,insecure,no_root_squash)", lower))
	}
	s := startExports(t, exports)
	var wg sync.WaitGroup
	fsids := make([]uint64, len(exports))
	for i, e := range exports {
		wg.Go(func() {
			c := rpctest.Dial(t, s.addr)
			me := filepath.Base(e.Path)
			wsRoot := c.Mount(e.Path)
			f := c.Create(wsRoot, "mine-"+me)
			write(t, c, f, me)
			write(t, c, c.Lookup(wsRoot, "shared.txt"), me+" wrote this\n")
			fsids[i] = c.Getattr(wsRoot).Fsid
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	c := rpctest.Dial(t, s.addr)
	for _, e := range exports {
		me := filepath.Base(e.Path)
		wsRoot := c.Mount(e.Path)
		if got := listNames(t, c, wsRoot); !slices.Equal(got, []string{"mine-" + me, "shared.txt", "src"}) {
			t.Errorf("%s lists %v", e.Path, got)
		}
		if got := string(readAll(c, c.Lookup(wsRoot, "shared.txt"))); got != me+" wrote this\n" {
			t.Errorf("%s: shared.txt reads %q, want its own write", e.Path, got)
		}
		entries, err := os.ReadDir(e.Upper)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range entries {
			names = append(names, d.Name())
		}
		if !slices.Equal(names, []string{"mine-" + me, "shared.txt"}) {
			t.Errorf("upper of %s holds %v", e.Path, names)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(lower, "shared.txt")); string(data) != "lower\n" {
		t.Errorf("the lower file was changed: %q", data)
	}
	sorted := slices.Clone(fsids)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if len(slices.Compact(sorted)) != len(exports) {
		t.Errorf("exports share fsids: %v", fsids)
	}
}

// TestHandleOfAnotherExport: a handle names its export. Alice's handle of a file in her
// upper, with bob's export id written into it, is STALE on bob's export, though both stack
// the same lowers; an unmodified handle keeps working.
func TestHandleOfAnotherExport(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	alice := workspace(t, root, "/ws/alice", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	bob := workspace(t, root, "/ws/bob", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{alice, bob})
	c := rpctest.Dial(t, s.addr)
	aliceRoot, bobRoot := c.Mount(alice.Path), c.Mount(bob.Path)
	secret := c.Create(aliceRoot, "secret")
	write(t, c, secret, "alice only")
	src := c.Lookup(aliceRoot, "src")
	aliceID, bobID := binary.BigEndian.Uint32(aliceRoot[1:5]), binary.BigEndian.Uint32(bobRoot[1:5])
	if aliceID == bobID {
		t.Fatalf("alice and bob have the same export id %08x", aliceID)
	}
	for name, fh := range map[string][]byte{"alice's upper file": secret, "alice's root": aliceRoot} {
		forged := slices.Clone(fh)
		binary.BigEndian.PutUint32(forged[1:5], bobID)
		if st := getattrStatus(c, forged); st != nfs3.StatusStale {
			t.Errorf("%s with bob's export id: status %d, want STALE", name, st)
		}
		st, _ := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(forged, 0, 100))
		if st != nfs3.StatusStale && name == "alice's upper file" {
			t.Errorf("READ of %s with bob's export id: status %d, want STALE", name, st)
		}
	}
	if got := string(readAll(c, secret)); got != "alice only" {
		t.Errorf("alice's handle reads %q", got)
	}
	if st := getattrStatus(c, src); st != nfs3.StatusOK {
		t.Errorf("alice's handle of a lower directory: status %d", st)
	}
	// A handle of neither export (an unknown id) is STALE too.
	unknown := slices.Clone(secret)
	binary.BigEndian.PutUint32(unknown[1:5], aliceID^bobID^0x5a5a5a5a)
	if st := getattrStatus(c, unknown); st != nfs3.StatusStale {
		t.Errorf("a handle of no export: status %d, want STALE", st)
	}
}

// TestClientRules: a client no rule of an export admits cannot mount it (MNT3ERR_ACCES)
// or use a handle of it got elsewhere (AUTH_TOOWEAK); a client with an ro rule reads but
// changes nothing (ROFS), and ACCESS grants it no change; EXPORT lists each export with
// its clients.
func TestClientRules(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	only1 := workspace(t, root, "/only1", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	mixed := workspace(t, root, "/mixed", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	mixed.Clients = append(mixed.Clients, mustRules(t, "127.0.0.0/8(ro,insecure,no_root_squash)")...)
	s := startExports(t, []server.Export{only1, mixed})

	one := rpctest.Dial(t, s.addr)
	two := dialFrom(t, "127.0.0.2", s.addr)
	only1Root := one.Mount("/only1")
	if st, _ := two.TryMount("/only1"); st != 13 {
		t.Errorf("MNT /only1 from 127.0.0.2: status %d, want 13 (MNT3ERR_ACCES)", st)
	}
	if st, _ := two.TryMount("/only1/src"); st != 13 {
		t.Errorf("MNT /only1/src from 127.0.0.2: status %d, want 13", st)
	}
	if st, _ := two.TryMount("/nothing"); st != 2 {
		t.Errorf("MNT of no export: status %d, want 2 (MNT3ERR_NOENT)", st)
	}
	for _, proc := range []nfs3.Proc{nfs3.ProcGetattr, nfs3.ProcReaddirplus, nfs3.ProcFsinfo} {
		reply := two.Call(nfs3.ProgramNumber, nfs3.Version, uint32(proc), rpctest.Opaque(only1Root))
		if stat, detail, ok := rpctest.Rejection(reply); !ok || stat != 1 || detail != oncrpc.AuthTooWeak {
			t.Errorf("procedure %d from 127.0.0.2 with a handle of /only1: %x, want AUTH_TOOWEAK", proc, reply)
		}
	}

	rw, ro := one.Mount("/mixed"), two.Mount("/mixed")
	f := one.Create(rw, "f")
	write(t, one, f, "written by .1")
	if got := string(readAll(two, f)); got != "written by .1" {
		t.Errorf("the ro client reads %q", got)
	}
	if st, _ := two.NFS(nfs3.ProcCreate, rpctest.CreateArgs(ro, "g", rpctest.CreateGuarded, rpctest.SattrMode(0o644))); st != nfs3.StatusROFS {
		t.Errorf("CREATE by the ro client: status %d, want ROFS", st)
	}
	if st, _ := two.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, 0, []byte("x"), rpctest.FileSync)); st != nfs3.StatusROFS {
		t.Errorf("WRITE by the ro client: status %d, want ROFS", st)
	}
	size := uint64(0)
	if st, _ := two.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, rpctest.Sattr{Size: &size}, nil)); st != nfs3.StatusROFS {
		t.Errorf("SETATTR by the ro client: status %d, want ROFS", st)
	}
	if st, _ := two.NFS(nfs3.ProcRemove, rpctest.DirOp(ro, "f")); st != nfs3.StatusROFS {
		t.Errorf("REMOVE by the ro client: status %d, want ROFS", st)
	}
	if bits, _ := two.Access(f); bits&(rpctest.AccessModify|rpctest.AccessExtend|rpctest.AccessDelete) != 0 {
		t.Errorf("ACCESS for the ro client grants %#x", bits)
	}
	if bits, _ := one.Access(f); bits&rpctest.AccessModify == 0 {
		t.Errorf("ACCESS for the rw client grants %#x, no MODIFY", bits)
	}
	if got := string(readAll(one, f)); got != "written by .1" {
		t.Errorf("after the ro client's tries the file reads %q", got)
	}
	groups := one.ExportGroups()
	want := map[string][]string{"/mixed": {"127.0.0.1", "127.0.0.0/8"}, "/only1": {"127.0.0.1"}}
	if fmt.Sprint(groups) != fmt.Sprint(want) {
		t.Errorf("EXPORT lists %v, want %v", groups, want)
	}
}

// TestSecureByDefault: an export whose rule does not say insecure refuses MNT from an
// unprivileged source port, as mountd does, and its NFS calls with AUTH_TOOWEAK; from a
// privileged port (as root) both are served.
func TestSecureByDefault(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	s := startExports(t, []server.Export{workspace(t, root, "/secure", "127.0.0.1(rw)", lower),
		workspace(t, root, "/open", "127.0.0.1(rw,insecure)", lower)})
	c := rpctest.Dial(t, s.addr)
	if st, _ := c.TryMount("/secure"); st != 13 {
		t.Errorf("MNT of a secure export from port %v: status %d, want 13", c.Conn().LocalAddr(), st)
	}
	openRoot := c.Mount("/open")
	if st := getattrStatus(c, openRoot); st != nfs3.StatusOK {
		t.Errorf("GETATTR on the insecure export: %d", st)
	}
	if os.Geteuid() != 0 {
		requireRoot(t, "a privileged source port")
		return
	}
	pc := rpctest.New(t, privilegedConn(t, s.addr))
	secureRoot := pc.Mount("/secure")
	if st := getattrStatus(pc, secureRoot); st != nfs3.StatusOK {
		t.Errorf("GETATTR from a privileged port: %d", st)
	}
	reply := c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcGetattr), rpctest.Opaque(secureRoot))
	if stat, detail, ok := rpctest.Rejection(reply); !ok || stat != 1 || detail != oncrpc.AuthTooWeak {
		t.Errorf("GETATTR on the secure export from an unprivileged port: %x, want AUTH_TOOWEAK", reply)
	}
}

func privilegedConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	var err error
	for port := 1023; port > 600; port-- {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
		conn, derr := d.Dial("tcp", addr)
		if derr == nil {
			return conn
		}
		err = derr
	}
	t.Fatalf("no privileged source port to dial from: %v", err)
	return nil
}

// requireRoot skips a part that needs root, loudly, and fails under CI, which runs as
// root.
func requireRoot(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI runs as root, and this test needs it for %s", what)
	}
	t.Skipf("not root: %s is not tried", what)
}

// TestSquashing: root is squashed by default (what it creates is nobody's, and it cannot
// read or truncate another user's private file); no_root_squash keeps root; all_squash serves every
// caller as anonuid/anongid; a call without credentials (AUTH_NONE) is the anonymous user.
func TestSquashing(t *testing.T) {
	if os.Geteuid() != 0 {
		requireRoot(t, "giving created files to the caller")
	}
	root, lower := t.TempDir(), sharedLower(t)
	private := filepath.Join(lower, "private")
	if err := os.WriteFile(private, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(private, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	exports := []server.Export{
		workspace(t, root, "/squash", "127.0.0.1(rw,insecure)", lower),
		workspace(t, root, "/keep", "127.0.0.1(rw,insecure,no_root_squash)", lower),
		workspace(t, root, "/all", "127.0.0.1(rw,insecure,all_squash,anonuid=2000,anongid=3000)", lower),
	}
	for _, e := range exports {
		// Anyone may create in the roots: the owners show who the server made them as.
		if err := os.Chmod(e.Upper, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	s := startExports(t, exports)
	c := rpctest.Dial(t, s.addr) // root
	owner := func(c *rpctest.Client, export, name string) (uint32, uint32) {
		fh := c.Create(c.Mount(export), name)
		a := c.Getattr(fh)
		return a.UID, a.GID
	}
	if uid, gid := owner(c, "/squash", "by-root"); uid != clients.Nobody || gid != clients.Nobody {
		t.Errorf("root's file on a root_squash export: %d:%d, want %d:%d", uid, gid, clients.Nobody, clients.Nobody)
	}
	if uid, gid := owner(c, "/keep", "by-root"); uid != 0 || gid != 0 {
		t.Errorf("root's file on a no_root_squash export: %d:%d, want 0:0", uid, gid)
	}
	if st, _ := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(c.Lookup(c.Mount("/squash"), "private"), 0, 100)); st != nfs3.StatusAcces {
		t.Errorf("squashed root reads a 0600 file of uid 1000: status %d, want ACCES", st)
	}
	zero := uint64(0)
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(c.Lookup(c.Mount("/squash"), "private"), rpctest.Sattr{Size: &zero}, nil)); st != nfs3.StatusAcces {
		t.Errorf("squashed root truncates a 0600 file of uid 1000: status %d, want ACCES", st)
	}
	if st, _ := c.NFS(nfs3.ProcRead, rpctest.ReadArgs(c.Lookup(c.Mount("/keep"), "private"), 0, 100)); st != nfs3.StatusOK {
		t.Errorf("unsquashed root reads a 0600 file: status %d", st)
	}
	u := rpctest.Dial(t, s.addr)
	u.As(1000, 1000)
	if uid, gid := owner(u, "/all", "by-1000"); uid != 2000 || gid != 3000 {
		t.Errorf("uid 1000's file on an all_squash export: %d:%d, want 2000:3000", uid, gid)
	}
	if st, _ := u.NFS(nfs3.ProcRead, rpctest.ReadArgs(u.Lookup(u.Mount("/keep"), "private"), 0, 100)); st != nfs3.StatusOK {
		t.Errorf("uid 1000 reads its own file: status %d", st)
	}
	anon := rpctest.Dial(t, s.addr)
	anon.SetCredential(oncrpc.AuthNone, nil)
	if uid, gid := owner(anon, "/keep", "by-nobody"); uid != clients.Nobody || gid != clients.Nobody {
		t.Errorf("an AUTH_NONE call's file: %d:%d, want the anonymous user", uid, gid)
	}
	if st, _ := anon.NFS(nfs3.ProcRead, rpctest.ReadArgs(anon.Lookup(anon.Mount("/keep"), "private"), 0, 100)); st != nfs3.StatusAcces {
		t.Errorf("an AUTH_NONE call reads a 0600 file: status %d, want ACCES", st)
	}
}

// TestReconfigureUnderLoad: while clients keep reading and writing export a, exports are
// added, removed, re-ruled and re-layered, 40 times: no call of theirs fails. Afterwards a
// removed export's handles are STALE, a re-layered export's old handles are STALE, and new
// rules apply.
func TestReconfigureUnderLoad(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	a := workspace(t, root, "/a", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	b := workspace(t, root, "/b", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	// Without the index, b's upper may be stacked on other lowers: re-layering keeps the
	// upper, so the new union opens only once the old one has closed.
	b.Index = "off"
	cx := workspace(t, root, "/c", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{a, b, cx})
	c := rpctest.Dial(t, s.addr)
	cRoot, bRoot := c.Mount("/c"), c.Mount("/b")
	cFile := c.Create(cRoot, "in-c")

	stop := make(chan struct{})
	var calls atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			lc := rpctest.Dial(t, s.addr)
			f := lc.Create(lc.Mount("/a"), fmt.Sprintf("load-%d", w))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				data := fmt.Sprintf("%d/%d", w, i)
				lc.Write(f, 0, []byte(data), rpctest.FileSync) // fails the test on any error
				if got, _ := lc.Read(f, 0, 64); string(got) != data {
					t.Errorf("worker %d read %q after writing %q", w, got, data)
					return
				}
				calls.Add(2)
			}
		})
	}
	bRO := b
	bRO.Clients = mustRules(t, "127.0.0.1(ro,insecure,no_root_squash)")
	bRelayered := b
	bRelayered.Lowers = []string{other, lower}
	configs := [][]server.Export{{a, b}, {a, bRO, cx}, {a, b, cx}, {a, bRelayered}, {a, b, cx}}
	for i := range 40 {
		if err := s.srv.Reconfigure(configs[i%len(configs)]); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The last: a and a read-only b; c removed.
	if err := s.srv.Reconfigure([]server.Export{a, bRO}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if calls.Load() < 40 {
		t.Errorf("only %d calls ran during the reloads", calls.Load())
	}
	if st := getattrStatus(c, cFile); st != nfs3.StatusStale {
		t.Errorf("a handle of the removed export: status %d, want STALE", st)
	}
	if st, _ := c.TryMount("/c"); st != 2 {
		t.Errorf("MNT of the removed export: status %d, want 2", st)
	}
	if st, _ := c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(bRoot, "x", rpctest.CreateGuarded, rpctest.SattrMode(0o644))); st != nfs3.StatusROFS {
		t.Errorf("CREATE on b after its rule became ro: status %d, want ROFS", st)
	}
	if err := s.srv.Reconfigure([]server.Export{a, bRelayered}); err != nil {
		t.Fatal(err)
	}
	if st := getattrStatus(c, bRoot); st != nfs3.StatusStale {
		t.Errorf("b's old root handle after b got other layers: status %d, want STALE", st)
	}
	if st := getattrStatus(c, c.Mount("/b")); st != nfs3.StatusOK {
		t.Errorf("b's new root: status %d", st)
	}
}

// TestReconfigureRefusal: a configuration that cannot be opened changes nothing: the
// exports served stay, and none of the new ones appears.
func TestReconfigureRefusal(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	a := workspace(t, root, "/a", "127.0.0.1(rw,insecure)", lower)
	s := startExports(t, []server.Export{a})
	c := rpctest.Dial(t, s.addr)
	aRoot := c.Mount("/a")
	d := workspace(t, root, "/d", "127.0.0.1(rw,insecure)", lower)
	bad := server.Export{Path: "/bad", Lowers: []string{filepath.Join(root, "missing")}, Clients: mustRules(t, "*(ro)")}
	if err := s.srv.Reconfigure([]server.Export{a, d, bad}); err == nil {
		t.Fatal("a configuration with a missing lower was taken")
	}
	if st, _ := c.TryMount("/d"); st != 2 {
		t.Errorf("MNT /d after the refused reload: status %d, want 2 (not served)", st)
	}
	if st := getattrStatus(c, aRoot); st != nfs3.StatusOK {
		t.Errorf("/a after the refused reload: status %d", st)
	}
	// d's workdir was released: a later reload can open it.
	if err := s.srv.Reconfigure([]server.Export{a, d}); err != nil {
		t.Fatalf("reload with d: %v", err)
	}
	c.Mount("/d")
	if got := c.ExportGroups(); len(got) != 2 {
		t.Errorf("EXPORT lists %v", got)
	}
}

// TestLocksFollowClientRules: the lock manager serves a client only the files of exports
// whose rules admit it (others' handles are answered as stale), and the same lower file
// locked through two workspaces is two files.
func TestLocksFollowClientRules(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	alice := workspace(t, root, "/ws/alice", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	bob := workspace(t, root, "/ws/bob", "127.0.0.0/8(rw,insecure,no_root_squash)", lower)
	s := startLockingServer(t, server.Config{Exports: []server.Export{alice, bob}, LockState: filepath.Join(root, "state")})
	c := rpctest.Dial(t, s.nfs)
	aliceFile := c.Lookup(c.Mount("/ws/alice"), "shared.txt")
	bobFile := c.Lookup(c.Mount("/ws/bob"), "shared.txt")
	one := &rpctest.NLMClient{Addr: s.nlmTCP, Netid: "tcp", Vers: 4, Name: "one"}
	two := &rpctest.NLMClient{Addr: s.nlmTCP, Netid: "tcp", Vers: 4, Name: "two",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			return d.DialContext(ctx, network, addr)
		}}
	if st, err := one.Lock(nlm.LockArgs{Exclusive: true, Lock: one.LockOf(aliceFile, 1, 0, 0), State: 1}); err != nil || st != nlm.StatGranted {
		t.Fatalf("LOCK through alice: %d %v", st, err)
	}
	// The same lower file through bob is another file: not locked.
	if st, err := two.Lock(nlm.LockArgs{Exclusive: true, Lock: two.LockOf(bobFile, 2, 0, 0), State: 1}); err != nil || st != nlm.StatGranted {
		t.Fatalf("LOCK through bob by 127.0.0.2: %d %v", st, err)
	}
	if st, err := two.Lock(nlm.LockArgs{Exclusive: true, Lock: two.LockOf(aliceFile, 2, 0, 0), State: 1}); err != nil || st != nlm.StatStaleFH {
		t.Fatalf("LOCK through alice by 127.0.0.2, which alice's rules refuse: %d %v, want stale", st, err)
	}
	res, err := two.Test(true, two.LockOf(aliceFile, 2, 0, 0))
	if err != nil || res.Stat != nlm.StatStaleFH {
		t.Fatalf("TEST through alice by 127.0.0.2: %+v %v, want stale", res, err)
	}
}

// TestSnapshotAndResetWhileServing: a workspace snapshotted, changed and reset while a
// client holds handles and another keeps calling: after a reset to the snapshot the
// snapshot's tree is served, a handle of an object made since answers STALE, and so does
// one of a file the workspace made before (restored, it is a copy), while the root's and
// a copied-up lower file's keep working; a reset to the lowers serves the lowers; the calls on the workspace's root and
// on another export never fail, they only wait.
func TestSnapshotAndResetWhileServing(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	ws := workspace(t, root, "/ws", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	other := workspace(t, root, "/other", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{ws, other})
	c := rpctest.Dial(t, s.addr)
	wsRoot := c.Mount("/ws")
	made := c.Create(wsRoot, "made")
	write(t, c, made, "in the snapshot")
	shared := c.Lookup(wsRoot, "shared.txt")
	write(t, c, shared, "copied up before the snapshot\n")

	stop := make(chan struct{})
	var calls atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		lc := rpctest.Dial(t, s.addr)
		r := lc.Mount("/ws")
		o := lc.Create(lc.Mount("/other"), "busy")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st := getattrStatus(lc, r); st != nfs3.StatusOK {
				t.Errorf("GETATTR of the workspace root during the resets: %d", st)
				return
			}
			lc.Write(o, 0, []byte("other export"), rpctest.FileSync)
			calls.Add(2)
		}
	})

	if _, err := s.srv.Snapshot("/ws", "s1"); err != nil {
		t.Fatal(err)
	}
	later := c.Create(wsRoot, "later")
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(c.Lookup(wsRoot, "src"), "a.c")); st != nfs3.StatusOK {
		t.Fatalf("REMOVE src/a.c: %d", st)
	}
	if err := s.srv.Reset("/ws", "s1"); err != nil {
		t.Fatal(err)
	}
	if st := getattrStatus(c, later); st != nfs3.StatusStale {
		t.Errorf("a handle of a file made after the snapshot: status %d, want STALE", st)
	}
	// A file the workspace made is a copy once restored, a new object: its old handle is
	// STALE, its name finds the copy. Objects of the lowers keep their identity.
	if st := getattrStatus(c, made); st != nfs3.StatusStale {
		t.Errorf("the old handle of a restored upper-only file: status %d, want STALE", st)
	}
	made = c.Lookup(wsRoot, "made")
	if got := string(readAll(c, made)); got != "in the snapshot" {
		t.Errorf("a file of the snapshot: %q", got)
	}
	if got := string(readAll(c, shared)); got != "copied up before the snapshot\n" {
		t.Errorf("the copied-up file, by its old handle: %q", got)
	}
	if got := listNames(t, c, wsRoot); !slices.Equal(got, []string{"made", "shared.txt", "src"}) {
		t.Errorf("after the reset to s1 the root lists %v", got)
	}
	if got := listNames(t, c, c.Lookup(wsRoot, "src")); !slices.Equal(got, []string{"a.c"}) {
		t.Errorf("src lists %v after the reset (a.c was removed after the snapshot)", got)
	}

	if err := s.srv.Reset("/ws", ""); err != nil {
		t.Fatal(err)
	}
	if st := getattrStatus(c, made); st != nfs3.StatusStale {
		t.Errorf("a handle of an upper-only file after the reset to the lowers: status %d, want STALE", st)
	}
	if got := string(readAll(c, shared)); got != "lower\n" {
		t.Errorf("the lower file after the reset to the lowers: %q", got)
	}
	if entries, _ := os.ReadDir(ws.Upper); len(entries) != 0 {
		t.Errorf("the upper holds %d entries after the reset to the lowers", len(entries))
	}
	list, err := s.srv.Snapshots("/ws")
	if err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Errorf("snapshots: %+v %v", list, err)
	}
	if err := s.srv.Reset("/ws", "nope"); err == nil {
		t.Error("a reset to a missing snapshot was taken")
	}
	if err := s.srv.Reset("/nope", ""); !errors.Is(err, server.ErrNoExport) {
		t.Errorf("a reset of no export: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if calls.Load() == 0 {
		t.Error("no call ran during the resets")
	}
}

// TestCommitWhileServing: a workspace committed while a client holds handles of what it
// made, of a copied-up lower file and of directories: every handle keeps working with the
// same content and fileid, the tree is the same, the upper is empty, new writes land in it,
// and a second commit stacks another layer.
func TestCommitWhileServing(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	ws := workspace(t, root, "/ws", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{ws})
	c := rpctest.Dial(t, s.addr)
	wsRoot := c.Mount("/ws")
	made := c.Create(wsRoot, "made")
	write(t, c, made, "made before the commit")
	shared := c.Lookup(wsRoot, "shared.txt")
	write(t, c, shared, "copied up before the commit\n")
	src := c.Lookup(wsRoot, "src")
	newDir := c.Mkdir(wsRoot, "newdir")
	inNew := c.Create(newDir, "inner")
	before := map[string]rpctest.Fattr{}
	for name, fh := range map[string][]byte{"made": made, "shared": shared, "src": src, "newdir": newDir, "inner": inNew, "root": wsRoot} {
		before[name] = c.Getattr(fh)
	}
	layer1 := filepath.Join(root, "layer-1")
	info, err := s.srv.Commit("/ws", layer1, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Layer != layer1 {
		t.Errorf("commit: %+v", info)
	}
	for name, fh := range map[string][]byte{"made": made, "shared": shared, "src": src, "newdir": newDir, "inner": inNew, "root": wsRoot} {
		st, r := c.NFS(nfs3.ProcGetattr, rpctest.Opaque(fh))
		if st != nfs3.StatusOK {
			t.Errorf("%s after the commit: status %d", name, st)
			continue
		}
		if a := rpctest.GetFattr(r); a.Fileid != before[name].Fileid {
			t.Errorf("%s: fileid %d after the commit, %d before", name, a.Fileid, before[name].Fileid)
		}
	}
	if got := string(readAll(c, made)); got != "made before the commit" {
		t.Errorf("made reads %q", got)
	}
	if got := string(readAll(c, shared)); got != "copied up before the commit\n" {
		t.Errorf("shared.txt reads %q", got)
	}
	if entries, _ := os.ReadDir(ws.Upper); len(entries) != 0 {
		t.Errorf("the upper holds %d entries after the commit", len(entries))
	}
	write(t, c, made, "written after")
	if _, err := os.Stat(filepath.Join(ws.Upper, "made")); err != nil {
		t.Errorf("a write after the commit is not in the upper: %v", err)
	}
	if got := string(readAll(c, made)); got != "written afterhe commit" {
		t.Errorf("made after a write: %q", got)
	}
	if a := c.Getattr(made); a.Fileid != before["made"].Fileid {
		t.Errorf("made's fileid changed when copied up from the committed layer")
	}
	if got := listNames(t, c, wsRoot); !slices.Equal(got, []string{"made", "newdir", "shared.txt", "src"}) {
		t.Errorf("the root lists %v", got)
	}
	layer2 := filepath.Join(root, "layer-2")
	if _, err := s.srv.Commit("/ws", layer2, false, "", nil); err != nil {
		t.Fatal(err)
	}
	if got := string(readAll(c, made)); got != "written afterhe commit" {
		t.Errorf("made after the second commit: %q", got)
	}
	if _, err := s.srv.Commit("/ws", layer2, false, "", nil); err == nil {
		t.Error("a commit into an existing directory was taken")
	}
}

// A snapshot stops only the workspace's changes: reads are answered while it copies the
// upper, a change waits for it, and the snapshot holds what was there before the change.
func TestSnapshotLetsReadsThrough(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	ws := workspace(t, root, "/ws", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	// A big upper file makes the snapshot's copy last (ext4 copies, it cannot reflink).
	big, err := os.Create(filepath.Join(ws.Upper, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("snapshot"), 1<<17)
	for range 512 {
		if _, err := big.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := big.Close(); err != nil {
		t.Fatal(err)
	}
	s := startExports(t, []server.Export{ws})
	c := rpctest.Dial(t, s.addr)
	r := c.Mount("/ws")
	small := c.Create(r, "small")
	write(t, c, small, "before")

	var ended atomic.Int64 // when Snapshot returned, in UnixNano
	done := make(chan error, 1)
	go func() {
		_, err := s.srv.Snapshot("/ws", "s1")
		ended.Store(time.Now().UnixNano())
		done <- err
	}()
	copying := filepath.Join(ws.Work, "ovlnfs-snapshots", ".tmp-s1", "upper")
	for {
		if _, err := os.Lstat(copying); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the snapshot ended (%v) before its copy could be seen", err)
		case <-time.After(time.Millisecond):
		}
	}
	if got := string(readAll(c, small)); got != "before" {
		t.Fatalf("READ during the snapshot: %q", got)
	}
	if st := getattrStatus(c, r); st != nfs3.StatusOK {
		t.Fatalf("GETATTR during the snapshot: %d", st)
	}
	if names := listNames(t, c, r); !slices.Contains(names, "small") {
		t.Fatalf("READDIRPLUS during the snapshot: %v", names)
	}
	readsDone := time.Now().UnixNano()
	if e := ended.Load(); e != 0 && e < readsDone {
		t.Fatal("the reads were answered only after the snapshot ended")
	}
	c.Write(small, 0, []byte("after!"), rpctest.FileSync)
	wrote := time.Now().UnixNano()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Snapshot's return is stamped a moment after it let the changes go.
	if e := ended.Load(); wrote < e-int64(50*time.Millisecond) {
		t.Fatalf("a WRITE was answered %v before the snapshot ended", time.Duration(e-wrote))
	}
	got, err := os.ReadFile(filepath.Join(ws.Work, "ovlnfs-snapshots", "s1", "upper", "small"))
	if err != nil || string(got) != "before" {
		t.Fatalf("the snapshot's small: %q (%v), want what was there before the WRITE", got, err)
	}
}

// A flattened commit copies what the lowers hold with only the export's changes stopped:
// reads are answered while it copies, and the commit then finishes as usual.
func TestFlattenStageLetsReadsThrough(t *testing.T) {
	root, lower := t.TempDir(), sharedLower(t)
	// A big lower file makes the stage's copy last (ext4 copies, it cannot reflink).
	big, err := os.Create(filepath.Join(lower, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("flatten!"), 1<<17)
	for range 512 {
		if _, err := big.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := big.Close(); err != nil {
		t.Fatal(err)
	}
	ws := workspace(t, root, "/ws", "127.0.0.1(rw,insecure,no_root_squash)", lower)
	s := startExports(t, []server.Export{ws})
	c := rpctest.Dial(t, s.addr)
	r := c.Mount("/ws")
	small := c.Create(r, "small")
	write(t, c, small, "before")

	var ended atomic.Int64
	done := make(chan error, 1)
	go func() {
		_, err := s.srv.Commit("/ws", filepath.Join(root, "flat"), true, "", nil)
		ended.Store(time.Now().UnixNano())
		done <- err
	}()
	staging := filepath.Join(ws.Work, "ovlnfs-flatten.new")
	for {
		if _, err := os.Lstat(staging); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the commit ended (%v) before its stage could be seen", err)
		case <-time.After(time.Millisecond):
		}
	}
	if got := string(readAll(c, small)); got != "before" {
		t.Fatalf("READ during the stage: %q", got)
	}
	if st := getattrStatus(c, r); st != nfs3.StatusOK {
		t.Fatalf("GETATTR during the stage: %d", st)
	}
	if e := ended.Load(); e != 0 && e < time.Now().UnixNano() {
		t.Fatal("the reads were answered only after the commit ended")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := string(readAll(c, small)); got != "before" {
		t.Fatalf("READ after the flattened commit: %q", got)
	}
}
