package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// spec describes one set of layers. Every byte of them follows from it: generating
// twice gives identical layers, which is how both contenders get their own copy.
type spec struct {
	BigMiB, MidMiB int // the big and the middle-sized lower file (also a second mid for random writes)
	DirFiles       int // files in the flat directory dir10k
	TreeFiles      int // files in the toolchain-like tree
	Seed           uint64
	TreeOnly       bool // only the tree (the tree-scaling series)
}

func (s spec) String() string {
	return fmt.Sprintf("big%d-mid%d-dir%d-tree%d-seed%d-only%v", s.BigMiB, s.MidMiB, s.DirFiles, s.TreeFiles, s.Seed, s.TreeOnly)
}

// Names in the export root.
const (
	bigName   = "big"    // the 1 GiB lower file: sequential reads, 4 readers, copy-up
	midName   = "mid"    // the 64 MiB lower file: random reads
	rwName    = "rw64"   // a second 64 MiB lower file: copied up, then random writes
	dirName   = "dir10k" // the flat directory
	treeName  = "tree"   // the toolchain-like tree
	writeName = "seqw"   // prefix of the new files of the sequential-write job
)

type tfile struct {
	rel  string // relative to the tree's root
	size int
	seed uint64
}

// tree is the model of the toolchain-like tree: what each layer holds and what the
// merged view shows.
type tree struct {
	dirs      []string // lower directories, relative to the tree root ("" is the root)
	lower     []tfile
	overrides []tfile // upper files replacing lower ones (same rel)
	whiteouts []string
	opaque    string  // an upper directory marked opaque: the lower's content below it is hidden
	opaqueNew []tfile // the files the upper puts in it
}

// model is what a contender must serve: the layers and the merged view's expected figures.
type model struct {
	spec
	tree *tree
	// expected merged view of the tree, as the toolchain job sees it
	treeFiles int
	treeBytes int64
	treeSum   uint64
	// entries nfs-ls -R prints for the whole export
	entries int
}

// makeTree draws the tree: about 25 files per directory, directories nested up to 6
// deep under a few top-level ones (include, lib, libexec, share, src, bin), file sizes
// log-uniform from 64 B to 64 KiB (mean about 9 KiB); 2% of the files overridden in
// the upper, 0.5% whited out, one directory opaque.
func makeTree(n int, seed uint64) *tree {
	rng := rand.New(rand.NewPCG(seed, 0x70ee))
	t := &tree{}
	tops := []string{"include", "lib", "libexec", "share", "src", "bin"}
	depth := map[string]int{"": 0}
	t.dirs = append(t.dirs, "")
	for _, d := range tops {
		t.dirs = append(t.dirs, d)
		depth[d] = 1
	}
	parts := []string{"bits", "sys", "gcc", "c++", "x86_64", "internal", "detail", "impl", "asm", "linux", "pkg", "plugin", "ext", "v1", "std"}
	nd := max(len(t.dirs), n/25)
	for i := len(t.dirs); i < nd; i++ {
		var parent string
		for {
			parent = t.dirs[1+rng.IntN(len(t.dirs)-1)]
			if depth[parent] < 6 {
				break
			}
		}
		d := fmt.Sprintf("%s/%s%d", parent, parts[rng.IntN(len(parts))], i)
		t.dirs = append(t.dirs, d)
		depth[d] = depth[parent] + 1
	}
	exts := []string{".h", ".h", ".h", ".hpp", ".c", ".cc", ".o", ".a", ".so", ".py", ".txt", ""}
	for j := 0; j < n; j++ {
		d := t.dirs[1+rng.IntN(len(t.dirs)-1)]
		t.lower = append(t.lower, tfile{
			rel:  fmt.Sprintf("%s/f%d%s", d, j, exts[rng.IntN(len(exts))]),
			size: logUniform(rng),
			seed: rng.Uint64(),
		})
	}
	// The opaque directory: a directory of depth 2 or more, with its subtree, chosen
	// in the middle of the list.
	for i := len(t.dirs) / 2; i < len(t.dirs); i++ {
		if depth[t.dirs[i]] >= 2 {
			t.opaque = t.dirs[i]
			break
		}
	}
	under := func(rel string) bool { return t.opaque != "" && strings.HasPrefix(rel, t.opaque+"/") }
	for k := 0; k < 5; k++ {
		t.opaqueNew = append(t.opaqueNew, tfile{rel: fmt.Sprintf("%s/upper%d.h", t.opaque, k), size: logUniform(rng), seed: rng.Uint64()})
	}
	perm := rng.Perm(len(t.lower))
	nover, nwh := n/50, n/200
	for _, i := range perm {
		f := t.lower[i]
		if under(f.rel) {
			continue
		}
		switch {
		case len(t.overrides) < nover:
			t.overrides = append(t.overrides, tfile{rel: f.rel, size: logUniform(rng), seed: rng.Uint64()})
		case len(t.whiteouts) < nwh:
			t.whiteouts = append(t.whiteouts, f.rel)
		}
		if len(t.overrides) == nover && len(t.whiteouts) == nwh {
			break
		}
	}
	return t
}

func logUniform(rng *rand.Rand) int {
	// 64 B * 2^[0,10): 64 B .. 64 KiB
	return int(64 * math.Exp2(rng.Float64()*10))
}

// merged returns the files the merged view of the tree shows, with their content.
func (t *tree) merged() []tfile {
	hidden := map[string]bool{}
	for _, w := range t.whiteouts {
		hidden[w] = true
	}
	over := map[string]tfile{}
	for _, o := range t.overrides {
		over[o.rel] = o
	}
	var out []tfile
	for _, f := range t.lower {
		if hidden[f.rel] || (t.opaque != "" && strings.HasPrefix(f.rel, t.opaque+"/")) {
			continue
		}
		if o, ok := over[f.rel]; ok {
			f = o
		}
		out = append(out, f)
	}
	return append(out, t.opaqueNew...)
}

// visibleDirs counts the tree's directories the merged view shows (the root included).
func (t *tree) visibleDirs() int {
	n := 0
	for _, d := range t.dirs {
		if t.opaque == "" || !strings.HasPrefix(d, t.opaque+"/") {
			n++
		}
	}
	return n
}

func newModel(s spec) *model {
	m := &model{spec: s, tree: makeTree(s.TreeFiles, s.Seed)}
	for _, f := range m.tree.merged() {
		m.treeFiles++
		m.treeBytes += int64(f.size)
		m.treeSum += mix(fnv1a(fnv0, []byte(f.rel)) + fnv1a(fnv0, content(f.seed, f.size)))
	}
	// nfs-ls -R prints one line per entry below the export root.
	m.entries = m.tree.visibleDirs() - 1 + m.treeFiles + 1 // tree's subdirectories and files, and "tree" itself
	if !s.TreeOnly {
		m.entries += 3 + 1 + s.DirFiles // big, mid, rw64, dir10k and its files
	}
	return m
}

// writeLower writes the lower layer into dir.
func (m *model) writeLower(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !m.TreeOnly {
		for _, f := range []struct {
			name string
			mib  int
			seed uint64
		}{{bigName, m.BigMiB, m.Seed ^ 1}, {midName, m.MidMiB, m.Seed ^ 2}, {rwName, m.MidMiB, m.Seed ^ 3}} {
			if err := writeStream(filepath.Join(dir, f.name), f.seed, int64(f.mib)<<20); err != nil {
				return err
			}
		}
		d := filepath.Join(dir, dirName)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := 0; i < m.DirFiles; i++ {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file%05d", i)), []byte(fmt.Sprintf("%d\n", i)), 0o644); err != nil {
				return err
			}
		}
	}
	root := filepath.Join(dir, treeName)
	for _, d := range m.tree.dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range m.tree.lower {
		if err := os.WriteFile(filepath.Join(root, f.rel), content(f.seed, f.size), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeUpper writes a fresh upper layer into dir: the tree's overrides, whiteouts
// (character devices 0/0) and the opaque directory (trusted.overlay.opaque=y), the
// kernel overlay's formats, which ovlnfs reads too.
func (m *model) writeUpper(dir string) error {
	root := filepath.Join(dir, treeName)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	mkparent := func(rel string) error { return os.MkdirAll(filepath.Dir(filepath.Join(root, rel)), 0o755) }
	for _, f := range m.tree.overrides {
		if err := mkparent(f.rel); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, f.rel), content(f.seed, f.size), 0o644); err != nil {
			return err
		}
	}
	for _, w := range m.tree.whiteouts {
		if err := mkparent(w); err != nil {
			return err
		}
		if err := unix.Mknod(filepath.Join(root, w), unix.S_IFCHR|0o000, 0); err != nil {
			return fmt.Errorf("whiteout %s: %w", w, err)
		}
	}
	if m.tree.opaque != "" {
		od := filepath.Join(root, m.tree.opaque)
		if err := os.MkdirAll(od, 0o755); err != nil {
			return err
		}
		if err := unix.Setxattr(od, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return fmt.Errorf("opaque %s: %w", od, err)
		}
		for _, f := range m.tree.opaqueNew {
			if err := os.WriteFile(filepath.Join(root, f.rel), content(f.seed, f.size), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// content is a file's bytes: a xorshift stream from its seed.
func content(seed uint64, size int) []byte {
	b := make([]byte, size)
	fill(b, seed|1)
	return b
}

func fill(b []byte, x uint64) uint64 {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i], b[i+1], b[i+2], b[i+3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
		b[i+4], b[i+5], b[i+6], b[i+7] = byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56)
	}
	if i < len(b) {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for k := 0; i < len(b); i, k = i+1, k+1 {
			b[i] = byte(x >> (8 * k))
		}
	}
	return x
}

// writeStream writes size bytes of a seeded stream (no layer of the stack can compress
// or deduplicate it cheaply).
func writeStream(path string, seed uint64, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	x := seed | 1
	for left := size; left > 0; left -= int64(len(buf)) {
		x = fill(buf, x)
		if _, err := w.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

const fnv0 = 0xcbf29ce484222325

func fnv1a(h uint64, p []byte) uint64 {
	for _, c := range p {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}

func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// warm reads the files below each path into the page cache.
func warm(paths ...string) error {
	buf := make([]byte, 1<<20)
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyBuffer(io.Discard, f, buf)
			return err
		})
		if err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// dropCaches writes dirty data back and drops the page, dentry and inode caches, so
// both contenders start a job from the same cold kernel caches.
func dropCaches() {
	unix.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	prefault(prefaultBytes)
}

// prefaultBytes is about what a cold job pulls into the page cache (the 1 GiB file).
const prefaultBytes = 1280 << 20

// prefault touches n bytes of fresh anonymous memory and gives them back. On this
// machine (a VM whose free memory is handed back to the host) the first run after a
// drop_caches paid for the host faulting memory in again: within one round, whichever
// contender ran first read a cold file at a third of the speed of the one after it, and
// copied up at a third of the speed, so the order of the contenders decided the cold
// rows. Touching the memory first gives both contenders the same start.
func prefault(n int) {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return
	}
	for i := 0; i < n; i += 4096 {
		m[i] = 1
	}
	_ = unix.Munmap(m)
}

// sameBlocks compares a few 64 KiB blocks of two files.
func sameBlocks(a, b string, offsets []int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for _, off := range offsets {
		na, _ := fa.ReadAt(ba, off)
		nb, _ := fb.ReadAt(bb, off)
		if na != nb || !slices.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s and %s differ at offset %d", a, b, off)
		}
	}
	return nil
}
