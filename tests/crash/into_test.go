package crash_test

// TestCommitIntoKilled kills a real `ovlnfs serve` with SIGKILL while it runs `ovlnfs
// commit --into=/bob /alice LAYER` (alice's changes handed over onto bob's stack), and
// checks that after the restart both workspaces are as they were, or both as the commit
// leaves them: bob showing alice's tree under his own changes, his objects with their
// fileids, alice her lowers alone. Never one handed over and the other not.
//
// CRASHTEST_INTO_KILLS (default 40) sets the number of kills; CRASHTEST_SEED the seed.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

func TestCommitIntoKilled(t *testing.T) {
	testenv.RequireRoot(t)
	kills := envInt(t, "CRASHTEST_INTO_KILLS", 40)
	seed := seedFromEnv(t)
	t.Logf("CRASHTEST_SEED=%d CRASHTEST_INTO_KILLS=%d", seed, kills)
	bin := testenv.BuildOvlnfs(t)
	base := commitTestDir(t)
	r := rand.New(rand.NewPCG(seed, 0x1270))
	// One unkilled run measures how long alice's journal is there.
	p := newPair(t, bin, r, mkdirTemp(t, base))
	span := p.run(-1)
	p.dispose()
	t.Logf("unkilled: alice's journal there for %v", span.Round(10*time.Microsecond))
	var old, handed, inside int
	for i := range kills {
		p := newPair(t, bin, r, mkdirTemp(t, base))
		p.iter = i
		delay := time.Duration(r.Int64N(int64(max(span, time.Millisecond)) + 1))
		wasInside := p.run(delay) > 0
		if t.Failed() {
			return
		}
		if wasInside {
			inside++
		}
		if p.handed {
			handed++
		} else {
			old++
		}
		p.dispose()
	}
	t.Logf("%d kills: %d left both as they were, %d handed over; %d with alice's journal there at the kill", kills, old, handed, inside)
}

// pair is two exports over one lower, /alice and /bob, for one kill.
type pair struct {
	served
	lower, layer         string
	aUpper, aWork        string
	bUpper, bWork        string
	lowers, a0, b0, bNew map[string]entry
	handed               bool
	bobPaths             []string
}

// newPair makes the lower, starts the server on both (empty) workspaces and changes them
// through NFS: alice many new files (so that moving them takes a while), a copy-up, a
// whiteout, a new directory; bob new files, a copy-up, a whiteout of his own.
func newPair(t *testing.T, bin string, r *rand.Rand, dir string) *pair {
	p := &pair{served: served{t: t, bin: bin, iter: -1, dir: dir}, lower: filepath.Join(dir, "lower"), layer: filepath.Join(dir, "alice-1")}
	p.aUpper, p.aWork = filepath.Join(dir, "alice", "upper"), filepath.Join(dir, "alice", "work")
	p.bUpper, p.bWork = filepath.Join(dir, "bob", "upper"), filepath.Join(dir, "bob", "work")
	for _, d := range []string{p.lower, p.aUpper, p.aWork, p.bUpper, p.bWork} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"d/x": "x", "d/y": "y", "gone/g": "g"}
	for i := range 8 {
		files[fmt.Sprintf("f%d", i)] = strings.Repeat("lower ", r.IntN(100))
	}
	for name, data := range files {
		full := filepath.Join(p.lower, name)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.conf = filepath.Join(dir, "exports")
	rule := "  clients 127.0.0.1(rw,insecure,no_root_squash)\n"
	conf := fmt.Sprintf("layer l %s\nexport /alice\n  lowers l\n  upper %s\n  work %s\n%sexport /bob\n  lowers l\n  upper %s\n  work %s\n%s",
		p.lower, p.aUpper, p.aWork, rule, p.bUpper, p.bWork, rule)
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.sock = filepath.Join(dir, "control.sock")
	p.port = testenv.FreePort(t)
	p.start()
	p.lowers = p.observe("/alice")
	p.change("/alice", func(c *client, root []byte) error {
		for i := range 200 + r.IntN(100) {
			if _, err := c.create(root, fmt.Sprintf("a%03d", i), 0o644); err != nil {
				return err
			}
		}
		fh, err := c.lookup(root, "f0")
		if err == nil {
			_, _, err = c.write(fh, 0, []byte("alice wrote"), 2)
		}
		if err == nil {
			err = c.remove(root, "f1")
		}
		if err == nil {
			err = c.mkdir(root, "alicedir", 0o755)
		}
		return err
	})
	p.change("/bob", func(c *client, root []byte) error {
		fh, err := c.create(root, "bobs", 0o644)
		if err == nil {
			_, _, err = c.write(fh, 0, []byte("bob's"), 2)
		}
		if err == nil {
			fh, err = c.lookup(root, "f2")
		}
		if err == nil {
			_, _, err = c.write(fh, 0, []byte("bob wrote"), 2)
		}
		if err == nil {
			err = c.remove(root, "f3")
		}
		return err
	})
	p.bobPaths = []string{"bobs", "f2"}
	p.a0, p.b0 = p.observe("/alice"), p.observe("/bob")
	// Handed over, bob shows alice's tree with his own changes over it.
	p.bNew = map[string]entry{}
	for k, v := range p.a0 {
		p.bNew[k] = v
	}
	for _, k := range p.bobPaths {
		p.bNew[k] = p.b0[k]
	}
	delete(p.bNew, "f3")
	return p
}

func (p *pair) mount(export string) (*client, []byte) {
	p.t.Helper()
	c, err := dial(fmt.Sprintf("127.0.0.1:%d", p.port), 0x6000_0000)
	if err != nil {
		p.fatalf("dial: %v", err)
	}
	r, err := c.call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), rpctest.Opaque([]byte(export)))
	if err != nil {
		p.fatalf("MNT %s: %v", export, err)
	}
	if st := r.Uint32(); st != 0 {
		p.fatalf("MNT %s: status %d", export, st)
	}
	return c, append([]byte(nil), r.Opaque()...)
}

func (p *pair) change(export string, fn func(c *client, root []byte) error) {
	p.t.Helper()
	c, root := p.mount(export)
	defer c.close()
	if err := fn(c, root); err != nil {
		p.fatalf("changing %s: %v", export, err)
	}
}

func (p *pair) observe(export string) map[string]entry {
	p.t.Helper()
	c, root := p.mount(export)
	defer c.close()
	out, _ := nfsTree(c, root, p.fatalf, nil)
	return out
}

// sameIDs is diffTrees plus the fileids.
func sameIDs(want, got map[string]entry) string {
	if d := diffTrees(want, got); d != "" {
		return d
	}
	var lines []string
	for k, e := range want {
		if got[k].fileid != e.fileid {
			lines = append(lines, fmt.Sprintf("  %s: fileid %d, want %d", k, got[k].fileid, e.fileid))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// run sends the commit and kills the server delay after alice's journal appeared (delay
// < 0: no kill, and the time the journal was there is returned); then it restarts the
// server and checks the result. Killed, it returns how long the journal had been there
// at the kill (0: it was gone or not there yet).
func (p *pair) run(delay time.Duration) time.Duration {
	p.t.Helper()
	journal := filepath.Join(p.aWork, "ovlnfs-commit.new")
	cmd := exec.Command(p.bin, "commit", "--control="+p.sock, "--into=/bob", "/alice", p.layer)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		p.fatalf("starting ovlnfs commit: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var appeared time.Time
	for deadline := time.Now().Add(30 * time.Second); ; {
		if exists(journal) {
			appeared = time.Now()
			break
		}
		if len(exited) > 0 || time.Now().After(deadline) {
			break
		}
	}
	var there time.Duration
	answered := false
	if delay < 0 {
		for exists(journal) {
		}
		there = time.Since(appeared)
		if err := <-exited; err != nil {
			p.fatalf("ovlnfs commit --into: %v\n%s", err, out.String())
		}
		answered = true
	} else {
		time.Sleep(time.Until(appeared.Add(delay)))
		p.srv.Kill()
		if exists(journal) {
			there = time.Since(appeared)
		}
		answered = <-exited == nil
	}
	p.srv.Kill()
	p.start()
	for _, j := range []string{filepath.Join(p.aWork, "ovlnfs-commit.new"), filepath.Join(p.bWork, "ovlnfs-commit.new"),
		filepath.Join(p.aWork, "ovlnfs-stack.tmp"), filepath.Join(p.bWork, "ovlnfs-stack.tmp"),
		filepath.Join(p.aWork, "ovlnfs-commit.done"), filepath.Join(p.bWork, "ovlnfs-commit.done")} {
		if exists(j) {
			p.fatalf("%s is left after the restart", j)
		}
	}
	a, b := p.observe("/alice"), p.observe("/bob")
	bStack, _, err := readStack(p.bWork)
	if err != nil {
		p.fatalf("%v", err)
	}
	aStack, _, err := readStack(p.aWork)
	if err != nil || len(aStack) != 0 {
		p.fatalf("alice's stack %v %v, want none", aStack, err)
	}
	p.handed = slices.Equal(bStack, []string{p.layer})
	switch {
	case p.handed:
		if !exists(p.layer) {
			p.fatalf("bob's stack names %s, which does not exist", p.layer)
		}
		if d := sameIDs(p.bNew, b); d != "" {
			p.fatalf("handed over: bob's tree is not alice's under his changes:\n%s", d)
		}
		if d := diffTrees(p.lowers, a); d != "" {
			p.fatalf("handed over: alice's tree is not her lowers:\n%s", d)
		}
	case len(bStack) != 0:
		p.fatalf("bob's stack is %v", bStack)
	default:
		if answered {
			p.fatalf("the commit was answered, and after the kill nothing was handed over")
		}
		if exists(p.layer) {
			p.fatalf("taken back, and %s is left", p.layer)
		}
		if d := sameIDs(p.a0, a); d != "" {
			p.fatalf("taken back: alice's tree is not the one before:\n%s", d)
		}
		if d := sameIDs(p.b0, b); d != "" {
			p.fatalf("taken back: bob's tree is not the one before:\n%s", d)
		}
	}
	return there
}
