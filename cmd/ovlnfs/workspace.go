package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/control"
)

// workspaceTimeout bounds one control request: a snapshot of a big upper on a filesystem
// that cannot share data copies it all.
const workspaceTimeout = time.Hour

// runSnapshot is `ovlnfs snapshot`: take, list or remove snapshots of a served workspace,
// through the server's control socket.
func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("control", "", "the server's control socket (serve --control)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs snapshot --control=SOCKET /EXPORT NAME     take a snapshot
       ovlnfs snapshot --control=SOCKET list /EXPORT        list them
       ovlnfs snapshot --control=SOCKET rm /EXPORT NAME     remove one

A snapshot is a copy of the workspace's upper layer and index in its workdir
(ovlnfs-snapshots/NAME), taken while the export is frozen: the calls in flight finish,
new ones wait until it is taken. On XFS and btrfs the copy shares the files' data
(FICLONE) and costs little; elsewhere the data is copied. ovlnfs reset --to=NAME goes
back to it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	rest := fs.Args()
	req := control.Request{Op: control.OpSnapshot}
	switch {
	case len(rest) == 2 && rest[0] == "list":
		req = control.Request{Op: control.OpSnapshots, Export: rest[1]}
	case len(rest) == 3 && rest[0] == "rm":
		req = control.Request{Op: control.OpRemoveSnapshot, Export: rest[1], Name: rest[2]}
	case len(rest) == 2 && strings.HasPrefix(rest[0], "/"):
		req.Export, req.Name = rest[0], rest[1]
	default:
		fs.Usage()
		return exitBadConfig
	}
	resp, code := callControl(ctx, *socket, req, stderr)
	if code != exitOK {
		return code
	}
	switch req.Op {
	case control.OpSnapshots:
		for _, s := range resp.Snapshots {
			fmt.Fprintf(stdout, "%s\t%s\t%d files\t%d bytes\n", s.Name, s.Taken.Format(time.RFC3339), s.Files, s.Bytes)
		}
	case control.OpSnapshot:
		fmt.Fprintf(stdout, "snapshot %s of %s taken: %d files, %d bytes, in %s\n", req.Name, req.Export, resp.Snapshot.Files, resp.Snapshot.Bytes, resp.Took)
	case control.OpRemoveSnapshot:
		fmt.Fprintf(stdout, "snapshot %s of %s removed\n", req.Name, req.Export)
	}
	return exitOK
}

// runReset is `ovlnfs reset`: empty a served workspace's upper, or make it a snapshot's.
func runReset(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reset", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("control", "", "the server's control socket (serve --control)")
	to := fs.String("to", "", "the snapshot to go back to (default: none, the lowers alone)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs reset --control=SOCKET [--to=SNAPSHOT] /EXPORT

Throws away what the workspace changed (its upper layer and index), or goes back to a
snapshot, while serving. Clients stay mounted and see the new tree; handles of objects
it lacks, and of files the workspace made (restored from a snapshot they are copies),
answer STALE; handles of the lowers' objects keep working. The export is frozen
meanwhile. A reset killed at any point leaves the old workspace or the new one.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "/") {
		fs.Usage()
		return exitBadConfig
	}
	resp, code := callControl(ctx, *socket, control.Request{Op: control.OpReset, Export: fs.Arg(0), Name: *to}, stderr)
	if code != exitOK {
		return code
	}
	what := "its lowers"
	if *to != "" {
		what = "snapshot " + *to
	}
	fmt.Fprintf(stdout, "%s reset to %s in %s\n", fs.Arg(0), what, resp.Took)
	return exitOK
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitBadConfig
}

func callControl(ctx context.Context, socket string, req control.Request, stderr io.Writer) (control.Response, int) {
	return callControlWithProgress(ctx, socket, req, nil, stderr)
}

func callControlWithProgress(ctx context.Context, socket string, req control.Request, progress func(control.Progress), stderr io.Writer) (control.Response, int) {
	if socket == "" {
		fmt.Fprintln(stderr, "ovlnfs: give the server's control socket: --control=PATH (as serve --control)")
		return control.Response{}, exitBadConfig
	}
	ctx, cancel := context.WithTimeout(ctx, workspaceTimeout)
	defer cancel()
	resp, err := control.CallWithProgress(ctx, socket, req, progress)
	if err != nil {
		fmt.Fprintf(stderr, "ovlnfs: %s %s: %v\n", req.Op, req.Export, err)
		return resp, exitFailure
	}
	return resp, exitOK
}

// runCommit is `ovlnfs commit`: bake a served workspace's upper into a new lower layer.
func runCommit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("commit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("control", "", "the server's control socket (serve --control)")
	flatten := fs.Bool("flatten", false, "make the layer the whole tree with the whiteouts applied, replacing the lowers")
	target := fs.String("into", "", "put the layer onto this other export's stack instead (`/EXPORT`, on the same lowers)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: ovlnfs commit --control=SOCKET [--flatten | --into=/OTHER] /EXPORT LAYERDIR

Bakes what the workspace changed into a new lower layer, LAYERDIR (made by the commit, on
the upper's filesystem), puts it on top of the workspace's lowers and starts the upper
over empty, while serving. The upper's entries are moved, not copied, so it costs one
rename per entry of the upper's root, and every object keeps its identity: clients stay
mounted, with their handles, open files and current directories. The new layer keeps the
overlay format: the kernel overlay mounts it under the old lowers (lowerdir=LAYERDIR:...).
The committed layers are recorded in the workdir (ovlnfs-stack) and stay on top of the
exports file's lowers. A commit killed at any point leaves the old workspace or the new.

With --flatten the whiteouts are applied: LAYERDIR is the workspace's whole tree as a
plain directory tree (no whiteouts, opaque marks or redirects; what only the lowers had is
copied, with FICLONE where the filesystem can), and it replaces the workspace's lowers:
the stack is LAYERDIR alone from then on, and any overlay (or a bind mount) can use it
alone. Objects keep their identities here too: copies carry an origin record naming the
object they were, and the exports file's lowers must stay where they are (they decode
those records).

With --into=/OTHER the layer goes onto the stack of the export /OTHER instead, under its
upper (its own changes stay on top, its clients stay mounted); /EXPORT hands its changes
over and starts over on its unchanged lowers, so its clients' handles of what it had made
answer "stale", as after a reset. Refused unless both exports stand on the same lowers
(the same committed layers over the same exports-file lowers) with uppers on one
filesystem.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 2 || !strings.HasPrefix(fs.Arg(0), "/") || (*target != "" && !strings.HasPrefix(*target, "/")) {
		fs.Usage()
		return exitBadConfig
	}
	if *flatten && *target != "" {
		fmt.Fprintln(stderr, "ovlnfs: commit: --flatten and --into do not go together (a flattened layer replaces the lowers it would have to share)")
		return exitBadConfig
	}
	into, err := filepath.Abs(fs.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "ovlnfs: commit: %v\n", err)
		return exitBadConfig
	}
	// On a terminal, a long commit shows how far it is.
	var progress func(control.Progress)
	if f, ok := stderr.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			progress = func(p control.Progress) {
				fmt.Fprintf(stderr, "\rcommitting %s: %d of %d entries moved", fs.Arg(0), p.Done, p.Total)
				if p.Done == p.Total {
					fmt.Fprintln(stderr)
				}
			}
		}
	}
	req := control.Request{Op: control.OpCommit, Export: fs.Arg(0), Name: into, Flatten: *flatten, Target: *target}
	resp, code := callControlWithProgress(ctx, *socket, req, progress, stderr)
	if code != exitOK {
		return code
	}
	how := "committed"
	switch {
	case *flatten:
		how = "flattened"
	case *target != "":
		how = "handed over to " + *target
	}
	fmt.Fprintf(stdout, "%s %s into %s (%d entries) in %s\n", fs.Arg(0), how, resp.Commit.Layer, resp.Commit.Entries, resp.Took)
	return exitOK
}
