package nfs3

// rmdir answers RMDIR (RFC 1813 section 3.3.13): a file answers NOTDIR, "." INVAL and
// ".." NOTEMPTY, as Linux's nfsd does.
func rmdir(rq *request) error { return rq.removeEntry(true) }
