package nfs3

import "github.com/ovlnfs/ovlnfs/internal/oncrpc"

// Program numbers of NFS (RFC 1813).
const (
	ProgramNumber = 100003
	Version       = 3
)

// Proc is an NFSv3 procedure number.
type Proc uint32

// The NFSv3 procedures (RFC 1813 section 3.3).
const (
	ProcNull        Proc = 0
	ProcGetattr     Proc = 1
	ProcSetattr     Proc = 2
	ProcLookup      Proc = 3
	ProcAccess      Proc = 4
	ProcReadlink    Proc = 5
	ProcRead        Proc = 6
	ProcWrite       Proc = 7
	ProcCreate      Proc = 8
	ProcMkdir       Proc = 9
	ProcSymlink     Proc = 10
	ProcMknod       Proc = 11
	ProcRemove      Proc = 12
	ProcRmdir       Proc = 13
	ProcRename      Proc = 14
	ProcLink        Proc = 15
	ProcReaddir     Proc = 16
	ProcReaddirplus Proc = 17
	ProcFsstat      Proc = 18
	ProcFsinfo      Proc = 19
	ProcPathconf    Proc = 20
	ProcCommit      Proc = 21
)

// Program is the dispatch table of NFSv3: every procedure, its name, and the function in
// the file named after it that answers it.
func (s *Server) Program() oncrpc.Program {
	table := []struct {
		proc Proc
		name string
		fn   func(*request) error
	}{
		{ProcNull, "NULL", null},
		{ProcGetattr, "GETATTR", getattr},
		{ProcSetattr, "SETATTR", setattr},
		{ProcLookup, "LOOKUP", lookup},
		{ProcAccess, "ACCESS", access},
		{ProcReadlink, "READLINK", readlink},
		{ProcRead, "READ", read},
		{ProcWrite, "WRITE", write},
		{ProcCreate, "CREATE", create},
		{ProcMkdir, "MKDIR", mkdir},
		{ProcSymlink, "SYMLINK", symlink},
		{ProcMknod, "MKNOD", mknod},
		{ProcRemove, "REMOVE", remove},
		{ProcRmdir, "RMDIR", rmdir},
		{ProcRename, "RENAME", rename},
		{ProcLink, "LINK", link},
		{ProcReaddir, "READDIR", readdir},
		{ProcReaddirplus, "READDIRPLUS", readdirplus},
		{ProcFsstat, "FSSTAT", fsstat},
		{ProcFsinfo, "FSINFO", fsinfo},
		{ProcPathconf, "PATHCONF", pathconf},
		{ProcCommit, "COMMIT", commit},
	}
	procs := make([]oncrpc.Procedure, len(table))
	for _, e := range table {
		procs[e.proc] = oncrpc.Procedure{Name: e.name, Handle: s.procedure(e.name, e.fn), Status: e.proc != ProcNull}
	}
	return oncrpc.Program{Name: "NFS", Number: ProgramNumber, Version: Version, Procedures: procs}
}
