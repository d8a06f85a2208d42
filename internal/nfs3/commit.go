package nfs3

// commit answers COMMIT (RFC 1813 section 3.3.21): one fsync of the whole file, whatever
// range is asked, then the write verifier.
func commit(rq *request) error {
	fh := rq.handle()
	_ = rq.args.Uint64() // offset
	_ = rq.args.Uint32() // count
	if err := rq.decoded(); err != nil {
		return err
	}
	_, p, st, err := rq.statHandle(fh)
	resolved := err == nil
	if err == nil {
		err = writable(st)
	}
	if err == nil {
		var f openFile
		// Opening read-only is enough for fsync, and reaches the upper copy of a file
		// that has one.
		if f, _, err = rq.s.files.get(p, false, nil); err == nil {
			err = rq.sync(f)
			f.Release()
		}
	}
	rq.status(err)
	if resolved {
		st = rq.statOrNil(p)
	}
	rq.wccData(nil, st)
	if err == nil {
		rq.res.Fixed(rq.s.writeVerifier[:])
	}
	return nil
}
