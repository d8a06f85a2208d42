package nfs3

import "github.com/ovlnfs/ovlnfs/billyunion"

// mkdir answers MKDIR (RFC 1813 section 3.3.9).
func mkdir(rq *request) error {
	d := rq.dirArgs()
	s := getSattr3(rq.args)
	if err := rq.decoded(); err != nil {
		return err
	}
	rq.makeEntry(&d, &s, func(p string) error {
		return rq.namespace().Mkdir(p, billyunion.FileMode(newMode(&s, 0o755)))
	})
	return nil
}
