// Package mount is the MOUNT protocol, version 3 (RFC 1813 appendix I), of the one export
// "/": MNT gives a client the root handle of the export or of a directory below it, and
// EXPORT and DUMP tell who may mount what and who did (showmount, libnfs discovery).
//
// MNT itself is answered by go-nfs through the bridge (package gonfs), which turns the
// path into the handle; this package decodes and checks the call first and keeps the DUMP
// list from what MNT and UMNT said. The list is advisory (the RFC says so): it is bounded,
// and forgetting is safe.
//
// Files: mount.go (the program table and procedures), table.go (the DUMP list).
//
// Lock order: table.mu is a leaf.
package mount

import (
	"context"
	"encoding/binary"
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

// ExportPath is the one export; MNT accepts directories below it too.
const ExportPath = "/"

// maxPathLen is MNTPATHLEN, the protocol's bound on a dirpath.
const maxPathLen = 1024

// mountStatOK is MNT3_OK; the other mountstat3 values come from go-nfs's answer.
const mountStatOK = 0

var errPathTooLong = errors.New("mount: dirpath over 1024 bytes")

// Forwarder answers a MNT call whose arguments were checked, with a whole reply record.
type Forwarder func(ctx context.Context, call *oncrpc.Call) ([]byte, error)

// Config is what the MOUNT program needs.
type Config struct {
	Mnt    Forwarder
	Logger *slog.Logger
}

// Server answers MOUNT calls.
type Server struct {
	mnt    Forwarder
	mounts *table
	logger *slog.Logger
}

// New builds the MOUNT server.
func New(cfg Config) (*Server, error) {
	if cfg.Mnt == nil {
		return nil, errors.New("mount: MNT needs a forwarder")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{mnt: cfg.Mnt, mounts: newTable(), logger: logger}, nil
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
		{ProcMnt, "MNT", s.mnt3},
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

// mnt3 answers MNT through the forwarder and enters a successful mount in the DUMP list.
func (s *Server) mnt3(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
	dir := call.Args.OpaqueMax(maxPathLen, errPathTooLong)
	if call.Args.Err() != nil {
		return oncrpc.ErrGarbageArgs
	}
	raw, err := s.mnt(ctx, call)
	if err != nil {
		s.logger.Error("MNT not answered", "client", call.Client, "err", err)
		return oncrpc.ErrSystem
	}
	if at, ok := oncrpc.ResultsAt(raw); ok && at+4 <= len(raw) && binary.BigEndian.Uint32(raw[at:]) == mountStatOK {
		s.mounts.add(call.Client, string(dir))
	}
	reply.Raw = raw
	return nil
}

// dump lists the mounts MNT entered (mountlist).
func (s *Server) dump(_ context.Context, _ *oncrpc.Call, reply *oncrpc.Reply) error {
	for _, e := range s.mounts.list() {
		reply.Bool(true) // value follows
		reply.String(e.host)
		reply.String(e.dir)
	}
	reply.Bool(false)
	return nil
}

// umnt removes a mount from the DUMP list.
func (s *Server) umnt(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	dir := call.Args.OpaqueMax(maxPathLen, errPathTooLong)
	if call.Args.Err() != nil {
		return oncrpc.ErrGarbageArgs
	}
	s.mounts.remove(call.Client, string(dir))
	return nil
}

// umntAll removes every mount of the calling host.
func (s *Server) umntAll(_ context.Context, call *oncrpc.Call, _ *oncrpc.Reply) error {
	s.mounts.removeHost(call.Client)
	return nil
}

// export lists the one export, with no groups: every client may mount it.
func (s *Server) export(_ context.Context, _ *oncrpc.Call, reply *oncrpc.Reply) error {
	reply.Bool(true) // an export follows
	reply.String(ExportPath)
	reply.Bool(false) // no groups
	reply.Bool(false) // no more exports
	return nil
}
