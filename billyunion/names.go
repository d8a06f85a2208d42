package billyunion

import (
	"strings"
	"syscall"
)

// maxNameLen is the longest name a layer filesystem accepts (NAME_MAX).
const maxNameLen = 255

// ValidName checks one name as a client sends it for a new or removed
// entry: not empty, not "." or "..", no "/" or NUL, at most 255 bytes.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return syscall.EINVAL
	case strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) > maxNameLen:
		return syscall.ENAMETOOLONG
	}
	return nil
}

// splitPath turns a billy path into its components. "", "/" and "." name
// the root; empty and "." components are skipped; ".." is refused rather
// than resolved, so no path can climb anywhere, and so is NUL.
func splitPath(p string) ([]string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return nil, syscall.EINVAL
	}
	// Two passes over p, the first counting and checking the components, the second
	// keeping them: one allocation, where splitting and appending took one per
	// doubling (every call resolving a handle splits a path, some twice).
	n := 0
	for rest, more := p, true; more; {
		var c string
		c, rest, more = strings.Cut(rest, "/")
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return nil, syscall.EINVAL
		case len(c) > maxNameLen:
			return nil, syscall.ENAMETOOLONG
		}
		n++
	}
	if n == 0 {
		return nil, nil
	}
	comps := make([]string, 0, n)
	for rest, more := p, true; more; {
		var c string
		c, rest, more = strings.Cut(rest, "/")
		if c != "" && c != "." {
			comps = append(comps, c)
		}
	}
	return comps, nil
}

// splitTarget splits the path of an entry to create, remove or rename into
// its parent's components and its final name. A path ending in "." or ".."
// names no entry (EINVAL); the root cannot be a target (EBUSY).
func splitTarget(p string) (dir []string, name string, err error) {
	trimmed := strings.TrimRight(p, "/")
	last := trimmed[strings.LastIndexByte(trimmed, '/')+1:]
	if last == "." || last == ".." {
		return nil, "", syscall.EINVAL
	}
	comps, err := splitPath(p)
	if err != nil {
		return nil, "", err
	}
	if len(comps) == 0 {
		return nil, "", syscall.EBUSY
	}
	return comps[:len(comps)-1], comps[len(comps)-1], nil
}

func joinPath(comps []string) string { return "/" + strings.Join(comps, "/") }
