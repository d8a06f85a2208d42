package nfs3

// The enumerations of NFSv3's arguments and results (RFC 1813), defined once.
const (
	// ftype3: an object's type.
	nf3Reg, nf3Dir, nf3Blk, nf3Chr, nf3Lnk, nf3Sock, nf3Fifo = 1, 2, 3, 4, 5, 6, 7

	// time_how: how SETATTR sets a time.
	dontChange, setToServerTime, setToClientTime = 0, 1, 2

	// createhow3: CREATE's modes.
	createUnchecked, createGuarded, createExclusive = 0, 1, 2

	// stable_how: what a WRITE asks for and what its reply promises.
	stableUnstable, stableDataSync, stableFileSync = 0, 1, 2
)
