package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/gonfs"
	"github.com/ovlnfs/ovlnfs/internal/metrics"
	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
)

// export is one served export.
type export struct {
	server *Server
	cfg    Export // as configured; cfg.Clients is what it started with
	id     uint32 // in every handle of the export, and its fsid
	// union, handles, nfs and procs are replaced when a reset reopens the union:
	// guarded by inflight (written exclusively, read by a call holding it shared).
	union   *billyunion.FS
	handles *handles.Handles
	nfs     *nfs3.Server
	procs   []oncrpc.Procedure // nfs.Program().Procedures
	shared  *sharedLowers      // the lower work the union shares; guarded as union
	work    *workdirLock       // nil for a read-only export
	// unreport stops the metrics' reports of the export (nil without metrics).
	unreport func()
	// rules are the client rules now: a reload that changes only them swaps them here.
	rules atomic.Pointer[clients.Rules]
	// inflight is held shared by each call using the export, and exclusively to retire
	// it, so that its union closes only after the calls that found it have ended.
	inflight sync.RWMutex
	retired  bool // guarded by inflight
	// changes is held shared by each call of a procedure that can change the layers
	// (nfs3.Changes), taken before inflight, and exclusively by a snapshot and by a
	// freeze before its inflight: it waits for the changes in flight, holds new ones
	// back and lets every other call through while a snapshot copies the upper or a
	// freeze prepares (a flattened commit's copy).
	changes sync.RWMutex
}

// exportSet is the exports served at one time; it is never changed once published.
type exportSet struct {
	byID map[uint32]*export
	// byPath lists the exports longest path first, so that the first whose path holds a
	// mount path is the innermost.
	byPath []*export
}

func newExportSet(es []*export) *exportSet {
	set := &exportSet{byID: make(map[uint32]*export, len(es)), byPath: slices.Clone(es)}
	for _, e := range es {
		set.byID[e.id] = e
	}
	sort.Slice(set.byPath, func(i, j int) bool {
		a, b := set.byPath[i].cfg.Path, set.byPath[j].cfg.Path
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	return set
}

// retireAll closes every export of the set.
func (set *exportSet) retireAll() error {
	var err error
	for _, e := range set.byID {
		err = errors.Join(err, e.retire())
	}
	return err
}

// exportID is the id an export's handles carry. The export of "/" keeps the layer set's
// own id, which is what every handle of the single-export server carries, so such handles
// stay valid; other paths mix the path in, so that two exports of the same layers (a
// read-only view at two paths) are still told apart.
func exportID(path string, layerSet uint32) uint32 {
	if path == "/" {
		return layerSet
	}
	h := fnv.New32a()
	h.Write(binary.BigEndian.AppendUint32(nil, layerSet))
	h.Write([]byte(path))
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// openSet opens every export of cfgs, or none: on an error, those opened are closed.
func (s *Server) openSet(cfgs []Export) (*exportSet, error) {
	var opened []*export
	fail := func(err error) (*exportSet, error) {
		for _, e := range opened {
			_ = e.retire()
		}
		return nil, err
	}
	for i := range cfgs {
		e, err := s.openExport(cfgs[i])
		if err != nil {
			return fail(err)
		}
		opened = append(opened, e)
	}
	if err := checkSet(opened); err != nil {
		return fail(err)
	}
	return newExportSet(opened), nil
}

// checkSet refuses exports that share a path or whose handles could not be told apart.
func checkSet(es []*export) error {
	paths := map[string]bool{}
	ids := map[uint32]string{}
	for _, e := range es {
		if paths[e.cfg.Path] {
			return fmt.Errorf("export %s is declared twice", e.cfg.Path)
		}
		paths[e.cfg.Path] = true
		if other, ok := ids[e.id]; ok {
			return fmt.Errorf("exports %s and %s would carry the same id %08x in their file handles: move one to another path", other, e.cfg.Path, e.id)
		}
		ids[e.id] = e.cfg.Path
	}
	return nil
}

// openExport opens one export's union (locking its workdir first) and builds its handles
// and NFSv3 server.
func (s *Server) openExport(cfg Export) (*export, error) {
	if cfg.Path == "" || cfg.Path[0] != '/' {
		return nil, fmt.Errorf("export %q: the path clients mount must be absolute", cfg.Path)
	}
	if len(cfg.Lowers) == 0 {
		return nil, errorf(&cfg, "no lower layer")
	}
	e := &export{cfg: cfg, server: s}
	rules := slices.Clone(cfg.Clients)
	e.rules.Store(&rules)
	if l := s.held[cfg.Work]; cfg.Upper != "" && l != nil {
		delete(s.held, cfg.Work)
		e.work = l
	} else if cfg.Upper != "" {
		lock, err := lockWorkdir(cfg.Work, cfg.CreateWork)
		if err != nil {
			if errors.Is(err, ErrWorkdirBusy) {
				return nil, errorf(&cfg, "workdir %s is in use (%v): each running ovlnfs needs its own workdir", cfg.Work, err)
			}
			return nil, errorf(&cfg, "cannot lock workdir %s: %v", cfg.Work, unwrapPathError(err))
		}
		e.work = lock
	}
	if err := s.openParts(e); err != nil {
		_ = e.releaseWork()
		if cfg.Path == "/" {
			return nil, err // the one export of the flags: the union's error says it all
		}
		return nil, errorf(&cfg, "%v", err)
	}
	if m := s.cfg.Metrics; m != nil {
		e.unreport = m.AddExport(cfg.Path, e.stats)
	}
	return e, nil
}

// stats is the export's union statistics for the metrics.
func (e *export) stats() metrics.ExportStats {
	if !e.enter() {
		return metrics.ExportStats{}
	}
	defer e.leave()
	var st metrics.ExportStats
	st.CopyUps, st.CopyUpBytes, st.CopyUpTime = e.union.CopyUpStats()
	ls := e.union.ListingStats()
	st.ListingHits, st.ListingMisses = ls.Hits, ls.Misses
	st.Resolutions = e.handles.ResolutionStats()
	if q, ok := e.union.Quota(); ok {
		st.Quota, st.QuotaLimitBytes, st.QuotaLimitInodes, st.QuotaUsedBytes, st.QuotaUsedInodes =
			true, q.LimitBytes, q.LimitInodes, q.Bytes, q.Inodes
	}
	return st
}

// openParts opens e's union, handles and NFSv3 server (its workdir locked already). An
// interrupted reset of the workspace is finished or undone first.
func (s *Server) openParts(e *export) error {
	cfg := e.cfg
	logger := s.logger
	if cfg.Path != "/" {
		logger = logger.With("export", cfg.Path)
	}
	if cfg.Upper != "" {
		if err := workspaceOf(&cfg).Recover(); err != nil {
			return fmt.Errorf("recovering an interrupted reset: %w", err)
		}
	}
	// Layers committed from the upper (ovlnfs commit) lie above the configured lowers, or
	// replace them once one was flattened (they stay as former lowers: identities).
	stacked := cfg
	var committed, formerCommitted int
	var former []string
	if cfg.Upper != "" {
		stack, err := workspaceOf(&cfg).ReadStack()
		if err != nil {
			return err
		}
		stacked.Lowers, committed, former, formerCommitted = stack.Lowers(cfg.Lowers)
	}
	shared, err := s.acquireShared(stacked)
	if err != nil {
		return err
	}
	union, err := billyunion.New(billyunion.Options{
		Shared:          shared.lowers,
		CommittedLowers: committed,
		FormerLowers:    former,
		FormerCommitted: formerCommitted,
		Upper:           cfg.Upper,
		Work:            cfg.Work,
		XattrPrefix:     cfg.XattrPrefix,
		RedirectDir:     cfg.RedirectDir,
		Unicode:         cfg.Unicode,
		Index:           cfg.Index,
		DirCacheEntries: s.cfg.DirCacheEntries,
		QuotaBytes:      cfg.QuotaBytes,
		QuotaInodes:     cfg.QuotaInodes,
		Logger:          logger.With("component", "union"),
	})
	if err != nil {
		s.releaseShared(shared)
		return err
	}
	fail := func(err error) error {
		_ = union.Close()
		s.releaseShared(shared)
		return err
	}
	id := exportID(cfg.Path, union.LayerSetID())
	if e.id != 0 && id != e.id {
		return fail(fmt.Errorf("the layers' identity changed (export id %08x, was %08x)", id, e.id))
	}
	hs, err := handles.New(union, handles.Options{CacheEntries: s.cfg.HandleCacheEntries, Export: id,
		Logger: logger.With("component", "handles")})
	if err != nil {
		return fail(err)
	}
	statfsPath := cfg.Upper
	if union.ReadOnly() || statfsPath == "" {
		statfsPath = cfg.Lowers[0]
	}
	nfs, err := nfs3.New(nfs3.Config{Union: union, Handles: hs, StatfsPath: statfsPath,
		ActAsCaller: s.cfg.ActAsCaller, Admit: e.admit, RefuseAppleDouble: cfg.RefuseAppleDouble, Logger: logger})
	if err != nil {
		return fail(err)
	}
	e.id, e.union, e.handles, e.nfs, e.procs, e.shared = id, union, hs, nfs, nfs.Program().Procedures, shared
	return nil
}

// sharedLowers is one billyunion.Shared and how many open unions use it.
type sharedLowers struct {
	key    string
	lowers *billyunion.Shared
	users  int // guarded by Server.reconfigure
}

// sharedKey names the lower work a configuration can share: the same lowers, in order,
// under the same xattr namespace.
func sharedKey(cfg Export) string {
	return cfg.XattrPrefix + "\x00" + strings.Join(cfg.Lowers, "\x00")
}

// acquireShared is the Shared of cfg's lowers, made on first use. The caller holds
// Server.reconfigure (or is New, before serving).
func (s *Server) acquireShared(cfg Export) (*sharedLowers, error) {
	key := sharedKey(cfg)
	if sl := s.shared[key]; sl != nil {
		sl.users++
		return sl, nil
	}
	lowers, err := billyunion.NewShared(billyunion.SharedOptions{Lowers: cfg.Lowers, XattrPrefix: cfg.XattrPrefix,
		DirCacheEntries: s.cfg.DirCacheEntries, HandleCacheEntries: s.cfg.HandleCacheEntries,
		Logger: s.logger.With("component", "shared-lowers")})
	if err != nil {
		return nil, err
	}
	sl := &sharedLowers{key: key, lowers: lowers, users: 1}
	s.shared[key] = sl
	return sl, nil
}

// releaseShared lets go of one use of sl, closing it after the last (its unions closed).
func (s *Server) releaseShared(sl *sharedLowers) {
	if sl == nil {
		return
	}
	if sl.users--; sl.users > 0 {
		return
	}
	delete(s.shared, sl.key)
	if err := sl.lowers.Close(); err != nil {
		s.logger.Warn("closing shared lowers", "err", err)
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// admit is the export's grant for a client address now.
func (e *export) admit(remote net.Addr) (clients.Grant, bool) {
	return e.rules.Load().Match(clients.AddrOf(remote))
}

// enter takes the export for one call: false when it has been retired since the caller
// found it.
func (e *export) enter() bool {
	e.inflight.RLock()
	if e.retired {
		e.inflight.RUnlock()
		return false
	}
	return true
}

func (e *export) leave() { e.inflight.RUnlock() }

// retire waits for the calls using the export to end and closes it. Calls that find it
// afterwards are routed again (route).
func (e *export) retire() error {
	e.inflight.Lock()
	defer e.inflight.Unlock()
	if e.retired {
		return nil
	}
	e.retired = true
	if e.unreport != nil {
		e.unreport()
	}
	e.nfs.Close()
	err := e.union.Close()
	e.server.releaseShared(e.shared)
	e.shared = nil
	return errors.Join(err, e.releaseWork())
}

func (e *export) releaseWork() error {
	if e.work == nil {
		return nil
	}
	err := e.work.release()
	e.work = nil
	return err
}

// sameLayers reports whether two configurations open the same union: a reload that
// changes nothing but the client rules keeps the export, its caches and its clients.
func sameLayers(a, b *Export) bool {
	return a.Path == b.Path && slices.Equal(a.Lowers, b.Lowers) && a.Upper == b.Upper && a.Work == b.Work &&
		a.XattrPrefix == b.XattrPrefix && a.RedirectDir == b.RedirectDir && a.Unicode == b.Unicode &&
		a.Index == b.Index && a.RefuseAppleDouble == b.RefuseAppleDouble &&
		a.QuotaBytes == b.QuotaBytes && a.QuotaInodes == b.QuotaInodes
}

// nfsProgram is the NFSv3 program of every export: each procedure goes to the export its
// first file handle names (route).
func (s *Server) nfsProgram() oncrpc.Program {
	procs := slices.Clone(s.nfsProcs)
	for i := range procs {
		if procs[i].Handle != nil {
			procs[i].Handle = s.route(i)
		}
	}
	return oncrpc.Program{Name: "NFS", Number: nfs3.ProgramNumber, Version: nfs3.Version, Procedures: procs}
}

// route answers NFSv3 procedure proc with the export the call's first argument, a file
// handle in every procedure but NULL, names. A handle of no export now served (of a
// removed export, or not a handle at all) goes to any export, whose handles refuse it: the
// client gets STALE, or GARBAGE_ARGS, with the procedure's own failure results.
func (s *Server) route(proc int) oncrpc.Handler {
	changes := nfs3.Changes(nfs3.Proc(proc))
	return func(ctx context.Context, call *oncrpc.Call, reply *oncrpc.Reply) error {
		for {
			set := s.exports.Load()
			e := set.byID[firstHandleExport(call)]
			if e == nil && len(set.byPath) > 0 {
				e = set.byPath[0]
			}
			if e == nil {
				return oncrpc.ErrSystem // no export at all: only while closing
			}
			if changes {
				e.changes.RLock() // before inflight: a freeze stops changes first
			}
			if !e.enter() {
				if changes {
					e.changes.RUnlock()
				}
				continue // retired since: Reconfigure published its successor set first
			}
			m := s.cfg.Metrics
			var start time.Time
			if m != nil {
				start = time.Now() // only for the metrics: nothing else per call
			}
			err := e.procs[proc].Handle(ctx, call, reply)
			if changes {
				e.changes.RUnlock()
			}
			e.leave()
			if m == nil {
				return err
			}
			if err == nil {
				observe(m, e.cfg.Path, s.nfsProcs[proc].Name, uint32(proc), reply, time.Since(start))
			}
			return err
		}
	}
}

// observe counts one answered call: its status (the first word of every NFSv3 result),
// the bytes a READ returned (the reply's data) or a WRITE wrote (its count, 16 bytes
// before the results' end: count, committed, verifier).
func observe(m *metrics.Metrics, export, name string, proc uint32, reply *oncrpc.Reply, d time.Duration) {
	res := reply.Results()
	if len(res) < 4 {
		m.Observe(export, name, 0, d, 0, 0) // NULL
		return
	}
	status := binary.BigEndian.Uint32(res)
	read, written := 0, 0
	switch {
	case status != 0:
	case proc == uint32(nfs3.ProcRead):
		read = reply.DataLen()
	case proc == uint32(nfs3.ProcWrite) && len(res) >= 20:
		written = int(binary.BigEndian.Uint32(res[len(res)-16:]))
	}
	m.Observe(export, name, status, d, read, written)
}

// firstHandleExport is the export id of the call's first argument read as a file handle,
// without consuming the arguments; 0 when it is none.
func firstHandleExport(call *oncrpc.Call) uint32 {
	r := *call.Args
	fh := r.Opaque()
	if r.Err() != nil {
		return 0
	}
	id, err := handles.ExportOf(fh)
	if err != nil {
		return 0
	}
	return id
}

// mountTarget is gonfs's view of the exports: the innermost export holding dirpath, if the
// client at remote may mount it.
func (s *Server) mountTarget(dirpath string, remote net.Addr) (gonfs.Target, error) {
	for _, e := range s.exports.Load().byPath {
		below, ok := pathBelow(dirpath, e.cfg.Path)
		if !ok {
			continue
		}
		grant, ok := e.admit(remote)
		if !ok {
			return gonfs.Target{}, fmt.Errorf("client %s is not in the client list of %s: %w", clients.AddrOf(remote), e.cfg.Path, syscall.EACCES)
		}
		if !grant.Admits(remote) {
			return gonfs.Target{}, fmt.Errorf("client %s mounts from an unprivileged port and %s is secure (insecure admits it): %w", remote, e.cfg.Path, syscall.EACCES)
		}
		if !e.enter() {
			return gonfs.Target{}, fmt.Errorf("export %s is being removed: %w", e.cfg.Path, syscall.ENOENT)
		}
		defer e.leave()
		return gonfs.Target{Union: e.union, Handles: e.handles, Export: e.cfg.Path, Below: below}, nil
	}
	return gonfs.Target{}, fmt.Errorf("no export holds %s: %w", dirpath, syscall.ENOENT)
}

// pathBelow is the components of p below the export root, when p is root or below it.
func pathBelow(p, root string) ([]string, bool) {
	if p == root {
		return nil, true
	}
	prefix := root
	if root != "/" {
		prefix += "/"
	}
	if !strings.HasPrefix(p, prefix) {
		return nil, false
	}
	return strings.Split(p[len(prefix):], "/"), true
}

// exportList is what EXPORT lists: every export, sorted, with its rules' clients.
func (s *Server) exportList() []mount.Export {
	set := s.exports.Load()
	out := make([]mount.Export, 0, len(set.byPath))
	for _, e := range set.byPath {
		me := mount.Export{Dir: e.cfg.Path, Groups: []string{}}
		for _, r := range *e.rules.Load() {
			me.Groups = append(me.Groups, r.Hosts.String())
		}
		out = append(out, me)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out
}

// lockKey is the lock manager's name of the file a handle is of: the export's id and the
// object's identity, so that one lower file locked through two workspaces, where it is
// two files, is two names. A client the export's rules do not admit gets none.
func (s *Server) lockKey(fh []byte, client netip.Addr) (string, error) {
	id, err := handles.ExportOf(fh)
	if err != nil {
		return "", err
	}
	e := s.exports.Load().byID[id]
	if e == nil {
		return "", syscall.ESTALE
	}
	if _, ok := e.rules.Load().Match(client); !ok {
		return "", syscall.EACCES
	}
	if !e.enter() {
		return "", syscall.ESTALE
	}
	key, err := e.handles.Identity(fh)
	e.leave()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%08x:%s", id, key), nil
}

// Reconfigure makes cfgs the exports served, while serving. An export whose layers and
// options are unchanged stays open (its client rules are replaced); a new one is opened;
// one no longer listed, or listed with other layers, is retired once the calls using it
// have ended, and its handles then answer STALE. The other exports' clients notice
// nothing.
//
// Everything that can be opened beside the running exports is opened first, and on an
// error nothing changes. A changed export that keeps its upper or workdir can only be
// opened once its predecessor has closed (one union per workdir): it is opened last, and
// if that fails it is left out and the error says so.
func (s *Server) Reconfigure(cfgs []Export) error {
	if len(cfgs) == 0 {
		return errors.New("server: no export to serve")
	}
	s.reconfigure.Lock()
	defer s.reconfigure.Unlock()
	old := s.exports.Load()
	oldByPath := map[string]*export{}
	busyDirs := map[string]bool{} // the uppers and workdirs of the exports kept open
	for _, e := range old.byPath {
		oldByPath[e.cfg.Path] = e
	}
	var keep, opened []*export
	var later []Export
	retiring := map[*export]bool{}
	for _, e := range old.byPath {
		retiring[e] = true
	}
	for i := range cfgs {
		c := &cfgs[i]
		if e := oldByPath[c.Path]; e != nil && sameLayers(&e.cfg, c) {
			keep = append(keep, e)
			delete(retiring, e)
		}
	}
	for e := range retiring {
		if e.cfg.Upper != "" {
			busyDirs[e.cfg.Upper], busyDirs[e.cfg.Work] = true, true
		}
	}
	abandon := func(err error) error {
		for _, e := range opened {
			_ = e.retire()
		}
		return err
	}
	for i := range cfgs {
		c := cfgs[i]
		if e := oldByPath[c.Path]; e != nil && sameLayers(&e.cfg, &c) {
			continue
		}
		if c.Upper != "" && (busyDirs[c.Upper] || busyDirs[c.Work]) {
			later = append(later, c)
			continue
		}
		e, err := s.openExport(c)
		if err != nil {
			return abandon(err)
		}
		opened = append(opened, e)
	}
	next := append(slices.Clone(keep), opened...)
	if err := checkSet(next); err != nil {
		return abandon(err)
	}
	// New rules for the kept exports take effect with the new set.
	byPath := map[string]*Export{}
	for i := range cfgs {
		byPath[cfgs[i].Path] = &cfgs[i]
	}
	for _, e := range keep {
		rules := slices.Clone(byPath[e.cfg.Path].Clients)
		e.rules.Store(&rules)
	}
	s.exports.Store(newExportSet(next))
	var err error
	for e := range retiring {
		s.logger.Info("export retired", "export", e.cfg.Path)
		err = errors.Join(err, e.retire())
	}
	for _, c := range later {
		e, oerr := s.openExport(c)
		if oerr == nil {
			if oerr = checkSet(append(slices.Clone(next), e)); oerr != nil {
				_ = e.retire()
			}
		}
		if oerr != nil {
			err = errors.Join(err, fmt.Errorf("%v; the export is not served until a reload opens it", oerr))
			continue
		}
		next = append(next, e)
		s.exports.Store(newExportSet(next))
	}
	return err
}
