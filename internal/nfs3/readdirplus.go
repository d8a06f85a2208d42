package nfs3

// readdirplus answers READDIRPLUS: READDIR's pages (readdir.go) with each entry's
// attributes and handle.
func readdirplus(rq *request) error { return rq.readDirectory(true) }
