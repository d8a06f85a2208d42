package crash_test

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"path"
	"slices"
	"sort"
	"strings"
)

// The model: what one worker's subtree must look like, given the calls the server
// acknowledged. Regular files' contents live in inodes, which hard links share.

type inode struct {
	data  []byte // never changed in place: a write makes a new slice, so clones share it
	sum   *[32]byte
	mode  uint32
	id    int  // names with the same id are one file (hard links)
	lower bool // still the lower file: not copied up yet
	links bool // a lower file with several names (kept together by index=on)
	// mtime is known while no write or truncate has changed it: a copy-up keeps it.
	mtime    [2]uint32
	hasMtime bool
}

func (i *inode) hash() [32]byte {
	if i.sum == nil {
		s := sha256.Sum256(i.data)
		i.sum = &s
	}
	return *i.sum
}

func (i *inode) setData(b []byte) { i.data, i.sum = b, nil }

type node struct {
	typ    byte   // 'f' regular, 'd' directory, 'l' symlink
	mode   uint32 // directories (files keep theirs in the inode)
	ino    *inode
	target string
	kids   map[string]*node
	lower  bool // a directory with lower parts, or a symlink not copied up
}

func newDir(mode uint32) *node { return &node{typ: 'd', mode: mode, kids: map[string]*node{}} }

// clone copies a tree, keeping hard links shared within the copy.
func (n *node) clone() *node {
	inodes := map[*inode]*inode{}
	var cp func(*node) *node
	cp = func(n *node) *node {
		c := &node{typ: n.typ, mode: n.mode, target: n.target, lower: n.lower}
		if n.ino != nil {
			ci, ok := inodes[n.ino]
			if !ok {
				v := *n.ino
				ci = &v
				inodes[n.ino] = ci
			}
			c.ino = ci
		}
		if n.kids != nil {
			c.kids = make(map[string]*node, len(n.kids))
			for k, v := range n.kids {
				c.kids[k] = cp(v)
			}
		}
		return c
	}
	return cp(n)
}

// find returns the node at p (nil when missing).
func (n *node) find(p []string) *node {
	for _, c := range p {
		if n == nil || n.typ != 'd' {
			return nil
		}
		n = n.kids[c]
	}
	return n
}

// entry is what the checks compare of one name: type, mode, size, contents, target.
type entry struct {
	typ    byte
	mode   uint32
	size   int64
	sum    [32]byte
	target string
	group  int    // model: the inode id; observed: unused
	fileid uint64 // observed: NFS fileid or st_ino
	// mtime of regular files and symlinks, compared where both sides know it
	mtime    [2]uint32
	hasMtime bool
	nlink    uint32 // regular files: the number of names
}

func (e entry) String() string {
	switch e.typ {
	case 'f':
		return fmt.Sprintf("file mode %o size %d sha256 %x mtime %v nlink %d", e.mode, e.size, e.sum[:6], e.mtime, e.nlink)
	case 'l':
		return fmt.Sprintf("symlink -> %q", e.target)
	case 'd':
		return fmt.Sprintf("dir mode %o", e.mode)
	}
	return fmt.Sprintf("type %c mode %o size %d", e.typ, e.mode, e.size)
}

func (e entry) same(o entry) bool {
	return e.typ == o.typ && e.mode == o.mode && e.size == o.size && e.sum == o.sum && e.target == o.target &&
		(!e.hasMtime || !o.hasMtime || e.mtime == o.mtime) && e.nlink == o.nlink
}

// flatten lists the tree below n as path -> entry, paths under prefix.
func (n *node) flatten(prefix string) map[string]entry {
	out := map[string]entry{}
	names := map[*inode]uint32{}
	var count func(n *node)
	count = func(n *node) {
		for _, k := range n.kids {
			if k.typ == 'f' {
				names[k.ino]++
			} else if k.typ == 'd' {
				count(k)
			}
		}
	}
	count(n)
	var walk func(n *node, p string)
	walk = func(n *node, p string) {
		for name, k := range n.kids {
			kp := path.Join(p, name)
			switch k.typ {
			case 'f':
				out[kp] = entry{typ: 'f', mode: k.ino.mode, size: int64(len(k.ino.data)), sum: k.ino.hash(), group: k.ino.id,
					mtime: k.ino.mtime, hasMtime: k.ino.hasMtime, nlink: names[k.ino]}
			case 'l':
				out[kp] = entry{typ: 'l', size: int64(len(k.target)), target: k.target}
			case 'd':
				out[kp] = entry{typ: 'd', mode: k.mode}
				walk(k, kp)
			}
		}
	}
	walk(n, prefix)
	return out
}

// diffTrees describes how got differs from want, "" when they agree.
func diffTrees(want, got map[string]entry) string {
	var lines []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			lines = append(lines, fmt.Sprintf("  missing %s (want %v)", p, w))
		case !w.same(g):
			lines = append(lines, fmt.Sprintf("  %s: %v, want %v", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			lines = append(lines, fmt.Sprintf("  unexpected %s (%v)", p, g))
		}
	}
	sort.Strings(lines)
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("  ... and %d more", len(lines)-40))
	}
	return strings.Join(lines, "\n")
}

// op is one NFS call of the workload.
type op struct {
	kind   string // create mkdir symlink write commit chmod truncate rename link remove rmdir
	p, p2  []string
	off    uint64
	data   []byte
	stable uint32
	mode   uint32
	size   uint64
	target string
	class  string // which multi-step change it is, for the figures (see classify)
}

// classify names the multi-step change o makes in the model's state root, "" for a call
// that makes none of those.
func classify(root *node, o *op) string {
	n := root.find(o.p)
	if n == nil {
		return ""
	}
	lowerFile := n.typ == 'f' && n.ino.lower || n.typ == 'l' && n.lower
	switch {
	case lowerFile && n.typ == 'f' && n.ino.links && o.kind != "commit":
		return "copy-up of a lower file with several names, index=on (" + o.kind + ")"
	case lowerFile && o.kind == "link":
		return "link of a lower file (copy-up, link)"
	case lowerFile && o.kind == "remove":
		return "unlink of a lower file (whiteout)"
	case lowerFile && o.kind != "commit":
		return "copy-up of a lower file (" + o.kind + ")"
	case n.typ == 'd' && n.lower && o.kind == "rename":
		return "rename of a lower or merged dir (redirect)"
	case n.typ == 'd' && n.lower && o.kind == "rmdir":
		return "rmdir of a lower or merged dir (whiteout)"
	case n.typ == 'd' && n.lower && o.kind == "chmod":
		return "copy-up of a lower dir (chmod)"
	case o.kind == "write" || o.kind == "commit":
		return "data of an upper file (" + o.kind + ")"
	}
	return ""
}

func (o *op) String() string {
	s := o.kind + " " + strings.Join(o.p, "/")
	switch o.kind {
	case "rename", "link":
		s += " -> " + strings.Join(o.p2, "/")
	case "write":
		st := "UNSTABLE"
		if o.stable != 0 {
			st = "FILE_SYNC"
		}
		s += fmt.Sprintf(" %d bytes at %d %s", len(o.data), o.off, st)
	case "chmod":
		s += fmt.Sprintf(" %o", o.mode)
	case "truncate":
		s += fmt.Sprintf(" to %d", o.size)
	case "symlink":
		s += " -> " + o.target
	}
	return s
}

// namespace reports whether the op changes names (and so stale cached handles).
func (o *op) namespace() bool {
	switch o.kind {
	case "rename", "remove", "rmdir":
		return true
	}
	return false
}

// outcomes are the numbers of data bytes of a write that may have landed when it was
// killed in flight: the kernel stops a write between pages for a fatal signal, so any
// prefix ending on a page boundary of the file, or the whole write.
func (o *op) outcomes() []int {
	if o.kind != "write" {
		return []int{-1}
	}
	ks := []int{len(o.data)}
	for k := 0; k < len(o.data); {
		ks = append(ks, k)
		k = int((o.off+uint64(k))/4096+1)*4096 - int(o.off)
	}
	return ks
}

// apply makes the change of o in the tree rooted at root; k < 0 applies a write whole,
// else only its first k bytes. nextID numbers new inodes.
func apply(root *node, o *op, k int, nextID *int) {
	parent := root.find(o.p[:len(o.p)-1])
	name := o.p[len(o.p)-1]
	switch o.kind {
	case "create":
		*nextID++
		parent.kids[name] = &node{typ: 'f', ino: &inode{mode: o.mode, id: *nextID}}
	case "mkdir":
		parent.kids[name] = newDir(o.mode)
	case "symlink":
		parent.kids[name] = &node{typ: 'l', target: o.target}
	case "write":
		n := parent.kids[name]
		n.ino.lower = false
		n.ino.hasMtime = false
		data := o.data
		if k >= 0 {
			data = data[:k]
		}
		if len(data) == 0 {
			return
		}
		end := int(o.off) + len(data)
		b := make([]byte, max(end, len(n.ino.data)))
		copy(b, n.ino.data)
		copy(b[o.off:], data)
		n.ino.setData(b)
	case "commit":
	case "chmod":
		n := parent.kids[name]
		if n.typ == 'f' {
			n.ino.mode, n.ino.lower = o.mode, false
		} else {
			n.mode = o.mode
		}
	case "truncate":
		n := parent.kids[name]
		b := make([]byte, o.size)
		copy(b, n.ino.data)
		n.ino.setData(b)
		n.ino.lower, n.ino.hasMtime = false, false
	case "rename":
		n := parent.kids[name]
		if n.ino != nil {
			n.ino.lower = false
		} else if n.typ == 'l' {
			n.lower = false
		}
		delete(parent.kids, name)
		root.find(o.p2[:len(o.p2)-1]).kids[o.p2[len(o.p2)-1]] = n
	case "link":
		n := parent.kids[name]
		n.ino.lower = false
		root.find(o.p2[:len(o.p2)-1]).kids[o.p2[len(o.p2)-1]] = &node{typ: 'f', ino: n.ino}
	case "remove", "rmdir":
		delete(parent.kids, name)
	default:
		panic("unknown op " + o.kind)
	}
}

// gen makes the workload's next calls for one subtree: usually one, a whole rm -rf
// (children first, then the directory) sometimes. Every call it makes must succeed.
type gen struct {
	r     *rand.Rand
	seq   int
	dirty map[*inode]bool // files written UNSTABLE since their last COMMIT
}

type named struct {
	p []string
	n *node
}

func list(root *node) []named {
	var out []named
	var walk func(n *node, p []string)
	walk = func(n *node, p []string) {
		for _, name := range kidNames(n) {
			k := n.kids[name]
			kp := append(slices.Clone(p), name)
			out = append(out, named{kp, k})
			if k.typ == 'd' {
				walk(k, kp)
			}
		}
	}
	walk(root, nil)
	return out
}

func (g *gen) pick(all []named, ok func(named) bool) (named, bool) {
	var c []named
	for _, x := range all {
		if ok(x) {
			c = append(c, x)
		}
	}
	if len(c) == 0 {
		return named{}, false
	}
	return c[g.r.IntN(len(c))], true
}

func (g *gen) newName(prefix string) string {
	g.seq++
	return fmt.Sprintf("%s.%d", prefix, g.seq) // lower names have no dot
}

var modes = []uint32{0o600, 0o640, 0o644, 0o664, 0o700, 0o755}

func under(p, dir []string) bool { return len(p) >= len(dir) && slices.Equal(p[:len(dir)], dir) }

func (g *gen) next(root *node) []*op {
	all := list(root)
	isFile := func(x named) bool { return x.n.typ == 'f' }
	isDir := func(x named) bool { return x.n.typ == 'd' }
	anyDir := func() []string {
		x, ok := g.pick(all, isDir)
		if !ok || g.r.IntN(8) == 0 {
			return nil // the subtree's root
		}
		return x.p
	}
	for {
		switch c := g.r.IntN(100); {
		case c < 24: // write, often the copy-up of a lower file
			x, ok := g.pick(all, isFile)
			if !ok {
				continue
			}
			size := len(x.n.ino.data)
			var n int
			switch g.r.IntN(4) {
			case 0:
				n = 1 + g.r.IntN(100)
			case 1:
				n = 4096
			default:
				n = 1 + g.r.IntN(64<<10)
			}
			off := uint64(g.r.IntN(size + 1))
			if g.r.IntN(8) == 0 {
				off += uint64(g.r.IntN(100 << 10)) // a hole
			}
			if off+uint64(n) > 8<<20 {
				off = uint64(g.r.IntN(1 << 20))
			}
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(g.r.Uint32())
			}
			stable := uint32(2)
			if g.r.IntN(2) == 0 {
				stable = 0
			}
			return []*op{{kind: "write", p: x.p, off: off, data: data, stable: stable}}
		case c < 31: // COMMIT of a file written UNSTABLE
			x, ok := g.pick(all, func(x named) bool { return isFile(x) && g.dirty[x.n.ino] })
			if !ok {
				continue
			}
			return []*op{{kind: "commit", p: x.p}}
		case c < 39: // chmod: a metadata copy-up of a lower file or directory
			x, ok := g.pick(all, func(x named) bool { return x.n.typ != 'l' })
			if !ok {
				continue
			}
			return []*op{{kind: "chmod", p: x.p, mode: modes[g.r.IntN(len(modes))]}}
		case c < 45: // truncate
			x, ok := g.pick(all, isFile)
			if !ok {
				continue
			}
			size := uint64(len(x.n.ino.data))
			ns := uint64(g.r.IntN(int(size) + 1))
			if g.r.IntN(4) == 0 {
				ns = size + uint64(g.r.IntN(10000))
			}
			return []*op{{kind: "truncate", p: x.p, size: ns}}
		case c < 53:
			return []*op{{kind: "create", p: append(anyDir(), g.newName("n")), mode: modes[g.r.IntN(len(modes))]}}
		case c < 57:
			return []*op{{kind: "mkdir", p: append(anyDir(), g.newName("d")), mode: 0o755}}
		case c < 60:
			return []*op{{kind: "symlink", p: append(anyDir(), g.newName("s")), target: g.newName("target-")}}
		case c < 68: // rename a non-directory, to a new name or over another one
			x, ok := g.pick(all, func(x named) bool { return x.n.typ != 'd' })
			if !ok {
				continue
			}
			to := append(anyDir(), g.newName("r"))
			if g.r.IntN(3) == 0 {
				if y, ok := g.pick(all, func(y named) bool {
					return y.n.typ != 'd' && !slices.Equal(y.p, x.p) && (y.n.ino == nil || y.n.ino != x.n.ino)
				}); ok {
					to = y.p
				}
			}
			return []*op{{kind: "rename", p: x.p, p2: to}}
		case c < 78: // rename a directory (lower and merged ones get redirects)
			x, ok := g.pick(all, isDir)
			if !ok {
				continue
			}
			dst, ok := g.pick(all, func(y named) bool { return isDir(y) && !under(y.p, x.p) })
			var parent []string
			if ok && g.r.IntN(6) != 0 {
				parent = dst.p
			}
			if g.r.IntN(3) == 0 { // same parent
				parent = x.p[:len(x.p)-1]
			}
			to := append(slices.Clone(parent), g.newName("rd"))
			if g.r.IntN(4) == 0 {
				if y, ok := g.pick(all, func(y named) bool {
					return isDir(y) && len(y.n.kids) == 0 && !under(y.p, x.p) && !under(x.p, y.p)
				}); ok {
					to = y.p
				}
			}
			return []*op{{kind: "rename", p: x.p, p2: to}}
		case c < 85: // hard link, often of a lower file
			x, ok := g.pick(all, isFile)
			if !ok {
				continue
			}
			return []*op{{kind: "link", p: x.p, p2: append(anyDir(), g.newName("k"))}}
		case c < 93: // unlink (a whiteout for a lower file)
			x, ok := g.pick(all, func(x named) bool { return x.n.typ != 'd' })
			if !ok {
				continue
			}
			return []*op{{kind: "remove", p: x.p}}
		default: // rm -rf of a directory: its children, then it (merged ones need whiteouts)
			x, ok := g.pick(all, isDir)
			if !ok {
				continue
			}
			var ops []*op
			var rm func(p []string, n *node)
			rm = func(p []string, n *node) {
				for _, name := range kidNames(n) {
					k := n.kids[name]
					kp := append(slices.Clone(p), name)
					if k.typ == 'd' {
						rm(kp, k)
					} else {
						ops = append(ops, &op{kind: "remove", p: kp})
					}
				}
				ops = append(ops, &op{kind: "rmdir", p: p})
			}
			rm(x.p, x.n)
			return ops
		}
	}
}

// kidNames is n's children's names, sorted.
func kidNames(n *node) []string { return slices.Sorted(maps.Keys(n.kids)) }
