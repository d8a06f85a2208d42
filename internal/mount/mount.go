// Package mount is the MOUNT protocol, version 3 (RFC 1813 appendix I), of the server's
// exports: MNT gives a client the root handle of an export or of a directory below it, and
// EXPORT and DUMP tell who may mount what and who did (showmount, libnfs discovery).
//
// MNT itself is answered by go-nfs through the bridge (package gonfs), which turns the
// path into the handle; this package decodes and checks the call first and keeps the DUMP
// list from what MNT and UMNT said. The list is advisory (the RFC says so): it is bounded,
// and forgetting is safe.
//
// Files: mount.go (Config, New, the dispatch table), one file per procedure named after it
// (mnt.go, dump.go, umnt.go, umntall.go, export.go; NULL is in the table), table.go (the
// DUMP list).
//
// Lock order: table.mu is a leaf.
package mount

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// Program numbers of MOUNT.
const (
	ProgramNumber = 100005
	Version       = 3
)

// Proc is a MOUNT procedure number.
type Proc uint32

// The MOUNT v3 procedures.
const (
	ProcNull    Proc = 0
	ProcMnt     Proc = 1
	ProcDump    Proc = 2
	ProcUmnt    Proc = 3
	ProcUmntAll Proc = 4
	ProcExport  Proc = 5
)

// maxPathLen is MNTPATHLEN, the protocol's bound on a dirpath.
const maxPathLen = 1024

// mountStatOK is MNT3_OK; the other mountstat3 values come from go-nfs's answer.
const mountStatOK = 0

var errPathTooLong = errors.New("mount: dirpath over 1024 bytes")

// dirpath decodes the dirpath argument of MNT and UMNT.
func dirpath(call *oncrpc.Call) (string, error) {
	dir := call.Args.OpaqueMax(maxPathLen, errPathTooLong)
	if call.Args.Err() != nil {
		return "", oncrpc.ErrGarbageArgs
	}
	return string(dir), nil
}

// Forwarder answers a MNT call whose arguments were checked, with a whole reply record.
type Forwarder func(ctx context.Context, call *oncrpc.Call) ([]byte, error)

// Config is what the MOUNT program needs.
type Config struct {
	Mnt Forwarder
	// Exports is the EXPORT list now (it changes with a reload).
	Exports func() []Export
	Logger  *slog.Logger
}

// Server answers MOUNT calls.
type Server struct {
	forward Forwarder
	exports func() []Export
	mounts  *table
	logger  *slog.Logger
}

// New builds the MOUNT server.
func New(cfg Config) (*Server, error) {
	if cfg.Mnt == nil || cfg.Exports == nil {
		return nil, errors.New("mount: MNT needs a forwarder, EXPORT the exports")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{forward: cfg.Mnt, exports: cfg.Exports, mounts: newTable(), logger: logger}, nil
}

// Program is MOUNT's dispatch table. Every procedure is Exclusive: mounting changes what
// the export means to a client, so it is ordered with the client's other calls.
func (s *Server) Program() oncrpc.Program {
	table := []struct {
		proc Proc
		name string
		fn   oncrpc.Handler
	}{
		{ProcNull, "NULL", func(context.Context, *oncrpc.Call, *oncrpc.Reply) error { return nil }},
		{ProcMnt, "MNT", s.mnt},
		{ProcDump, "DUMP", s.dump},
		{ProcUmnt, "UMNT", s.umnt},
		{ProcUmntAll, "UMNTALL", s.umntAll},
		{ProcExport, "EXPORT", s.export},
	}
	procs := make([]oncrpc.Procedure, len(table))
	for _, e := range table {
		procs[e.proc] = oncrpc.Procedure{Name: e.name, Handle: e.fn, Exclusive: true, Status: e.proc == ProcMnt}
	}
	return oncrpc.Program{Name: "MOUNT", Number: ProgramNumber, Version: Version, Procedures: procs}
}
