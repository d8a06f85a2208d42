package main

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// The layers: two lowers and an empty upper, and the model of the union they make, which
// the clients check what they read against.
//
//	tree/dNN/mK            files of 30 middle directories
//	tree/dNN/sK/fJJ        25 files in each of 120 leaf directories
//	links/lNN              symbolic links
//	big/bN                 the big files
//	work/README, work/cNN/seed-K   each client's own directory, with lower files to copy up
//
// Directories are in lower1 only, lower2 only, or both (merged). In a merged leaf
// directory a name is in both lowers (lower1's file wins), in one of them, or in lower2
// and whited out in lower1; a few merged leaf directories are opaque in lower1.

const (
	midDirs      = 30
	leafPerMid   = 4
	filesPerLeaf = 25
	filesPerMid  = 4
	lowerLinks   = 40
	seedFiles    = 5
)

// expEntry is what a listing or lookup must show for a name.
type expEntry struct {
	typ  uint32
	size int64  // regular files
	mode uint32 // permission bits
}

// tfile is a visible lower file with its content.
type tfile struct {
	path string
	seed uint64
	size int
	mode uint32
}

type tlink struct{ path, target string }

type tbig struct {
	path string
	seed uint64
	size int64
}

type seedFile struct {
	name string
	seed uint64
	size int
}

type model struct {
	files                       []tfile
	hidden                      []string // whited out or below an opaque directory: LOOKUP must answer NOENT
	dirs                        map[string]map[string]expEntry
	dirList                     []string // the keys of dirs, sorted
	links                       []tlink
	bigs                        []tbig
	seeds                       [][]seedFile // per client
	lower1, lower2, upper, work string
	bytes                       int64 // total bytes written to the lowers
}

// writeLayers writes lower1 and lower2 (and makes an empty upper and a workdir) under root.
func writeLayers(root string, conns, bigFiles int, bigSize int64) (*model, error) {
	m := &model{
		lower1: filepath.Join(root, "lower1"), lower2: filepath.Join(root, "lower2"),
		upper: filepath.Join(root, "upper"), work: filepath.Join(root, "workdir"),
		dirs: map[string]map[string]expEntry{},
	}
	for _, d := range []string{m.lower1, m.lower2, m.upper, m.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	nextSeed := uint64(1)
	seed := func() uint64 { nextSeed++; return mix(nextSeed) }
	layer := func(top bool) string {
		if top {
			return m.lower1
		}
		return m.lower2
	}
	var failed error
	check := func(err error) {
		if err != nil && failed == nil {
			failed = err
		}
	}
	mkdir := func(top bool, p string) { check(os.MkdirAll(filepath.Join(layer(top), p), 0o755)) }
	dirEntry := func(p string) map[string]expEntry {
		if m.dirs[p] == nil {
			m.dirs[p] = map[string]expEntry{}
		}
		return m.dirs[p]
	}
	addDir := func(p string) {
		dirEntry(p)
		if p != "." {
			dirEntry(path.Dir(p))[path.Base(p)] = expEntry{typ: typeDir, mode: 0o755}
		}
	}
	// file writes a file of random size into one layer; visible says the union shows it.
	file := func(top bool, p string, visible bool) {
		size := fileSize(rng)
		mode := []uint32{0o644, 0o644, 0o644, 0o755, 0o600, 0o640}[rng.IntN(6)]
		s := seed()
		full := filepath.Join(layer(top), p)
		check(os.WriteFile(full, content(s, size), 0o644))
		check(os.Chmod(full, os.FileMode(mode)))
		m.bytes += int64(size)
		if visible {
			m.files = append(m.files, tfile{path: p, seed: s, size: size, mode: mode})
			dirEntry(path.Dir(p))[path.Base(p)] = expEntry{typ: typeReg, size: int64(size), mode: mode}
		}
	}
	whiteout := func(p string) { // in lower1, over lower2's p
		check(unix.Mknod(filepath.Join(m.lower1, p), unix.S_IFCHR, 0))
		m.hidden = append(m.hidden, p)
	}
	for _, top := range []bool{true, false} {
		mkdir(top, "tree")
		mkdir(top, "links")
		mkdir(top, "big")
		mkdir(top, "work")
	}
	addDir(".")
	for _, d := range []string{"tree", "links", "big", "work"} {
		addDir(d)
	}
	// kind: 0 both lowers, 1 lower1 only, 2 lower2 only
	for i := 0; i < midDirs; i++ {
		mid := fmt.Sprintf("tree/d%02d", i)
		kind := i % 3
		if kind != 2 {
			mkdir(true, mid)
		}
		if kind != 1 {
			mkdir(false, mid)
		}
		addDir(mid)
		for k := 0; k < filesPerMid; k++ {
			p := fmt.Sprintf("%s/m%d", mid, k)
			switch {
			case kind == 1:
				file(true, p, true)
			case kind == 2:
				file(false, p, true)
			case k == 0: // in both: lower1's wins
				file(false, p, false)
				file(true, p, true)
			default:
				file(k == 1, p, true)
			}
		}
		for j := 0; j < leafPerMid; j++ {
			leaf := fmt.Sprintf("%s/s%d", mid, j)
			lk := kind
			if kind == 0 {
				lk = (i + j) % 3
			}
			if lk != 2 {
				mkdir(true, leaf)
			}
			if lk != 1 {
				mkdir(false, leaf)
			}
			addDir(leaf)
			opaque := lk == 0 && (i*leafPerMid+j)%7 == 3
			if opaque {
				check(unix.Setxattr(filepath.Join(m.lower1, leaf), "trusted.overlay.opaque", []byte("y"), 0))
			}
			for f := 0; f < filesPerLeaf; f++ {
				p := fmt.Sprintf("%s/f%02d", leaf, f)
				switch {
				case lk == 1:
					file(true, p, true)
				case lk == 2:
					file(false, p, true)
				case f%10 == 7: // whited out
					file(false, p, false)
					whiteout(p)
				case f%4 == 0: // both: lower1's wins
					file(false, p, false)
					file(true, p, true)
				case f%4 == 1:
					file(true, p, true)
				case opaque: // lower2 only, below lower1's opaque directory
					file(false, p, false)
					m.hidden = append(m.hidden, p)
				default:
					file(false, p, true)
				}
			}
		}
	}
	// symbolic links: lower2's, some overridden by lower1, and lower1-only ones
	for i := 0; i < lowerLinks+5; i++ {
		p := fmt.Sprintf("links/l%02d", i)
		target := "../" + m.files[(i*37)%len(m.files)].path
		if i < lowerLinks {
			check(os.Symlink(target, filepath.Join(m.lower2, p)))
		}
		if i < 10 || i >= lowerLinks {
			target = fmt.Sprintf("lower1-target-%02d/%s", i, bytes.Repeat([]byte("x"), i))
			check(os.Symlink(target, filepath.Join(m.lower1, p)))
		}
		m.links = append(m.links, tlink{path: p, target: target})
		dirEntry("links")[path.Base(p)] = expEntry{typ: typeLnk, size: int64(len(target)), mode: 0o777}
	}
	// big files: alternately in lower2 and lower1
	for i := 0; i < bigFiles; i++ {
		p := fmt.Sprintf("big/b%d", i)
		b := tbig{path: p, seed: seed(), size: bigSize + int64(i)*4099}
		check(writeBig(filepath.Join(layer(i%2 == 1), p), b))
		m.bigs = append(m.bigs, b)
		dirEntry("big")[path.Base(p)] = expEntry{typ: typeReg, size: b.size, mode: 0o644}
		m.bytes += b.size
	}
	// work/: README in lower1, each client's directory with seed files in lower2
	readme := []byte("each load client works in its own directory here\n")
	check(os.WriteFile(filepath.Join(m.lower1, "work/README"), readme, 0o644))
	dirEntry("work")["README"] = expEntry{typ: typeReg, size: int64(len(readme)), mode: 0o644}
	seedSizes := []int{0, 1000, 16 << 10, 100_000, 300 << 10}
	for c := 0; c < conns; c++ {
		d := fmt.Sprintf("work/c%02d", c)
		mkdir(false, d)
		dirEntry("work")[path.Base(d)] = expEntry{typ: typeDir, mode: 0o755}
		var seeds []seedFile
		for k := 0; k < seedFiles; k++ {
			sf := seedFile{name: fmt.Sprintf("seed-%d", k), seed: seed(), size: seedSizes[k%len(seedSizes)]}
			check(os.WriteFile(filepath.Join(m.lower2, d, sf.name), content(sf.seed, sf.size), 0o644))
			seeds = append(seeds, sf)
			m.bytes += int64(sf.size)
		}
		m.seeds = append(m.seeds, seeds)
	}
	if failed != nil {
		return nil, failed
	}
	for d := range m.dirs {
		m.dirList = append(m.dirList, d)
	}
	sort.Strings(m.dirList)
	return m, nil
}

// fileSize: mostly small files, some tens of KiB, a few up to 256 KiB.
func fileSize(rng *rand.Rand) int {
	switch r := rng.IntN(10); {
	case r < 6:
		return rng.IntN(4096)
	case r < 9:
		return 4096 + rng.IntN(60<<10)
	default:
		return int(math.Exp(math.Log(64<<10) + rng.Float64()*math.Log(4)))
	}
}

// content is the deterministic content of a small file.
func content(seed uint64, size int) []byte {
	b := make([]byte, size)
	fill(b, seed)
	return b
}

func fill(b []byte, x uint64) {
	x |= 1
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for k := 0; k < 8 && i+k < len(b); k++ {
			b[i+k] = byte(x >> (8 * k))
		}
	}
}

func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// A big file is made of 4 KiB blocks, each filled from its own seed, so any range can be
// checked without the file.
const bigBlock = 4096

func bigBlockFill(b []byte, seed uint64, block int64) {
	fill(b, mix(seed^uint64(block)*0x9e3779b97f4a7c15))
}

// bigExpected is n bytes of the big file at off (n bytes or fewer at its end).
func bigExpected(b tbig, off int64, n int) []byte {
	if off >= b.size {
		return nil
	}
	if off+int64(n) > b.size {
		n = int(b.size - off)
	}
	out := make([]byte, 0, n)
	blk := make([]byte, bigBlock)
	for pos := off; pos < off+int64(n); {
		i := pos / bigBlock
		bigBlockFill(blk, b.seed, i)
		from := pos - i*bigBlock
		to := int64(bigBlock)
		if end := off + int64(n) - i*bigBlock; end < to {
			to = end
		}
		out = append(out, blk[from:to]...)
		pos = i*bigBlock + to
	}
	return out
}

func writeBig(p string, b tbig) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < b.size; off += int64(len(buf)) {
		n := int64(len(buf))
		if off+n > b.size {
			n = b.size - off
		}
		for i := int64(0); i < n; i += bigBlock {
			bigBlockFill(buf[i:min(i+bigBlock, n)], b.seed, (off+i)/bigBlock)
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
