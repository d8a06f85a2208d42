package differential

import (
	"math/rand/v2"
	"os"
	"path"
	"strings"
)

// variant pairs kernel overlay mount options with the union options that
// must behave the same.
type variant struct {
	name string
	// kernelOpts are appended to the kernel overlay's mount options.
	kernelOpts string
	// redirectDir is the union's RedirectDir.
	redirectDir string
	// dirRenames makes the sequences rename directories often (lower,
	// merged, nested ones, over whiteouts, into opaque directories, and back
	// again), and the generated lower layers hold redirects of their own.
	dirRenames bool
	// index is the union's Index ("on" or "off").
	index string
	// hardLinks makes the generated lower layers hold many files with
	// several names (in one directory and across directories), and one
	// operation in four works on a name of such a file: a link to it, a
	// write, truncate, chmod, unlink or rename of it, a rename onto it.
	hardLinks bool
}

// variants: the kernel's defaults on this machine (redirect_dir=off, which
// follows redirects as the kernel is built with redirect_always_follow;
// index=off), redirect_dir=on, and redirect_dir=on,index=on, ovlnfs's
// defaults.
var variants = []variant{
	{name: "defaults", redirectDir: "off", index: "off"},
	{name: "redirect_dir=on", kernelOpts: ",redirect_dir=on", redirectDir: "on", index: "off", dirRenames: true},
	{name: "redirect_dir=on,index=on", kernelOpts: ",redirect_dir=on,index=on", redirectDir: "on", index: "on", dirRenames: true, hardLinks: true},
}

// selectedVariants honours DIFFTEST_VARIANT (a variant's name) when set.
func selectedVariants() []variant {
	want := os.Getenv("DIFFTEST_VARIANT")
	if want == "" {
		return variants
	}
	var out []variant
	for _, v := range variants {
		if v.name == want {
			out = append(out, v)
		}
	}
	return out
}

// renameHistory remembers the directory renames that succeeded, so that a
// later step can rename one back.
type renameHistory []op

// nextOp is the step's operation: randomOp, or for a variant with
// dirRenames, one time in three a directory rename.
func (v variant) nextOp(r *rand.Rand, tree map[string]entryInfo, past renameHistory) op {
	if v.hardLinks && r.IntN(4) == 0 {
		if o, ok := hardLinkOp(r, tree); ok {
			return o
		}
	}
	if v.dirRenames && r.IntN(3) == 0 {
		if o, ok := dirRenameOp(r, tree, past); ok {
			return o
		}
	}
	return randomOp(r, tree)
}

// dirRenameOp renames a directory of the tree: within its parent, into
// another directory (deep ones, opaque ones: whatever the tree holds), onto
// an existing name (a file, a directory, a name whose lower object was
// removed and is whited out), or back to where an earlier rename took one.
func dirRenameOp(r *rand.Rand, tree map[string]entryInfo, past renameHistory) (op, bool) {
	var dirs, all []string
	for p, e := range tree {
		if p == "" {
			continue
		}
		all = append(all, p)
		if e.kind == "dir" {
			dirs = append(dirs, p)
		}
	}
	if len(dirs) == 0 {
		return op{}, false
	}
	sortStrings(dirs)
	sortStrings(all)
	parents := append([]string{""}, dirs...)
	names := []string{"a", "b", "c", "d", "e", "n", "m", "x"}
	src := dirs[r.IntN(len(dirs))]
	var dst string
	switch k := r.IntN(12); {
	case k < 3: // same parent
		dst = path.Join(path.Dir(src), names[r.IntN(len(names))])
	case k < 6: // another parent
		dst = path.Join(parents[r.IntN(len(parents))], names[r.IntN(len(names))])
	case k < 8: // onto something that exists
		dst = all[r.IntN(len(all))]
	case k < 10 && len(past) > 0: // back again
		p := past[r.IntN(len(past))]
		src, dst = p.b, p.a
	default: // into the deepest directories
		deep := dirs[:0:0]
		most := 0
		for _, d := range dirs {
			if n := strings.Count(d, "/"); n > most {
				most, deep = n, []string{d}
			} else if n == most {
				deep = append(deep, d)
			}
		}
		dst = path.Join(deep[r.IntN(len(deep))], names[r.IntN(len(names))])
	}
	dst = strings.TrimPrefix(dst, "./")
	if dst == "." {
		dst = names[0]
	}
	return op{kind: "rename", a: src, b: dst}, true
}

// hardLinkOp works on a name of a file that has several (in the tree as
// shown: lower files with several links, and their copies once linked up).
func hardLinkOp(r *rand.Rand, tree map[string]entryInfo) (op, bool) {
	var linked, dirs, all []string
	for p, e := range tree {
		if p == "" {
			dirs = append(dirs, p)
			continue
		}
		all = append(all, p)
		switch {
		case e.kind == "dir":
			dirs = append(dirs, p)
		case e.nlink > 1:
			linked = append(linked, p)
		}
	}
	if len(linked) == 0 {
		return op{}, false
	}
	sortStrings(linked)
	sortStrings(dirs)
	sortStrings(all)
	a := linked[r.IntN(len(linked))]
	data := strings.Repeat(string(rune('A'+r.IntN(26))), 1+r.IntN(20))
	o := op{a: a, data: data, size: int64(r.IntN(40)), mode: []uint32{0o600, 0o755, 0o4755}[r.IntN(3)], linked: true}
	switch k := r.IntN(10); {
	case k < 3:
		o.kind, o.b = "link", fresh(r, dirs)
	case k < 5:
		o.kind = "append"
	case k < 6:
		o.kind = []string{"overwrite", "truncate", "chmod"}[r.IntN(3)]
	case k < 8:
		o.kind = "unlink"
	case k < 9:
		o.kind, o.b = "rename", fresh(r, dirs)
	default: // something else onto it
		o.kind, o.a, o.b = "rename", all[r.IntN(len(all))], a
	}
	return o, true
}
