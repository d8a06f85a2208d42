package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/internal/server"
)

// defaultListen is where the server listens unless told otherwise: loopback only, so a
// server started without thought is not exposed to the network.
const defaultListen = "127.0.0.1:2049"

// serveConfig is the validated configuration of `ovlnfs serve`.
type serveConfig struct {
	lowers      []string // top-down, absolute, symlinks resolved
	upper       string   // "" when read-only
	work        string   // "" when read-only
	workIsAuto  bool     // work was derived from upper and may have to be created
	xattrPrefix string   // "" = let the union pick
	redirectDir string   // -o redirect_dir: on, follow, nofollow, off; "" = the union's default
	index       string   // -o index: on, off; "" = the union's default (on)
	listen      string
	logFormat   string
	logLevel    slog.Level
	// handleCacheEntries bounds the file handle -> path cache (0: the default). Only speed
	// depends on it: a handle that is not cached is resolved from disk.
	handleCacheEntries int
	// dirCacheEntries bounds the merged directory listings the union keeps; 0 = its default.
	dirCacheEntries int
	// pprofListen, when set, is where Go's profiles are served over HTTP (net/http/pprof).
	pprofListen string
	// udp: MOUNT is answered over UDP on the listen port too.
	udp bool
	// portmap is how clients find the ports (portmapAuto, ...); portmapListen is where
	// this process's own portmapper listens ("" until decided at start).
	portmap       string
	portmapListen string
	// nlm: the lock manager (NLM and NSM) runs, on nlmListen (TCP and UDP; port 0: any);
	// grace is its grace period after a restart with clients that may hold locks.
	nlm       bool
	nlmListen string
	grace     time.Duration
	// requirePrivilegedPort: NFS calls from source ports of 1024 or more are refused.
	requirePrivilegedPort bool
	// refuseAppleDouble: -o appledouble=refuse.
	refuseAppleDouble bool
	// quotaBytes, quotaInodes: -o quota_bytes, quota_inodes (0: no limit).
	quotaBytes, quotaInodes uint64
	// gomaxprocs fixes GOMAXPROCS; 0 lets internal/procs adapt it to the load.
	gomaxprocs int
	// unicode: -o unicode=exact or insensitive; "" = the union's default (exact).
	unicode string
	// configFile is the exports file (--config); with it, exports are what it declares
	// (the layer fields above are unused) and lockState its state directory.
	configFile string
	exports    []server.Export
	lockState  string
	// controlSocket is where ovlnfs snapshot and reset reach the server ("" for none).
	controlSocket string
	// metricsListen, when set, is where Prometheus metrics are served (/metrics).
	metricsListen string
	// standby waits for the workdirs' locks (another gateway holds them) before
	// listening; takeoverExec runs once they are held, before listening, releaseExec
	// when the server stops, before they are let go (shell commands, "" for none).
	standby                   bool
	takeoverExec, releaseExec string
}

// maxGomaxprocs bounds --gomaxprocs (the runtime's own limit is far higher; no machine
// this serves from has more CPUs).
const maxGomaxprocs = 4096

// defaultGrace is the grace period after a restart, the Linux kernel's.
const defaultGrace = 90 * time.Second

// How clients find the ports (--portmap).
const (
	// portmapAuto: with NFS on port 2049, register with a system rpcbind answering on
	// 127.0.0.1:111, else, as root, serve a portmapper on the listen host's port 111;
	// otherwise none.
	portmapAuto = "auto"
	// portmapServe: serve a portmapper at --portmap-listen; refuse to start if it cannot.
	portmapServe = "serve"
	// portmapRegister: register with the system's rpcbind; refuse to start if it cannot.
	portmapRegister = "register"
	// portmapOff: no portmapper; clients give port= and mountport=.
	portmapOff = "off"
)

// nfsPortStandard is the standard NFS port: only a server there claims the portmapper by
// default, so that a test or second server on another port leaves port 111 and the
// system's rpcbind alone.
const nfsPortStandard = 2049

// maxDirCacheEntries refuses a listing cache size that can only be a typo: each cached
// listing of a big directory holds megabytes.
const maxDirCacheEntries = 1 << 20

// configError is a configuration the server refuses before touching anything. main turns it
// into one line on stderr and exit status 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func refuse(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// rawServeFlags holds the flag values exactly as given, before -o is merged in and paths
// are checked.
type rawServeFlags struct {
	lowerdir, upperdir, workdir string
	options                     string
	readOnly                    bool
	listen                      string
	logFormat, logLevel         string
	handleCacheEntries          int
	dirCacheEntries             *string // nil when not given
	pprofListen                 string
	udp                         bool
	portmap, portmapListen      string
	nlm, nlmListen              string
	grace                       time.Duration
	requirePrivilegedPort       bool
	gomaxprocs                  string
	configFile                  string
	controlSocket               string
	metricsListen               string
	standby                     bool
	takeoverExec, releaseExec   string
}

func newServeFlagSet(out io.Writer, raw *rawServeFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&raw.configFile, "config", "", "an exports file declaring many exports, their layers and their clients (docs/exports.md); re-read on SIGHUP; replaces --lowerdir, --upperdir, --workdir, -o and --read-only")
	fs.StringVar(&raw.controlSocket, "control", "", "PATH of a unix socket (made mode 0600) on which ovlnfs snapshot and ovlnfs reset reach this server; none by default")
	fs.StringVar(&raw.lowerdir, "lowerdir", "", "colon-separated lower layers, top-most first (required); escape a ':' in a path as '\\:'")
	fs.StringVar(&raw.upperdir, "upperdir", "", "writable upper layer; omit it for a read-only union")
	fs.StringVar(&raw.workdir, "workdir", "", "work directory on the upper's filesystem (default: a directory beside the upper)")
	fs.StringVar(&raw.options, "o", "", "kernel-style option string, e.g. 'lowerdir=/l1:/l2,upperdir=/u,workdir=/w' ('\\,' and '\\:' escape)")
	fs.BoolVar(&raw.readOnly, "read-only", false, "serve read-only; a given --upperdir is then shown as the top-most lower layer (no workdir needed)")
	fs.StringVar(&raw.listen, "listen", defaultListen, "HOST:PORT for NFSv3 and MOUNT over TCP (one port), and MOUNT over UDP on the same port")
	fs.BoolVar(&raw.udp, "udp", true, "also answer MOUNT over UDP on the --listen port, as mount.nfs and showmount expect (NFS itself is TCP only)")
	fs.StringVar(&raw.portmap, "portmap", portmapAuto, "how clients find the ports: auto (with NFS on port 2049: register with a running system rpcbind, else as root serve a portmapper on port 111 of the --listen host; otherwise none), serve (a portmapper at --portmap-listen), register (with the system rpcbind, through "+"/run/rpcbind.sock), or off")
	fs.StringVar(&raw.portmapListen, "portmap-listen", "", "HOST:PORT of the portmapper (TCP and UDP); default: the --listen host, port 111; giving it implies --portmap=serve")
	fs.StringVar(&raw.nlm, "nlm", "on", "the lock manager: on (NLM 1, 3, 4 and the status monitor NSM, found by clients through the portmapper, so Linux mounts without nolock) or off")
	fs.StringVar(&raw.nlmListen, "nlm-listen", "", "HOST:PORT of the lock manager (TCP and UDP); default: the --listen host, any free port")
	fs.DurationVar(&raw.grace, "grace", defaultGrace, "grace period after a restart: for this long only clients reclaiming their locks are granted any (only after a run whose clients may hold locks)")
	fs.BoolVar(&raw.requirePrivilegedPort, "require-privileged-port", false, "refuse NFS calls from a client source port of 1024 or more (AUTH_TOOWEAK), as knfsd's secure export option; macOS clients then need mount -o resvport")
	fs.StringVar(&raw.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&raw.gomaxprocs, "gomaxprocs", "auto", "Go scheduler threads running Go code: auto (start with one and add up to the CPUs, or the cgroup's quota, while they are busy; an NFS server answering one call at a time wastes CPU on idle ones) or a fixed number; the GOMAXPROCS environment variable, when set, is kept")
	fs.Func("dircache-entries", fmt.Sprintf("merged directory listings kept in memory, 1 to %d (default %d; as many recent snapshots are kept for clients paging through them)", maxDirCacheEntries, billyunion.DefaultDirCacheEntries),
		func(v string) error { raw.dirCacheEntries = &v; return nil })
	fs.StringVar(&raw.logLevel, "log-level", "info", "log level: debug (traces every NFS call), info, warn or error")
	fs.StringVar(&raw.metricsListen, "metrics-listen", "", "HOST:PORT to serve Prometheus metrics on (/metrics): NFS operations, errors, bytes and latencies, copy-ups and listing-cache counts per export; off by default")
	fs.BoolVar(&raw.standby, "standby", false, "a standby gateway (docs/failover.md): while another ovlnfs holds a workdir, wait for its lock instead of refusing, and listen only once every workdir is held")
	fs.StringVar(&raw.takeoverExec, "takeover-exec", "", "with --standby: a shell command run once the workdirs are held and before listening, e.g. one bringing the floating --listen address up; its failure stops the server")
	fs.StringVar(&raw.releaseExec, "release-exec", "", "with --standby: a shell command run when the server stops, after its sockets closed and before the workdirs are let go, e.g. one taking the floating address down")
	fs.StringVar(&raw.pprofListen, "pprof-listen", "", "HOST:PORT to serve Go's runtime profiles on over HTTP (/debug/pprof/), for profiling; unauthenticated, so keep it on loopback")
	fs.IntVar(&raw.handleCacheEntries, "handle-cache-entries", 0, "file handles whose current path is kept in memory (default 262144); a handle not cached is resolved from disk, never answered STALE")
	return fs
}

// parseServeArgs parses the `serve` arguments and validates the configuration without
// creating or modifying anything on disk.
func parseServeArgs(args []string, usageOut io.Writer) (*serveConfig, error) {
	var raw rawServeFlags
	fs := newServeFlagSet(usageOut, &raw)
	fs.Usage = func() { printServeUsage(usageOut, fs) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, refuse("unexpected argument %q (paths are given with --lowerdir/--upperdir/--workdir or -o)", fs.Arg(0))
	}

	cfg := &serveConfig{listen: raw.listen, logFormat: raw.logFormat, handleCacheEntries: raw.handleCacheEntries,
		pprofListen: raw.pprofListen, udp: raw.udp, portmap: raw.portmap, portmapListen: raw.portmapListen,
		requirePrivilegedPort: raw.requirePrivilegedPort, controlSocket: raw.controlSocket, metricsListen: raw.metricsListen,
		standby: raw.standby, takeoverExec: raw.takeoverExec, releaseExec: raw.releaseExec}
	if !raw.standby && (raw.takeoverExec != "" || raw.releaseExec != "") {
		return nil, refuse("--takeover-exec and --release-exec are a standby gateway's: give --standby")
	}
	switch {
	case raw.gomaxprocs == "auto":
		cfg.gomaxprocs = 0
	default:
		n, err := strconv.Atoi(raw.gomaxprocs)
		if err != nil || n < 1 || n > maxGomaxprocs {
			return nil, refuse("--gomaxprocs %q: must be auto or a number from 1 to %d", raw.gomaxprocs, maxGomaxprocs)
		}
		cfg.gomaxprocs = n
	}
	if raw.handleCacheEntries < 0 {
		return nil, refuse("--handle-cache-entries must be 0 (the default) or more, not %d", raw.handleCacheEntries)
	}
	switch raw.logFormat {
	case "text", "json":
	default:
		return nil, refuse("--log-format must be text or json, not %q", raw.logFormat)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(raw.logLevel)); err != nil {
		return nil, refuse("--log-level must be debug, info, warn or error, not %q", raw.logLevel)
	}

	var lowerSpec []string
	if raw.lowerdir != "" {
		for _, l := range splitEscaped(raw.lowerdir, ':') {
			lowerSpec = append(lowerSpec, unescape(l))
		}
	}
	upper, work := raw.upperdir, raw.workdir
	if raw.options != "" {
		opts, err := parseMountOptions(raw.options)
		if err != nil {
			return nil, err
		}
		// An option given both ways is ambiguous: refuse instead of guessing which wins.
		if opts.lowers != nil {
			if lowerSpec != nil {
				return nil, refuse("lowerdir given both as --lowerdir and in -o")
			}
			lowerSpec = opts.lowers
		}
		if opts.upper != "" {
			if upper != "" {
				return nil, refuse("upperdir given both as --upperdir and in -o")
			}
			upper = opts.upper
		}
		if opts.work != "" {
			if work != "" {
				return nil, refuse("workdir given both as --workdir and in -o")
			}
			work = opts.work
		}
		raw.readOnly = raw.readOnly || opts.readOnly
		cfg.xattrPrefix = opts.xattrPrefix
		cfg.redirectDir = opts.redirectDir
		cfg.index = opts.index
		cfg.refuseAppleDouble = opts.appleDouble == "refuse"
		cfg.unicode = opts.unicode
		cfg.quotaBytes, cfg.quotaInodes = opts.quotaBytes, opts.quotaInodes
		if err := checkUnionOptions(opts); err != nil {
			return nil, err
		}
		if opts.dirCacheEntries != nil {
			if raw.dirCacheEntries != nil {
				return nil, refuse("dircache_entries given both as --dircache-entries and in -o")
			}
			raw.dirCacheEntries = opts.dirCacheEntries
		}
	}
	if raw.dirCacheEntries != nil {
		n, err := strconv.Atoi(*raw.dirCacheEntries)
		if err != nil || n < 1 || n > maxDirCacheEntries {
			return nil, refuse("--dircache-entries must be a whole number from 1 to %d, not %q", maxDirCacheEntries, *raw.dirCacheEntries)
		}
		cfg.dirCacheEntries = n
	}
	if _, err := net.ResolveTCPAddr("tcp", cfg.listen); err != nil {
		return nil, refuse("--listen %q is not HOST:PORT: %v", cfg.listen, err)
	}
	for _, l := range []struct{ flag, addr string }{{"--pprof-listen", cfg.pprofListen}, {"--metrics-listen", cfg.metricsListen}} {
		if l.addr == "" {
			continue
		}
		if _, err := net.ResolveTCPAddr("tcp", l.addr); err != nil {
			return nil, refuse("%s %q is not HOST:PORT: %v", l.flag, l.addr, err)
		}
	}
	if err := checkPortmap(cfg); err != nil {
		return nil, err
	}
	if err := checkNLM(cfg, &raw); err != nil {
		return nil, err
	}
	if raw.configFile != "" {
		for _, f := range []struct {
			name  string
			given bool
		}{{"--lowerdir", raw.lowerdir != ""}, {"--upperdir", raw.upperdir != ""}, {"--workdir", raw.workdir != ""},
			{"-o", raw.options != ""}, {"--read-only", raw.readOnly}, {"--require-privileged-port", raw.requirePrivilegedPort}} {
			if f.given {
				return nil, refuse("%s and --config: the exports file declares each export's layers, options and clients (secure/insecure for ports)", f.name)
			}
		}
		cfg.configFile = raw.configFile
		exports, err := loadExportsFile(cfg.configFile)
		if err != nil {
			return nil, err
		}
		cfg.exports, cfg.lockState = exports.exports, exports.state
		return cfg, nil
	}

	if len(lowerSpec) == 0 {
		return nil, refuse("no lower layer: give --lowerdir=DIR[:DIR...] or -o lowerdir=..., or an exports file with --config")
	}
	if work != "" && upper == "" {
		return nil, refuse("workdir given without upperdir")
	}
	if (cfg.quotaBytes != 0 || cfg.quotaInodes != 0) && (upper == "" || raw.readOnly) {
		return nil, refuse("-o quota_bytes, quota_inodes: a quota limits the upper layer; a read-only export has none")
	}
	if raw.readOnly && upper != "" {
		// A read-only view of a union with an upper is the upper as the top-most lower:
		// whiteouts and opaque markers mean the same in a lower layer. No workdir is used.
		lowerSpec = append([]string{upper}, lowerSpec...)
		upper, work = "", ""
	}

	var err error
	if cfg.lowers, cfg.upper, cfg.work, cfg.workIsAuto, err = checkLayers(lowerSpec, upper, work); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkLayers resolves and checks an export's layers (lowerSpec top-down, upper and work
// as given, "" when not): each exists and is a directory, none lies inside another, the
// workdir is on the upper's filesystem (beside the upper when not given: workIsAuto).
func checkLayers(lowerSpec []string, upperSpec, workSpec string) (lowers []string, upper, work string, workIsAuto bool, err error) {
	for _, l := range lowerSpec {
		dir, err := existingDir("lowerdir", l)
		if err != nil {
			return nil, "", "", false, err
		}
		lowers = append(lowers, dir)
	}
	if upperSpec == "" {
		return lowers, "", "", false, nil
	}
	fail := func(err error) ([]string, string, string, bool, error) { return nil, "", "", false, err }
	if upper, err = existingDir("upperdir", upperSpec); err != nil {
		return fail(err)
	}
	for _, l := range lowers {
		if within(upper, l) {
			return fail(refuse("upperdir %s is inside lowerdir %s: the layers must be separate trees", upper, l))
		}
		if within(l, upper) {
			return fail(refuse("lowerdir %s is inside upperdir %s: the layers must be separate trees", l, upper))
		}
	}
	if workSpec == "" {
		workIsAuto = true
		if work, err = defaultWorkdir(upper); err != nil {
			return fail(err)
		}
	} else if work, err = existingDir("workdir", workSpec); err != nil {
		return fail(err)
	}
	if within(work, upper) || within(upper, work) {
		return fail(refuse("workdir %s and upperdir %s overlap: they must be separate directories on one filesystem", work, upper))
	}
	for _, l := range lowers {
		if within(work, l) || within(l, work) {
			return fail(refuse("workdir %s and lowerdir %s overlap", work, l))
		}
	}
	// The work directory must be on the upper's filesystem because copy-up prepares files
	// there and renames them into the upper, and rename cannot cross filesystems.
	workProbe := work
	if workIsAuto {
		workProbe = filepath.Dir(work)
	}
	same, err := sameFilesystem(upper, workProbe)
	if err != nil {
		return fail(refuse("workdir %s: %v", work, err))
	}
	if !same {
		if workIsAuto {
			return fail(refuse("upperdir %s is the root of its filesystem, so no workdir fits beside it: give --workdir on the same filesystem", upper))
		}
		return fail(refuse("workdir %s is not on the same filesystem as upperdir %s", work, upper))
	}
	return lowers, upper, work, workIsAuto, nil
}

// checkPortmap validates --portmap and --portmap-listen together.
func checkPortmap(cfg *serveConfig) error {
	switch cfg.portmap {
	case portmapAuto, portmapServe, portmapRegister, portmapOff:
	default:
		return refuse("--portmap must be auto, serve, register or off, not %q", cfg.portmap)
	}
	if cfg.portmapListen == "" {
		return nil
	}
	switch cfg.portmap {
	case portmapAuto:
		cfg.portmap = portmapServe
	case portmapOff, portmapRegister:
		return refuse("--portmap-listen is where this process's portmapper listens; it contradicts --portmap=%s", cfg.portmap)
	}
	if _, err := net.ResolveTCPAddr("tcp", cfg.portmapListen); err != nil {
		return refuse("--portmap-listen %q is not HOST:PORT: %v", cfg.portmapListen, err)
	}
	return nil
}

// checkNLM validates --nlm, --nlm-listen and --grace together.
func checkNLM(cfg *serveConfig, raw *rawServeFlags) error {
	switch raw.nlm {
	case "on":
		cfg.nlm = true
	case "off":
		if raw.nlmListen != "" {
			return refuse("--nlm-listen is where the lock manager listens; it contradicts --nlm=off")
		}
	default:
		return refuse("--nlm must be on or off, not %q", raw.nlm)
	}
	if raw.grace < 0 {
		return refuse("--grace must be 0 or more, not %v", raw.grace)
	}
	cfg.grace = raw.grace
	cfg.nlmListen = raw.nlmListen
	if cfg.nlmListen == "" {
		host, _, _ := net.SplitHostPort(cfg.listen)
		cfg.nlmListen = net.JoinHostPort(host, "0")
	}
	if _, err := net.ResolveTCPAddr("tcp", cfg.nlmListen); err != nil {
		return refuse("--nlm-listen %q is not HOST:PORT: %v", cfg.nlmListen, err)
	}
	return nil
}

// defaultWorkdir names the work directory used when --workdir is omitted: a hidden sibling
// of the upper, so that it shares the upper's filesystem in the common case.
func defaultWorkdir(upper string) (string, error) {
	parent := filepath.Dir(upper)
	if parent == upper {
		return "", refuse("upperdir %s has no parent to hold a workdir: give --workdir", upper)
	}
	work := filepath.Join(parent, "."+filepath.Base(upper)+".ovlnfs-work")
	info, err := os.Lstat(work)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return work, nil
	case err != nil:
		return "", refuse("default workdir %s: %v", work, err)
	case !info.IsDir():
		return "", refuse("default workdir %s exists and is not a directory: give --workdir", work)
	}
	return work, nil
}

// existingDir returns the absolute, symlink-free form of a layer path that must be an
// existing directory. Resolving symlinks lets the overlap checks compare real locations.
func existingDir(role, p string) (string, error) {
	if p == "" {
		return "", refuse("%s: empty path", role)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", refuse("%s %s: %v", role, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", refuse("%s %s does not exist", role, p)
		}
		return "", refuse("%s %s: %v", role, p, err)
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", refuse("%s %s: %v", role, p, err)
	}
	if !info.IsDir() {
		return "", refuse("%s %s is not a directory", role, p)
	}
	return real, nil
}

// within reports whether path is dir itself or lies below it. Both must be clean absolute
// paths.
func within(path, dir string) bool {
	if path == dir {
		return true
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func sameFilesystem(a, b string) (bool, error) {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := syscall.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev, nil
}

// mountOptions is what a kernel overlay option string (-o) says.
type mountOptions struct {
	lowers      []string
	upper, work string
	readOnly    bool
	xattrPrefix string
	redirectDir string
	index       string
	// appleDouble: -o appledouble=allow or refuse ("" = allow).
	appleDouble string
	// unicode: -o unicode=exact or insensitive ("" = exact).
	unicode string
	// dirCacheEntries is kept as text so that a bad value gets the same refusal either way.
	dirCacheEntries *string
	// quotaBytes, quotaInodes: -o quota_bytes=SIZE, quota_inodes=N (0: not given).
	quotaBytes, quotaInodes uint64
}

// parseMountOptions reads a kernel overlay option string as mount(8) passes it: options
// separated by ',', a literal ',' or ':' inside a path escaped with '\'. Options the kernel
// knows but ovlnfs does not implement are refused rather than silently ignored, because
// they change what the union shows.
func parseMountOptions(s string) (mountOptions, error) {
	var mo mountOptions
	for _, opt := range splitEscaped(s, ',') {
		key, value, hasValue := strings.Cut(opt, "=")
		var err error
		switch key {
		case "":
			continue
		case "lowerdir":
			if !hasValue || value == "" {
				return mo, refuse("-o lowerdir needs a value")
			}
			for _, l := range splitEscaped(value, ':') {
				mo.lowers = append(mo.lowers, unescape(l))
			}
		case "upperdir":
			mo.upper = unescape(value)
		case "workdir":
			mo.work = unescape(value)
		case "ro":
			mo.readOnly = true
		case "rw", "defaults":
		case "userxattr":
			mo.xattrPrefix = "user.overlay."
		case "redirect_dir":
			mo.redirectDir, err = enumOption(key, value, "on", "follow", "nofollow", "off")
		case "index":
			mo.index, err = enumOption(key, value, "on", "off")
		case "appledouble":
			mo.appleDouble, err = enumOption(key, value, "allow", "refuse")
		case "unicode":
			mo.unicode, err = enumOption(key, value, billyunion.UnicodeExact, billyunion.UnicodeInsensitive)
		case "dircache_entries":
			mo.dirCacheEntries = &value
		case "quota_bytes":
			if mo.quotaBytes, err = billyunion.ParseSize(value); err != nil {
				err = refuse("-o quota_bytes=%s: %v", value, err)
			}
		case "quota_inodes":
			n, perr := strconv.ParseUint(value, 10, 63)
			if perr != nil || n == 0 {
				err = refuse("-o quota_inodes=%s: must be a whole number of at least 1", value)
			}
			mo.quotaInodes = n
		default:
			return mo, refuse("-o %s: option not supported by ovlnfs (supported: lowerdir, upperdir, workdir, ro, rw, userxattr, redirect_dir, index, appledouble, unicode, dircache_entries, quota_bytes, quota_inodes)", opt)
		}
		if err != nil {
			return mo, err
		}
	}
	return mo, nil
}

// checkUnionOptions refuses union options that contradict each other.
func checkUnionOptions(mo mountOptions) error {
	if mo.xattrPrefix == "user.overlay." && mo.redirectDir != "" && mo.redirectDir != "nofollow" {
		return refuse("-o userxattr,redirect_dir=%s: conflicting options (as for the kernel overlay: redirects need trusted xattrs)", mo.redirectDir)
	}
	return nil
}

// enumOption is the value of an -o option that takes one of allowed, or its refusal
// naming them ("-o index=yes: must be on or off").
func enumOption(key, value string, allowed ...string) (string, error) {
	if slices.Contains(allowed, value) {
		return value, nil
	}
	list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	return "", refuse("-o %s=%s: must be %s", key, value, list)
}

// splitEscaped splits s at every sep not preceded by a backslash. Escapes stay in the
// pieces (so a later split on another separator still sees them); unescape removes them.
func splitEscaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the next byte is literal, whatever it is
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unescape drops the backslash of every "\x" pair.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
