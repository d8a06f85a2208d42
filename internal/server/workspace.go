package server

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// workspaceOf is an export's writable part, for snapshots and resets.
func workspaceOf(cfg *Export) billyunion.Workspace {
	return billyunion.Workspace{Upper: cfg.Upper, Work: cfg.Work, XattrPrefix: cfg.XattrPrefix}
}

// ErrNoExport is returned for an export path the server does not serve.
var ErrNoExport = errors.New("no such export")

// frozen runs fn on the workspace of the export at path while the export is frozen: the
// calls using it have finished and new ones wait (other exports go on). With reopen, the
// union is closed before fn and opened again after it, whatever fn did; the export keeps
// its id, so handles of objects that still exist stay valid and the others answer STALE.
func (s *Server) frozen(path string, reopen bool, fn func(ws billyunion.Workspace) error) error {
	return s.frozenExports([]string{path}, reopen, nil, func(ws []billyunion.Workspace, _ []Export) error { return fn(ws[0]) })
}

// frozenExports is frozen for several exports at once (distinct paths), frozen in the
// order given; fn gets their workspaces and configurations in that order. prepare, when
// set, runs first on each export's open union with only the exports' changes stopped
// (the calls that can change the layers finish and new ones wait, the others go on), so
// that long work that reads the union (a flattened commit's copy) does not hold up reads.
func (s *Server) frozenExports(paths []string, reopen bool, prepare func(i int, u *billyunion.FS, ws billyunion.Workspace) error, fn func(ws []billyunion.Workspace, cfgs []Export) error) error {
	s.reconfigure.Lock() // no reload meanwhile
	defer s.reconfigure.Unlock()
	var es []*export
	for _, path := range paths {
		e, err := s.workspaceExport(path)
		if err != nil {
			return err
		}
		if slices.Contains(es, e) {
			return fmt.Errorf("export %s named twice: %w", path, syscall.EINVAL)
		}
		es = append(es, e)
	}
	wss := make([]billyunion.Workspace, len(es))
	cfgs := make([]Export, len(es))
	for i, e := range es {
		e.changes.Lock()
		defer e.changes.Unlock()
		wss[i], cfgs[i] = workspaceOf(&e.cfg), e.cfg
	}
	for i, e := range es {
		if prepare == nil {
			break
		}
		if !e.enter() {
			return fmt.Errorf("export %s: %w", e.cfg.Path, ErrNoExport)
		}
		err := prepare(i, e.union, wss[i])
		e.leave()
		if err != nil {
			return err
		}
	}
	for _, e := range es {
		e.inflight.Lock()
		defer e.inflight.Unlock()
		if e.retired {
			return fmt.Errorf("export %s: %w", e.cfg.Path, ErrNoExport)
		}
	}
	if !reopen {
		return fn(wss, cfgs)
	}
	var closeErr error
	for _, e := range es {
		e.nfs.Close()
		closeErr = errors.Join(closeErr, e.union.Close())
		// The union's use of the shared lowers ends only once the new union has one, so
		// they stay open across.
		defer s.releaseShared(e.shared)
		e.shared = nil
	}
	err := fn(wss, cfgs)
	for _, e := range es {
		if oerr := s.openParts(e); oerr != nil {
			// Without a union the export cannot serve: retire it, so its calls answer
			// STALE rather than fail on a closed union, and say so.
			e.retired = true
			_ = e.releaseWork()
			var rest []*export
			for _, x := range s.exports.Load().byPath {
				if x != e {
					rest = append(rest, x)
				}
			}
			s.exports.Store(newExportSet(rest))
			s.logger.Error("export retired: its union does not open again", "export", e.cfg.Path, "err", oerr)
			err = errors.Join(err, fmt.Errorf("export %s cannot be opened again and is no longer served: %w", e.cfg.Path, oerr))
		}
	}
	return errors.Join(closeErr, err)
}

// workspaceExport is the served export at path that has a workspace (an upper); the
// caller holds s.reconfigure.
func (s *Server) workspaceExport(path string) (*export, error) {
	for _, e := range s.exports.Load().byPath {
		if e.cfg.Path != path {
			continue
		}
		if e.cfg.Upper == "" {
			return nil, fmt.Errorf("export %s is read-only: it has no upper layer: %w", path, syscall.EROFS)
		}
		return e, nil
	}
	return nil, fmt.Errorf("export %s: %w", path, ErrNoExport)
}

// unfrozen runs fn on the export's workspace without stopping its calls: for what reads
// or changes the snapshots only, not the upper.
func (s *Server) unfrozen(path string, fn func(ws billyunion.Workspace) error) error {
	s.reconfigure.Lock()
	defer s.reconfigure.Unlock()
	e, err := s.workspaceExport(path)
	if err != nil {
		return err
	}
	return fn(workspaceOf(&e.cfg))
}

// Snapshot takes the snapshot name of the export's workspace. Its changes are stopped
// meanwhile (the change calls in flight finish, new ones wait); reads go on, and the
// other exports are not touched.
func (s *Server) Snapshot(path, name string) (billyunion.SnapshotInfo, error) {
	s.reconfigure.Lock() // no reload, reset or commit meanwhile: the export stays open
	defer s.reconfigure.Unlock()
	e, err := s.workspaceExport(path)
	if err != nil {
		return billyunion.SnapshotInfo{}, err
	}
	e.changes.Lock()
	defer e.changes.Unlock()
	return workspaceOf(&e.cfg).Snapshot(name)
}

// Reset empties the export's upper (snapshot "") or makes it the snapshot's, while
// serving: clients see the new tree, and handles of objects it lacks answer STALE.
func (s *Server) Reset(path, snapshot string) error {
	s.logger.Info("resetting a workspace", "export", path, "snapshot", snapshot)
	return s.frozen(path, true, func(ws billyunion.Workspace) error { return ws.Reset(snapshot) })
}

// Snapshots lists the export's snapshots.
func (s *Server) Snapshots(path string) ([]billyunion.SnapshotInfo, error) {
	var out []billyunion.SnapshotInfo
	err := s.unfrozen(path, func(ws billyunion.Workspace) error {
		var err error
		out, err = ws.Snapshots()
		return err
	})
	return out, err
}

// RemoveSnapshot removes one of the export's snapshots.
func (s *Server) RemoveSnapshot(path, name string) error {
	return s.unfrozen(path, func(ws billyunion.Workspace) error { return ws.RemoveSnapshot(name) })
}

// Commit bakes the export's upper into the new lower layer into (a directory to make on
// the upper's filesystem) while serving: the export frozen, its upper's entries moved
// into the layer, the union opened again over it with an empty upper. Objects keep their
// identities, so clients' handles, open files and current directories stay valid.
// With flatten the layer is the export's whole tree without the overlay's metadata and
// replaces its lowers (billyunion.CommitOptions.Flatten). With target (another export's
// path) the layer goes onto that export's stack instead, both frozen meanwhile, and this
// export starts over on its lowers (billyunion.CommitOptions.Target).
// progress, when set, hears how far the upper's entries have been moved.
func (s *Server) Commit(path, into string, flatten bool, target string, progress func(done, total int)) (billyunion.CommitInfo, error) {
	s.logger.Info("committing a workspace", "export", path, "into", into, "flatten", flatten, "target", target)
	var info billyunion.CommitInfo
	if target == path {
		return info, fmt.Errorf("commit: export %s into itself: %w", path, syscall.EINVAL)
	}
	paths := []string{path}
	if target != "" {
		paths = append(paths, target)
	}
	// The lower names of files the index holds are linked into the upper first: the
	// commit empties the index, which alone joined them to the copy. A flattened commit
	// then stages what the lowers add.
	prepare := func(i int, u *billyunion.FS, ws billyunion.Workspace) error {
		if i > 0 {
			return nil // the target keeps its upper and index
		}
		n, err := u.CoverIndexedAliases()
		if n > 0 {
			s.logger.Info("commit: lower names of indexed files linked into the upper", "export", path, "names", n)
		}
		if err != nil || !flatten {
			return err
		}
		n, err = ws.StageFlatten(u)
		if err == nil {
			s.logger.Info("commit: flattened commit staged", "export", path, "copied", n)
		}
		return err
	}
	err := s.frozenExports(paths, true, prepare, func(wss []billyunion.Workspace, cfgs []Export) error {
		ws := wss[0]
		ws.Progress = progress
		opts := billyunion.CommitOptions{Flatten: flatten}
		if target != "" {
			opts.Target, opts.Lowers, opts.TargetLowers = &wss[1], cfgs[0].Lowers, cfgs[1].Lowers
		}
		var err error
		info, err = ws.CommitWith(into, opts)
		return err
	})
	return info, err
}
