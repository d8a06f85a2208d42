package uml

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A manifest maps a path (relative to the tree's root) to a normalised description that
// holds only what both the kernel overlay and ovlnfs must agree on.
type manifest map[string]string

// oldTime separates timestamps the fixture or the workload set on purpose (before it)
// from timestamps of "now" (after it), which differ between any two runs.
var oldTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// volatileContent names files whose bytes legitimately differ between two runs of the
// same workload: git's index caches inode numbers and ctimes.
func volatileContent(path string) bool {
	return strings.HasSuffix(path, ".git/index")
}

// parseMergedManifest reads manifest.sh output. Inode numbers only serve to describe hard
// links: each multiply-linked file names the first path of its link group.
func parseMergedManifest(r io.Reader) (manifest, error) {
	type entry struct {
		path, typ, mode, owner, nlink, size, ino, mtime, target string
	}
	var entries []entry
	hashes := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		switch {
		case len(f) == 10 && f[0] == "E":
			entries = append(entries, entry{f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]})
		case len(f) == 3 && f[0] == "H":
			hashes[f[2]] = f[1]
		default:
			return nil, fmt.Errorf("bad manifest line %q", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	firstOfInode := map[string]string{}
	for _, e := range entries { // entries are sorted by path
		if e.typ != "d" {
			if _, ok := firstOfInode[e.ino]; !ok {
				firstOfInode[e.ino] = e.path
			}
		}
	}
	m := manifest{}
	for _, e := range entries {
		var b strings.Builder
		fmt.Fprintf(&b, "%s mode=%s owner=%s nlink=%s", e.typ, e.mode, e.owner, e.nlink)
		if e.typ != "d" {
			fmt.Fprintf(&b, " size=%s mtime=%s", e.size, mtimeClass(e.mtime))
		}
		switch e.typ {
		case "l":
			fmt.Fprintf(&b, " target=%s", e.target)
		case "f":
			h := hashes[e.path]
			if volatileContent(e.path) {
				h = "(volatile)"
			}
			fmt.Fprintf(&b, " sha256=%.16s", h)
		}
		if e.typ != "d" && e.nlink != "1" {
			fmt.Fprintf(&b, " linkgroup=%s", firstOfInode[e.ino])
		}
		m[e.path] = b.String()
	}
	return m, nil
}

// mtimeClass keeps a timestamp that was set on purpose and hides one that means "now".
func mtimeClass(s string) string {
	sec, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "?" + s
	}
	t := time.Unix(int64(sec), 0).UTC()
	if t.Before(oldTime) {
		return t.Format(time.RFC3339)
	}
	return "recent"
}

// upperManifest describes an upper layer as the kernel would read it: entries, whiteouts
// (character device 0/0) and the overlay xattrs. Values of origin (a file handle of the
// lower object) differ between any two layer copies, so only their presence counts.
func upperManifest(root string) (manifest, error) {
	m := manifest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = "(root)"
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		var b strings.Builder
		typ := st.Mode & unix.S_IFMT
		switch typ {
		case unix.S_IFDIR:
			b.WriteString("d")
		case unix.S_IFREG:
			b.WriteString("f")
		case unix.S_IFLNK:
			b.WriteString("l")
		case unix.S_IFCHR:
			if st.Rdev == 0 {
				b.WriteString("whiteout")
			} else {
				fmt.Fprintf(&b, "c rdev=%d", st.Rdev)
			}
		default:
			fmt.Fprintf(&b, "type=%o", typ)
		}
		fmt.Fprintf(&b, " mode=%o owner=%d:%d", st.Mode&0o7777, st.Uid, st.Gid)
		if typ != unix.S_IFDIR {
			fmt.Fprintf(&b, " size=%d mtime=%s", st.Size, mtimeClass(strconv.FormatInt(st.Mtim.Sec, 10)))
		}
		switch typ {
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " target=%s", target)
		case unix.S_IFREG:
			if volatileContent(rel) {
				b.WriteString(" sha256=(volatile)")
			} else {
				h, err := fileHash(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(&b, " sha256=%.16s", h)
			}
		}
		xattrs, err := overlayXattrs(p)
		if err != nil {
			return err
		}
		if xattrs != "" {
			b.WriteString(" xattrs=" + xattrs)
		}
		m[rel] = b.String()
		return nil
	})
	return m, err
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// overlayXattrs lists a path's overlay xattrs (trusted.overlay.* and user.overlay.*).
func overlayXattrs(p string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return "", nil
		}
		return "", err
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "trusted.overlay.") && !strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		short := name[strings.Index(name, "overlay.")+len("overlay."):]
		switch short {
		case "opaque", "redirect", "impure", "whiteout":
			val := make([]byte, 4096)
			vn, err := unix.Lgetxattr(p, name, val)
			if err != nil {
				return "", err
			}
			out = append(out, fmt.Sprintf("%s=%q", name, val[:vn]))
		default:
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ","), nil
}

// diffManifests lists every path whose description differs, "want" being the kernel
// overlay's.
func diffManifests(got, want manifest) []string {
	paths := map[string]bool{}
	for p := range got {
		paths[p] = true
	}
	for p := range want {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	var diffs []string
	for _, p := range sorted {
		g, inGot := got[p]
		w, inWant := want[p]
		switch {
		case !inGot:
			diffs = append(diffs, fmt.Sprintf("%s: missing from ovlnfs (kernel: %s)", p, w))
		case !inWant:
			diffs = append(diffs, fmt.Sprintf("%s: only in ovlnfs (%s)", p, g))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s:\n    ovlnfs: %s\n    kernel: %s", p, g, w))
		}
	}
	return diffs
}

// transcriptSteps splits a workload transcript into its "## name" steps, in order.
func transcriptSteps(s string) (names []string, outputs map[string]string) {
	outputs = map[string]string{}
	current := "(before first step)"
	for _, line := range strings.SplitAfter(s, "\n") {
		if name, ok := strings.CutPrefix(line, "## "); ok {
			current = strings.TrimSpace(name)
			names = append(names, current)
			outputs[current] = ""
			continue
		}
		outputs[current] += line
	}
	return names, outputs
}

// diffTranscripts names each step whose output differs, with both outputs.
func diffTranscripts(got, want string) []string {
	wantNames, wantOut := transcriptSteps(want)
	gotNames, gotOut := transcriptSteps(got)
	var diffs []string
	if len(gotNames) != len(wantNames) {
		diffs = append(diffs, fmt.Sprintf("ovlnfs ran %d steps, the kernel overlay %d", len(gotNames), len(wantNames)))
	}
	for _, name := range wantNames {
		g, ok := gotOut[name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("step %q: missing from the ovlnfs transcript", name))
			continue
		}
		if g != wantOut[name] {
			diffs = append(diffs, fmt.Sprintf("step %q:\n  ovlnfs:\n%s  kernel:\n%s", name, indent(g), indent(wantOut[name])))
		}
	}
	return diffs
}

func indent(s string) string {
	if s == "" {
		return "    (no output)\n"
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString("    " + line)
		}
	}
	if !strings.HasSuffix(s, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}
