package billyunion

import (
	"os"
	"slices"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// visibleNames lists the names d shows: the union of its parts' names, each
// kept only if looking it up finds something (so whiteouts, names hidden by
// an opaque directory or a non-directory above, and overlay-private entries
// all drop out exactly as lookup says). Sorted.
func (fs *FS) visibleNames(d *dir) ([]string, error) {
	candidates, err := fs.candidateNames(d)
	if err != nil {
		return nil, err
	}
	names := candidates[:0]
	for _, n := range candidates {
		e, err := fs.lookupChild(d, n)
		if err != nil {
			return nil, err
		}
		if e.exists() {
			names = append(names, n)
		}
	}
	return names, nil
}

// candidateNames is the sorted, deduplicated union of the names in d's parts.
func (fs *FS) candidateNames(d *dir) ([]string, error) {
	var all []string
	for _, p := range d.parts {
		names, err := layer.ReadNames(p.fd, "")
		if err != nil {
			return nil, layer.Errno(err)
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// ReadDir lists the merged directory at p, sorted by name, with each
// entry's attributes and inode number exactly as Lstat reports them.
func (fs *FS) ReadDir(p string) ([]os.FileInfo, error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, err
	}
	d, err := fs.resolveDir(comps, false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	candidates, err := fs.candidateNames(d)
	if err != nil {
		return nil, err
	}
	infos := make([]os.FileInfo, 0, len(candidates))
	for _, n := range candidates {
		e, err := fs.lookupChild(d, n)
		if err != nil {
			if err == syscall.ENOENT {
				continue // removed while we listed
			}
			return nil, err
		}
		if e.exists() {
			infos = append(infos, fs.newFileInfo(d, &e))
		}
	}
	return infos, nil
}
