// Package handles_test checks through a real NFS client (go-nfs-client over TCP to a real
// `ovlnfs serve` on 127.0.0.1) that file handles name objects, not paths or cache slots:
// they survive copy-up, renames of the object and of its ancestors, server restarts and
// cache eviction, and answer STALE once the object is gone.
package handles_test

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

type env struct {
	t                        *testing.T
	bin                      string
	lower1, lower2, up, work string
	port                     int
	srv                      *testenv.Server
	client                   *rpc.Client
	target                   *nfsc.Target
}

func (e *env) start() {
	e.t.Helper()
	e.srv = testenv.StartServer(e.t, e.bin, nil,
		"--lowerdir="+e.lower1+":"+e.lower2, "--upperdir="+e.up, "--workdir="+e.work,
		fmt.Sprintf("--listen=127.0.0.1:%d", e.port),
		// A small cache, so the traffic below evicts most captured handles' paths.
		"--handle-cache-entries=500")
	c, err := rpc.DialTCP("tcp", fmt.Sprintf("127.0.0.1:%d", e.port), false)
	if err != nil {
		e.t.Fatal(err)
	}
	m := &nfsc.Mount{Client: c}
	// As root: a call without credentials is the anonymous user, who may not write here.
	target, err := m.Mount("/", rpc.NewAuthUnix("handles", 0, 0).Auth())
	if err != nil {
		e.t.Fatal(err)
	}
	e.client, e.target = c, target
}

func (e *env) stop() {
	e.t.Helper()
	e.client.Close()
	if code, err := e.srv.Stop(10 * time.Second); err != nil || code != 0 {
		e.t.Fatalf("server stop: %d %v", code, err)
	}
}

type captured struct {
	path   string
	fh     []byte
	fileid uint64
}

func (e *env) capture(p string) captured {
	e.t.Helper()
	fi, fh, err := e.target.Lookup(p)
	if err != nil {
		e.t.Fatalf("lookup %s: %v", p, err)
	}
	return captured{path: p, fh: fh, fileid: fi.(*nfsc.Fattr).Fileid}
}

// check asks the server for the attributes of every captured handle: each must answer
// with its object's fileid, and LOOKUP of where the object is now must agree.
func (e *env) check(stage string, cs []captured, now map[string]string) {
	e.t.Helper()
	for _, c := range cs {
		attr, err := e.target.GetAttr(c.fh)
		if err != nil {
			e.t.Fatalf("%s: GETATTR of the handle of %s: %v", stage, c.path, err)
		}
		if attr.Fileid != c.fileid {
			e.t.Fatalf("%s: handle of %s answers fileid %d, want %d", stage, c.path, attr.Fileid, c.fileid)
		}
		if p, ok := now[c.path]; ok {
			e.checkListed(stage, c, p)
			fi, fh, err := e.target.Lookup(p)
			if err != nil {
				e.t.Fatalf("%s: lookup %s: %v", stage, p, err)
			}
			if id := fi.(*nfsc.Fattr).Fileid; id != c.fileid {
				e.t.Fatalf("%s: %s (was %s) has fileid %d via LOOKUP, want %d", stage, p, c.path, id, c.fileid)
			}
			if attr, err := e.target.GetAttr(fh); err != nil || attr.Fileid != c.fileid {
				e.t.Fatalf("%s: fresh handle of %s: %v %v", stage, p, attr, err)
			}
		}
	}
}

// checkListed: READDIRPLUS of the object's directory reports the same fileid (entry and
// attributes) and a handle naming the same object.
func (e *env) checkListed(stage string, c captured, p string) {
	e.t.Helper()
	if p == "" {
		return
	}
	dir, name := path.Split(p)
	entries, err := e.target.ReadDirPlus(strings.TrimSuffix(dir, "/"))
	if err != nil {
		e.t.Fatalf("%s: READDIRPLUS %q: %v", stage, dir, err)
	}
	for _, ent := range entries {
		if ent.FileName != name {
			continue
		}
		if ent.FileId != c.fileid || (ent.Attr.IsSet && ent.Attr.Attr.Fileid != c.fileid) {
			e.t.Fatalf("%s: READDIRPLUS lists %s with fileid %d / %d, want %d", stage, p, ent.FileId, ent.Attr.Attr.Fileid, c.fileid)
		}
		if ent.Handle.IsSet {
			attr, err := e.target.GetAttr(ent.Handle.FH)
			if err != nil || attr.Fileid != c.fileid {
				e.t.Fatalf("%s: READDIRPLUS handle of %s: %v %v", stage, p, attr, err)
			}
		}
		return
	}
	e.t.Fatalf("%s: READDIRPLUS of %q does not list %s", stage, dir, name)
}

func (e *env) expectStale(stage string, cs ...captured) {
	e.t.Helper()
	for _, c := range cs {
		_, err := e.target.GetAttr(c.fh)
		var nerr *nfsc.Error
		if !errors.As(err, &nerr) || nerr.ErrorNum != nfsc.NFS3ErrStale {
			e.t.Fatalf("%s: handle of removed %s: %v, want NFS3ERR_STALE", stage, c.path, err)
		}
	}
}

func TestHandlesThroughRealClient(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	e := &env{t: t, bin: testenv.BuildOvlnfs(t), port: testenv.FreePort(t),
		lower1: filepath.Join(root, "l1"), lower2: filepath.Join(root, "l2"),
		up: filepath.Join(root, "u"), work: filepath.Join(root, "w")}
	for _, d := range []string{e.lower1, e.lower2, e.up, e.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WriteFiles(t, e.lower1, map[string]string{"lfile": "lower", "chmodme": "c", "writeme": "w", "ldir/inside": "i"})
	testenv.WriteFiles(t, e.lower2, map[string]string{"deep/a/b/c/d/e/file": "deep", "deep/a/b/c/d/e/moveme": "m"})
	testenv.WriteFiles(t, e.up, map[string]string{"ufile": "upper", "udir/sub/f": "f", "gone-upper": "g"})
	testenv.WriteFiles(t, e.lower1, map[string]string{"gone-lower": "g"})
	// Many lower objects for the "other traffic".
	many := map[string]string{}
	for i := 0; i < 2000; i++ {
		many[fmt.Sprintf("many/f%04d", i)] = "x"
	}
	testenv.WriteFiles(t, e.lower2, many)

	e.start()
	paths := []string{"lfile", "chmodme", "writeme", "ldir", "ldir/inside", "deep", "deep/a/b/c/d/e",
		"deep/a/b/c/d/e/file", "deep/a/b/c/d/e/moveme", "ufile", "udir", "udir/sub", "udir/sub/f"}
	var cs []captured
	for _, p := range append(paths, "") {
		cs = append(cs, e.capture(p))
	}
	goneUpper, goneLower := e.capture("gone-upper"), e.capture("gone-lower")
	same := map[string]string{}
	for _, p := range paths {
		same[p] = p
	}
	e.check("fresh", cs, same)

	// Copy-up: chmod, and a write.
	if _, err := e.target.SetAttr(cs[1].fh, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: 0o600}}); err != nil {
		t.Fatal(err)
	}
	f, err := e.target.OpenFile("writeme", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("written through NFS")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := e.target.SetAttr(cs[7].fh, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: 0o640}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"chmodme", "writeme", "deep/a/b/c/d/e/file"} {
		if _, err := os.Stat(filepath.Join(e.up, p)); err != nil {
			t.Fatalf("%s was not copied up: %v", p, err)
		}
	}
	e.check("after copy-up", cs, same)

	// Rename objects (a lower file: copy-up and move; an upper file), an ancestor, and
	// directories with lower parts (moved with a redirect: their lower parts stay put).
	if _, err := e.target.Mkdir("newhome", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mv := range [][2]string{{"lfile", "newhome/lfile-moved"}, {"ufile", "newhome/ufile-moved"},
		{"deep/a/b/c/d/e/moveme", "newhome/moveme"}, {"udir", "newhome/udir-renamed"},
		{"ldir", "newhome/ldir-moved"}, {"deep/a/b", "deep-b"}} {
		if err := e.target.Rename(mv[0], mv[1]); err != nil {
			t.Fatalf("rename %s %s: %v", mv[0], mv[1], err)
		}
	}
	moved := map[string]string{}
	for k, v := range same {
		moved[k] = v
	}
	moved["lfile"] = "newhome/lfile-moved"
	moved["ufile"] = "newhome/ufile-moved"
	moved["deep/a/b/c/d/e/moveme"] = "newhome/moveme"
	moved["udir"] = "newhome/udir-renamed"
	moved["udir/sub"] = "newhome/udir-renamed/sub"
	moved["udir/sub/f"] = "newhome/udir-renamed/sub/f"
	moved["ldir"] = "newhome/ldir-moved"
	moved["ldir/inside"] = "newhome/ldir-moved/inside"
	moved["deep/a/b/c/d/e"] = "deep-b/c/d/e"
	moved["deep/a/b/c/d/e/file"] = "deep-b/c/d/e/file"
	e.check("after renames", cs, moved)

	// Removed objects: STALE, also once something new takes the name.
	if err := e.target.Remove("gone-upper"); err != nil {
		t.Fatal(err)
	}
	if err := e.target.Remove("gone-lower"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"gone-upper", "gone-lower"} {
		if _, err := e.target.Create(n, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.expectStale("after remove", goneUpper, goneLower)

	// Restart: a new process on the same layers.
	e.stop()
	e.start()
	e.check("after restart", cs, moved)
	e.expectStale("after restart", goneUpper, goneLower)

	// 100,000 other LOOKUPs (go-nfs-client walks from the root: two per path, over 2,000
	// objects, four times the handle cache), then the captured handles again.
	start := time.Now()
	const lookups = 100_000
	for i := 0; i < lookups/2; i++ {
		if _, _, err := e.target.Lookup(fmt.Sprintf("many/f%04d", i%2000)); err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	t.Logf("%d LOOKUPs in %v (%.1f us each)", lookups, time.Since(start).Round(time.Millisecond),
		float64(time.Since(start).Microseconds())/lookups)
	e.check("after 100k lookups", cs, moved)
	e.expectStale("after 100k lookups", goneUpper, goneLower)
	e.stop()
}
