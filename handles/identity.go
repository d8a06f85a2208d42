package handles

import "syscall"

// Identity names the object a handle is of, the same for every handle of it whatever
// parent hint the handle carries: the lock manager's name for a file. It reads nothing
// from disk (the object may be gone since). ErrBadHandle for bytes that are no handle,
// ESTALE for a handle of another configuration.
func (h *Handles) Identity(fh []byte) (string, error) {
	hd, err := decode(fh)
	if err != nil {
		return "", err
	}
	if hd.export != h.export {
		return "", syscall.ESTALE
	}
	return hd.obj.Key(), nil
}
