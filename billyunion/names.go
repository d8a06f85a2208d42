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
	var comps []string
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return nil, syscall.EINVAL
		case len(c) > maxNameLen:
			return nil, syscall.ENAMETOOLONG
		}
		comps = append(comps, c)
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
