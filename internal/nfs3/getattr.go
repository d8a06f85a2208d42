package nfs3

// getattr answers GETATTR (RFC 1813 section 3.3.1).
func getattr(rq *request) error {
	fh := rq.handle()
	if err := rq.decoded(); err != nil {
		return err
	}
	_, _, st, err := rq.statHandle(fh)
	rq.status(err)
	if err == nil {
		putFattr3(rq.res, st, rq.s.fsid)
	}
	return nil
}
