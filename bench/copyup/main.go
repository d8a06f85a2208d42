// Command copyup measures copy-up of one large lower file: ovlnfs's union
// (billyunion) against the kernel overlay's own copy-up on the same
// filesystem, plain cp, and cp followed by fsync (copy-up fsyncs, as the
// kernel's does). It runs on the scratch directory's filesystem (ext4 here)
// and on loop-mounted XFS (reflink=1) and btrfs images, where both
// copy-ups can clone instead of copying. Rounds are interleaved over every
// filesystem and contender so that machine noise hits them alike; medians,
// ratios and how each copy moved its data go to docs/benchmarks.md.
//
//	go run ./bench/copyup -mib 1024 -rounds 3 -fs host,xfs,btrfs
//
// Needs root (mounts, loop devices, dropping the page cache), and
// xfsprogs, btrfs-progs and losetup for the loop-mounted filesystems.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
	"github.com/ovlnfs/ovlnfs/copyup"

	"github.com/ovlnfs/ovlnfs/bench/report"
	"github.com/ovlnfs/ovlnfs/billyunion"
)

func main() {
	sizeMiB := flag.Int("mib", 1024, "size of the lower file in MiB")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	out := flag.String("out", "docs/benchmarks.md", "benchmarks file to update")
	dir := flag.String("dir", "", "scratch directory (default: a temp dir on /var/tmp); its filesystem is \"host\"")
	fsList := flag.String("fs", "host,xfs,btrfs", "filesystems to measure on: host (the scratch directory's), xfs (loop image, reflink=1), btrfs (loop image)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*sizeMiB, *rounds, *out, *dir, strings.Split(*fsList, ","), log); err != nil {
		log.Error("copy-up benchmark failed", "err", err)
		os.Exit(1)
	}
}

// target is one filesystem the copy-ups run on, with its lower file.
type target struct {
	kind  string // host, xfs, btrfs
	label string
	dir   string // scratch directory on the filesystem
	lower string
	src   string
}

type contender struct {
	name string
	// run copies the lower file up once in a fresh directory under base and
	// answers the time it took, the copy's path and, where the contender
	// says so itself, the method it used.
	run func(t *target, base string) (d time.Duration, copyPath, method string, err error)
}

func run(sizeMiB, rounds int, out, scratch string, kinds []string, log *slog.Logger) error {
	if scratch == "" {
		var err error
		if scratch, err = os.MkdirTemp("/var/tmp", "ovlnfs-bench-copyup-"); err != nil {
			return err
		}
		defer os.RemoveAll(scratch)
	}
	var targets []*target
	for _, k := range kinds {
		t, cleanup, err := setupTarget(k, scratch, sizeMiB)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		log.Info("writing lower file", "fs", t.label, "MiB", sizeMiB)
		if err := writeRandomish(t.src, sizeMiB); err != nil {
			return err
		}
		targets = append(targets, t)
	}
	methods := &methodLog{}
	contenders := []contender{
		{"ovlnfs copy-up (billyunion, fsync)", func(t *target, base string) (time.Duration, string, string, error) {
			upper, work := filepath.Join(base, "u"), filepath.Join(base, "w")
			if err := mkdirs(upper, work); err != nil {
				return 0, "", "", err
			}
			fs, err := billyunion.New(billyunion.Options{Lowers: []string{t.lower}, Upper: upper, Work: work, Logger: slog.New(methods)})
			if err != nil {
				return 0, "", "", err
			}
			defer fs.Close()
			methods.reset()
			dropCaches()
			start := time.Now()
			err = fs.Chmod("big", 0o600) // a metadata change: pure copy-up cost
			d := time.Since(start)
			return d, filepath.Join(upper, "big"), methods.get(), err
		}},
		{"kernel overlay copy-up (fsync)", func(t *target, base string) (time.Duration, string, string, error) {
			upper, work, mnt := filepath.Join(base, "u"), filepath.Join(base, "w"), filepath.Join(base, "m")
			if err := mkdirs(upper, work, mnt); err != nil {
				return 0, "", "", err
			}
			if err := unix.Mount("overlay", mnt, "overlay", 0, "lowerdir="+t.lower+",upperdir="+upper+",workdir="+work); err != nil {
				return 0, "", "", fmt.Errorf("kernel overlay: %w", err)
			}
			defer unix.Unmount(mnt, unix.MNT_DETACH)
			dropCaches()
			start := time.Now()
			err := os.Chmod(filepath.Join(mnt, "big"), 0o600)
			return time.Since(start), filepath.Join(upper, "big"), "", err
		}},
		{"floor: FICLONE, else copy_file_range, + fsync (system calls alone)", func(t *target, base string) (time.Duration, string, string, error) {
			if err := mkdirs(base); err != nil {
				return 0, "", "", err
			}
			dst := filepath.Join(base, "big")
			dropCaches()
			start := time.Now()
			how, err := bareCopy(t.src, dst)
			return time.Since(start), dst, how, err
		}},
		{"cp (coreutils, --reflink=auto)", func(t *target, base string) (time.Duration, string, string, error) {
			if err := mkdirs(base); err != nil {
				return 0, "", "", err
			}
			dst := filepath.Join(base, "big")
			dropCaches()
			start := time.Now()
			err := exec.Command("cp", t.src, dst).Run()
			return time.Since(start), dst, "", err
		}},
		{"cp + fsync", func(t *target, base string) (time.Duration, string, string, error) {
			if err := mkdirs(base); err != nil {
				return 0, "", "", err
			}
			dst := filepath.Join(base, "big")
			dropCaches()
			start := time.Now()
			if err := exec.Command("cp", t.src, dst).Run(); err != nil {
				return 0, "", "", err
			}
			err := exec.Command("sync", dst).Run()
			return time.Since(start), dst, "", err
		}},
	}
	type cell struct {
		times []time.Duration
		how   map[string]int
	}
	loadBefore := benchenv.LoadAverage()
	results := make([][]cell, len(targets))
	for i := range results {
		results[i] = make([]cell, len(contenders))
		for j := range results[i] {
			results[i][j].how = map[string]int{}
		}
	}
	for r := 0; r < rounds; r++ {
		for i, t := range targets {
			// Each round starts with another contender, so none always
			// runs right after the previous filesystem's work.
			for k := range contenders {
				j := (k + r) % len(contenders)
				c := contenders[j]
				base := filepath.Join(t.dir, fmt.Sprintf("round-%d-%d", r, j))
				d, copyPath, method, err := c.run(t, base)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", c.name, t.label, err)
				}
				shared, serr := sharesExtents(copyPath)
				how := method
				switch {
				case serr != nil:
					how += " (extents: " + serr.Error() + ")"
				case shared && how == "":
					how = "clone (extents shared)"
				case shared:
					how += " (extents shared)"
				case how == "":
					how = "data copied"
				}
				log.Info("round", "fs", t.label, "contender", c.name, "round", r, "seconds", d.Seconds(), "how", how)
				results[i][j].times = append(results[i][j].times, d)
				results[i][j].how[how]++
				if err := os.RemoveAll(base); err != nil {
					return err
				}
			}
		}
	}
	loadAfter := benchenv.LoadAverage()
	var b strings.Builder
	fmt.Fprintf(&b, "## Copy-up of a %d MiB lower file\n\n", sizeMiB)
	fmt.Fprintf(&b, "Measured %s on this machine (%d interleaved rounds over every filesystem and contender, each round starting with the next contender, page cache dropped before each run, medians).\n", time.Now().UTC().Format("2006-01-02"), rounds)
	fmt.Fprintf(&b, "Load average (1 min) %s at the start, %s at the end: other work shared the machine; the millisecond figures are the noisiest.\n", loadBefore, loadAfter)
	fmt.Fprintf(&b, "Reproduce: `go run ./bench/copyup -mib %d -rounds %d -fs %s` (root; xfsprogs, btrfs-progs and losetup for the loop-mounted images; the kernel overlay on the same filesystem is the peer).\n\n", sizeMiB, rounds, strings.Join(kinds, ","))
	b.WriteString("| filesystem | contender | median | MiB/s | vs ovlnfs | how the data moved |\n|---|---|---|---|---|---|\n")
	for i, t := range targets {
		base := median(results[i][0].times)
		for j, c := range contenders {
			m := median(results[i][j].times)
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.2fx | %s |\n", t.label, c.name, fmtDur(m), float64(sizeMiB)/m.Seconds(), m.Seconds()/base.Seconds(), hows(results[i][j].how))
		}
	}
	b.WriteString("\n\"vs ovlnfs\" is the contender's time over ovlnfs's: above 1 means ovlnfs is faster. " +
		"Copy-ups fsync the copy before it becomes visible (the kernel does too when it copies data, unless mounted volatile); plain cp does not. " +
		"The floor row is what copyup's data copy and fsync cost alone (in this program, same system calls); ovlnfs's copy-up adds the union's lookups, the attributes, xattrs and origin, and the rename. " +
		"The kernel's copy-up does not fsync a copy it could clone whole (fs/overlayfs/copy_up.c returns right after the clone); ovlnfs fsyncs every copy-up, clones included. " +
		"\"How the data moved\": ovlnfs's own report of its method (copyup: FICLONE, else copy_file_range per data extent, else read/write), " +
		"and for every copy whether FIEMAP shows its extents shared with the lower (a clone or reflink: no data moved). " +
		"The loop images live on the scratch directory's filesystem; their figures compare the contenders on them, not with the host's disk.\n")
	return report.UpdateSection(out, "copyup", b.String())
}

// bareCopy copies src to a new dst the way copyup does, without anything
// else a copy-up does (lookups, attributes, xattrs, rename): the floor of
// ovlnfs's copy-up time.
func bareCopy(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer out.Close()
	how := "FICLONE"
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		how = "copy_file_range"
		for {
			n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, 1<<30, 0)
			if err != nil {
				return how, err
			}
			if n == 0 {
				break
			}
		}
	}
	return how, out.Sync()
}

// setupTarget prepares the filesystem kind under scratch and its lower
// directory; cleanup undoes what was set up, also on error.
func setupTarget(kind, scratch string, sizeMiB int) (t *target, cleanup func(), err error) {
	t = &target{kind: kind}
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	switch kind {
	case "host":
		t.dir = filepath.Join(scratch, "host")
		if err := os.MkdirAll(t.dir, 0o755); err != nil {
			return nil, cleanup, err
		}
		var sfs unix.Statfs_t
		if err := unix.Statfs(t.dir, &sfs); err != nil {
			return nil, cleanup, err
		}
		t.label = fsName(sfs.Type) + " (" + filepath.Dir(scratch) + ")"
	case "xfs", "btrfs":
		img := filepath.Join(scratch, kind+".img")
		// Room for a data copy by every contender of a round, should one
		// not clone; the image is sparse.
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			return nil, cleanup, err
		}
		if err := os.Truncate(img, int64(sizeMiB)<<20*6+1<<30); err != nil {
			return nil, cleanup, err
		}
		mkfs := []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=1", img}
		t.label = "XFS, reflink=1 (loop)"
		if kind == "btrfs" {
			mkfs = []string{"mkfs.btrfs", "-q", "-f", img}
			t.label = "btrfs (loop)"
		}
		if out, err := exec.Command(mkfs[0], mkfs[1:]...).CombinedOutput(); err != nil {
			return nil, cleanup, fmt.Errorf("%s: %v: %s", mkfs[0], err, out)
		}
		out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
		if err != nil {
			return nil, cleanup, fmt.Errorf("losetup: %v: %s", err, out)
		}
		dev := strings.TrimSpace(string(out))
		undo = append(undo, func() { exec.Command("losetup", "-d", dev).Run() })
		mnt := filepath.Join(scratch, kind)
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return nil, cleanup, err
		}
		if err := unix.Mount(dev, mnt, kind, 0, ""); err != nil {
			return nil, cleanup, fmt.Errorf("mount %s on %s: %w", kind, dev, err)
		}
		undo = append(undo, func() {
			if err := unix.Unmount(mnt, 0); err != nil {
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		})
		t.dir = mnt
	default:
		return nil, cleanup, fmt.Errorf("unknown filesystem %q (host, xfs, btrfs)", kind)
	}
	t.lower = filepath.Join(t.dir, "lower")
	t.src = filepath.Join(t.lower, "big")
	return t, cleanup, os.MkdirAll(t.lower, 0o755)
}

// loadAvg is the machine's 1-minute load average.
func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "XFS"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	}
	return fmt.Sprintf("fs 0x%x", magic)
}

func mkdirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// methodLog is the union's log handler here: it keeps the data-copy
// method copyup reports for the copy-up being measured.
type methodLog struct {
	mu     sync.Mutex
	method string
}

func (h *methodLog) Enabled(_ context.Context, l slog.Level) bool { return true }
func (h *methodLog) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *methodLog) WithGroup(string) slog.Handler                { return h }
func (h *methodLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		fmt.Fprintf(os.Stderr, "ovlnfs: %s\n", r.Message)
	}
	if r.Message != "copy-up: data copied" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "method" {
			h.mu.Lock()
			h.method = a.Value.String()
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *methodLog) reset() { h.mu.Lock(); h.method = ""; h.mu.Unlock() }
func (h *methodLog) get() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.method == "" {
		return "(not reported)"
	}
	return h.method
}

// sharesExtents reports whether every extent of path is shared (with the
// file it was cloned from): no data was copied.
func sharesExtents(path string) (bool, error) {
	all, err := copyup.Extents(path)
	if err != nil {
		return false, err
	}
	for _, e := range all {
		if !e.Shared {
			return false, nil
		}
	}
	return len(all) > 0, nil
}

// hows lists how a contender's rounds moved the data: one entry when every
// round did alike, else each with its count of rounds.
func hows(m map[string]int) string {
	if len(m) == 1 {
		for h := range m {
			return h
		}
	}
	var s []string
	for h, n := range m {
		s = append(s, fmt.Sprintf("%s (%d rounds)", h, n))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func fmtDur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// dropCaches makes every contender start from a cold page cache where the
// machine allows it.
func dropCaches() {
	unix.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// writeRandomish writes a file of non-repeating-looking content (so no
// layer of the stack can compress or deduplicate it cheaply).
func writeRandomish(path string, mib int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < mib; i++ {
		for j := 0; j+8 <= len(buf); j += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(x >> (8 * k))
			}
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
