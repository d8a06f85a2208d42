// Command ovlnfs serves a Linux-overlayfs-style union of directory layers over NFSv3.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses. 2 is the conventional "you asked for something impossible" status: every
// refused configuration exits with it.
const (
	exitOK        = 0
	exitFailure   = 1
	exitBadConfig = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without process-global effects, so tests can drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitBadConfig
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printUsage(stdout)
		return exitOK
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "diff":
		return runDiff(args[1:], stdout, stderr)
	case "snapshot":
		return runSnapshot(ctx, args[1:], stdout, stderr)
	case "reset":
		return runReset(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "commit":
		return runCommit(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "ovlnfs: unknown command %q (try 'ovlnfs --help')\n", args[0])
		return exitBadConfig
	}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Help goes to stdout when asked for, so `ovlnfs serve --help | less` works.
	usageOut := stderr
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			usageOut = stdout
		}
	}
	cfg, err := parseServeArgs(args, usageOut)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "ovlnfs: %s\n", ce.msg)
		}
		// flag errors were already printed by the flag package, with the usage.
		return exitBadConfig
	}
	return serve(ctx, cfg, stderr)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `ovlnfs serves a Linux-overlayfs-style union of directories over NFSv3.

Usage:
  ovlnfs serve --lowerdir=L1[:L2...] [--upperdir=U [--workdir=W]] [--listen=HOST:PORT] [flags]
  ovlnfs serve -o lowerdir=L1:L2,upperdir=U,workdir=W [flags]
  ovlnfs serve --config=FILE [flags]
  ovlnfs diff [--json] --lowerdir=L1[:L2...] --upperdir=U | --config=FILE /EXPORT
  ovlnfs snapshot --control=SOCKET [list|rm] /EXPORT [NAME]
  ovlnfs reset --control=SOCKET [--to=SNAPSHOT] /EXPORT
  ovlnfs commit --control=SOCKET [--flatten | --into=/OTHER] /EXPORT LAYERDIR
  ovlnfs check [--repair] --lowerdir=L1[:L2...] [--upperdir=U] | --config=FILE /EXPORT
  ovlnfs --help | ovlnfs COMMAND --help

Commands:
  serve     serve the union (or the exports of an exports file) until SIGINT or SIGTERM
  diff      list what an upper layer changes, as docker diff does (A, C, D)
  snapshot  take, list or remove snapshots of a served workspace
  reset     throw a served workspace's changes away, or go back to a snapshot
  commit    bake a served workspace's changes into a new lower layer, keeping every handle
  check     a consistency check of a layer set, with --repair the repairs that lose nothing

The layers follow the kernel overlay: lower layers are read-only (the first is the top-most),
changes go to the upper layer, the workdir is private scratch space on the upper's
filesystem. Without an upper (or with --read-only) the union is served read-only.

Example:
  ovlnfs serve --lowerdir=examples/layers/lower1:examples/layers/lower2 \
      --upperdir=/tmp/ovl/upper --listen=127.0.0.1:2049

Mount it. NFSv3 and MOUNT share the one port (MOUNT over UDP too); the lock manager
(NLM, with the status monitor NSM) has a port of its own. Run as root on port 2049 (the
default), ovlnfs answers the portmapper on port 111 of the --listen host, or registers
with the system's rpcbind if one runs, so clients need no port options, and their
fcntl and flock locks work:
  Linux:  mount -t nfs -o vers=3 127.0.0.1:/ /mnt
  macOS:  sudo mount -t nfs -o vers=3 127.0.0.1:/ ~/ovl
Without a portmapper (--portmap=off, another port, not root), clients cannot find the
lock manager: give the ports and lock locally:
  Linux:  mount -t nfs -o vers=3,proto=tcp,port=2049,mountport=2049,nolock 127.0.0.1:/ /mnt
  macOS:  sudo mount -t nfs -o vers=3,tcp,port=2049,mountport=2049,nolocks 127.0.0.1:/ ~/ovl

Run 'ovlnfs serve --help' for every flag.
`)
}

func printServeUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage: ovlnfs serve --lowerdir=L1[:L2...] [--upperdir=U] [--workdir=W] [flags]
       ovlnfs serve -o lowerdir=L1:L2,upperdir=U,workdir=W [flags]

Serves the union of the layers over NFSv3 (with the MOUNT protocol on the same TCP port,
and over UDP on that port) until SIGINT or SIGTERM, then finishes the requests in flight
and exits 0.

How clients find the ports (--portmap): by default (auto), a server on port 2049 registers
with the system's rpcbind when one answers on 127.0.0.1:111 (and unregisters on exit), or,
run as root, answers the portmapper itself (PMAP v2, rpcbind v3 and v4, TCP and UDP) on
port 111 of the --listen host; on another port, or not root without an rpcbind, there is
none. --portmap=serve, --portmap-listen=HOST:PORT, --portmap=register and --portmap=off
choose explicitly.

The lock manager (--nlm=on, the default) serves NLM 1, 3 and 4 and NSM over TCP and UDP on
--nlm-listen (default: the --listen host, a free port), listed by the portmapper. The
clients that lock are remembered in WORKDIR/ovlnfs-nsm; after a restart they are told
(SM_NOTIFY) and for --grace (90 s) only their reclaims are granted.

A standby gateway (--standby, docs/failover.md) over the same shared directories as a
running ovlnfs waits for the workdirs' locks instead of refusing, then runs --takeover-exec
(e.g. to bring the floating --listen address up), listens and serves; clients' file handles
stay valid and the lock manager's clients are told to reclaim (the state directory must be
shared too). On its stop, --release-exec runs before the workdirs are let go.

Refused with exit status 2, before anything is created: a missing layer, an upper inside a
lower (or the reverse), a workdir not on the upper's filesystem, a workdir in use by another
running ovlnfs (without --standby), a listen address in use (TCP or UDP); and, once the
layers are open, an explicit --portmap that cannot be had.

Flags:
`)
	fs.PrintDefaults()
	fmt.Fprint(w, `
-o takes the kernel's overlay option string: options separated by ',', lower layers by ':';
write '\,' and '\:' for a literal comma or colon in a path (as mount(8) does).
Flags and -o combine, but an option may be given only one way. Besides the layers: ro, rw,
userxattr, dircache_entries=N, and redirect_dir=on|follow|nofollow|off as the kernel reads
it: on (the default as root) renames directories with lower parts by recording a redirect,
follow only follows redirects (such renames answer EXDEV and clients copy), nofollow
neither (a name holding a redirect answers EPERM), off is follow; with userxattr only
nofollow. index=on|off (default on): on keeps the names of a lower file with several
links together when one is copied up, in WORKDIR/index as the kernel's index=on does, and
refuses an upper or workdir used with other layers; off copies each name up on its own.
appledouble=allow|refuse: refuse keeps new "._name" and ".DS_Store" entries out.
unicode=exact|insensitive: exact (the default, as the kernel) compares names as bytes;
insensitive lets the NFC and NFD spellings of a name (macOS clients send either) find the
same entry, keeping the spelling it was created with, as APFS does.

Examples:
  ovlnfs serve --lowerdir=/srv/base:/srv/tools --upperdir=/srv/changes --listen=127.0.0.1:2049
  ovlnfs serve -o 'lowerdir=/srv/base:/srv/tools,upperdir=/srv/changes,workdir=/srv/work'
  ovlnfs serve --lowerdir=/srv/base --log-format=json --log-level=debug    # read-only

Mount from Linux (with a portmapper; else add proto=tcp,port=2049,mountport=2049,nolock):
  mount -t nfs -o vers=3 127.0.0.1:/ /mnt
Mount from macOS (likewise tcp,port=2049,mountport=2049,nolocks without one):
  sudo mount -t nfs -o vers=3 127.0.0.1:/ ~/ovl
`)
}
