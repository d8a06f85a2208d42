package nfs3

// pathconf answers PATHCONF (RFC 1813 section 3.3.20). The figures are the layers' and
// the server's rules: ext4's link limit, NAME_MAX 255, long names refused rather than cut,
// case kept and told apart, and chown restricted as POSIX means it (only root gives a file
// away; the owner may change its group to one of their own, permission.go).
func pathconf(rq *request) error {
	if ok, err := rq.objectReply(); !ok {
		return err
	}
	const linkMax, nameMax = 65000, 255 // ext4's EXT4_LINK_MAX; NAME_MAX
	rq.res.Uint32(linkMax)
	rq.res.Uint32(nameMax)
	rq.res.Bool(true)  // no_trunc
	rq.res.Bool(true)  // chown_restricted
	rq.res.Bool(false) // case_insensitive
	rq.res.Bool(true)  // case_preserving
	return nil
}
