package nfs3

// symlink answers SYMLINK (RFC 1813 section 3.3.10). The target is stored as given.
func symlink(rq *request) error {
	d := rq.dirArgs()
	s := getSattr3(rq.args)
	target := rq.name()
	if err := rq.decoded(); err != nil {
		return err
	}
	rq.makeEntry(&d, &s, func(p string) error { return rq.namespace().Symlink(target, p) })
	return nil
}
