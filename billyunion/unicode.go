package billyunion

import (
	"fmt"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/text/unicode/norm"
)

// Unicode name matching (Options.Unicode).
//
// Layer filesystems compare names as bytes, so "café" spelt with a
// precomposed é (NFC, as Linux and Windows software usually writes it) and
// with e and a combining accent (NFD, as macOS's older APIs and HFS+ wrote
// it) are two different names. A macOS client treats them as one, so one
// of them hides the other in Finder. In the insensitive mode the union
// matches names the way APFS does, normalization-insensitive and
// normalization-preserving: a name is stored as the client spelt it when
// created, and any canonically equivalent spelling finds it.
//
// Each path a client passes in is respelt before anything else looks at it:
// a component that names nothing as spelt is replaced by the equivalent
// name its directory holds, if any. Everything after that (the caches, the
// locks, the on-disk names) sees only names that exist, so the rest of the
// union needs no notion of equivalence. A component made of characters
// that normalization leaves alone (all of ASCII) costs a byte scan.

// Unicode modes (Options.Unicode).
const (
	// UnicodeExact compares names as bytes, as the kernel overlay and the
	// layer filesystems do: the default.
	UnicodeExact = "exact"
	// UnicodeInsensitive lets NFC and NFD (canonically equivalent)
	// spellings of a name find the same entry, keeping the spelling it
	// was created with.
	UnicodeInsensitive = "insensitive"
)

// unicodeMode validates Options.Unicode and reports whether names match
// insensitively.
func unicodeMode(mode string) (bool, error) {
	switch mode {
	case "", UnicodeExact:
		return false, nil
	case UnicodeInsensitive:
		return true, nil
	}
	return false, fmt.Errorf("billyunion: unicode=%q: must be %s or %s: %w", mode, UnicodeExact, UnicodeInsensitive, syscall.EINVAL)
}

// normalizationInvariant reports whether every spelling canonically
// equivalent to name is name itself, so respelling it can find nothing
// else: true for ASCII, and for names already in both NFC and NFD (no
// composable or combining characters).
func normalizationInvariant(name string) bool {
	ascii := true
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii = false
			break
		}
	}
	return ascii || (norm.NFC.IsNormalString(name) && norm.NFD.IsNormalString(name))
}

// respell returns p with each component that names nothing replaced by the
// canonically equivalent name its parent holds, when names match
// insensitively; otherwise, and whenever there is nothing to replace, p
// itself. A path that cannot be parsed or resolved comes back unchanged:
// the operation then fails on it as it would have.
func (fs *FS) respell(p string) string {
	if !fs.unicodeInsensitive {
		return p
	}
	comps, err := splitPath(p)
	if err != nil {
		return p
	}
	changed := false
	for i, name := range comps {
		if normalizationInvariant(name) {
			continue
		}
		spelt, ok := fs.equivalentName(comps[:i], name)
		if !ok {
			// The name is free, or its directory cannot be resolved: the
			// components below it cannot exist either.
			break
		}
		if spelt != name {
			comps[i], changed = spelt, true
		}
	}
	if !changed {
		return p
	}
	out := joinPath(comps)
	if strings.HasSuffix(p, "/") {
		out += "/"
	}
	return out
}

// equivalentName is the name in the directory dirComps that name finds:
// name itself when it exists as spelt, else the existing name canonically
// equivalent to it (the smallest one, byte-wise, when a layer holds several,
// so the choice never changes between calls). ok is false when neither
// exists.
func (fs *FS) equivalentName(dirComps []string, name string) (string, bool) {
	d, err := fs.resolveDir(dirComps, false)
	if err != nil {
		return "", false
	}
	e, err := fs.lookupChild(d, name)
	d.close()
	if err == nil && e.exists() {
		return name, true
	}
	snap, err := fs.listing(joinPath(dirComps))
	if err != nil {
		return "", false
	}
	want := norm.NFC.String(name)
	found := ""
	for _, fi := range snap.Entries {
		n := fi.Name()
		if normalizationInvariant(n) || (found != "" && n >= found) {
			continue
		}
		if norm.NFC.String(n) == want {
			found = n
		}
	}
	return found, found != ""
}

// samePath reports whether a and b name the same components.
func samePath(a, b string) bool {
	ca, erra := splitPath(a)
	cb, errb := splitPath(b)
	return erra == nil && errb == nil && slices.Equal(ca, cb)
}

// respellRename respells a rename's two paths. A new name that is only
// another spelling of the old one (a client changing a name's normalization
// in place) keeps the spelling the client gave, its directory respelt, so
// the rename changes the stored spelling instead of being a rename onto
// itself.
func (fs *FS) respellRename(oldpath, newpath string) (string, string) {
	if !fs.unicodeInsensitive {
		return oldpath, newpath
	}
	o, n := fs.respell(oldpath), fs.respell(newpath)
	if n == newpath || !samePath(o, n) {
		return o, n
	}
	dir, name, err := splitTarget(newpath)
	if err != nil {
		return o, n
	}
	return o, strings.TrimSuffix(fs.respell(joinPath(dir)), "/") + "/" + name
}
