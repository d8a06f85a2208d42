package nfs3

// access answers ACCESS (RFC 1813 section 3.3.4) for the caller, from the object's mode
// and owner (permission.go).
func access(rq *request) error {
	fh := rq.handle()
	asked := rq.args.Uint32()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, _, st, err := rq.statHandle(fh)
	rq.status(err)
	rq.postOpAttr(st)
	if err == nil {
		rq.res.Uint32(accessFor(rq.who, st, asked, rq.readOnly))
	}
	return nil
}
