package nfs3

// readlink answers READLINK (RFC 1813 section 3.3.5); an object that is no symlink
// answers INVAL.
func readlink(rq *request) error {
	fh := rq.handle()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, p, st, err := rq.statHandle(fh)
	var target string
	if err == nil {
		target, err = rq.namespace().Readlink(p)
	}
	if err == nil {
		st = rq.statOrNil(p)
	}
	rq.status(err)
	rq.postOpAttr(st)
	if err == nil {
		rq.res.String(target)
	}
	return nil
}
