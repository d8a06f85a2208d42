// Command copyup measures copy-up of one large lower file: ovlnfs's union
// (billyunion) against the kernel overlay's own copy-up, plain cp, and cp
// followed by fsync (copy-up fsyncs, as the kernel's does). Rounds are
// interleaved so that machine noise hits every contender alike; medians and
// ratios go to docs/benchmarks.md.
//
//	go run ./bench/copyup -size 1GiB -rounds 3
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/bench/report"
	"github.com/ovlnfs/ovlnfs/billyunion"
)

func main() {
	sizeMiB := flag.Int("mib", 1024, "size of the lower file in MiB")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	out := flag.String("out", "docs/benchmarks.md", "benchmarks file to update")
	dir := flag.String("dir", "", "scratch directory (default: a temp dir on /var/tmp)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*sizeMiB, *rounds, *out, *dir, log); err != nil {
		log.Error("copy-up benchmark failed", "err", err)
		os.Exit(1)
	}
}

type contender struct {
	name string
	run  func(round int) (time.Duration, error)
}

func run(sizeMiB, rounds int, out, scratch string, log *slog.Logger) error {
	if scratch == "" {
		var err error
		if scratch, err = os.MkdirTemp("/var/tmp", "ovlnfs-bench-copyup-"); err != nil {
			return err
		}
		defer os.RemoveAll(scratch)
	}
	lower := filepath.Join(scratch, "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return err
	}
	src := filepath.Join(lower, "big")
	log.Info("writing lower file", "MiB", sizeMiB)
	if err := writeRandomish(src, sizeMiB); err != nil {
		return err
	}
	fresh := func(kind string, round int) (upper, work string, err error) {
		base := filepath.Join(scratch, fmt.Sprintf("%s-%d", kind, round))
		upper, work = filepath.Join(base, "u"), filepath.Join(base, "w")
		if err = os.MkdirAll(upper, 0o755); err == nil {
			err = os.MkdirAll(work, 0o755)
		}
		return upper, work, err
	}
	contenders := []contender{
		{"ovlnfs copy-up (billyunion, fsync)", func(round int) (time.Duration, error) {
			upper, work, err := fresh("union", round)
			if err != nil {
				return 0, err
			}
			fs, err := billyunion.New(billyunion.Options{Lowers: []string{lower}, Upper: upper, Work: work})
			if err != nil {
				return 0, err
			}
			defer fs.Close()
			dropCaches()
			start := time.Now()
			err = fs.Chmod("big", 0o600) // a metadata change: pure copy-up cost
			return time.Since(start), err
		}},
		{"kernel overlay copy-up (fsync)", func(round int) (time.Duration, error) {
			upper, work, err := fresh("kernel", round)
			if err != nil {
				return 0, err
			}
			mnt := filepath.Join(filepath.Dir(upper), "m")
			os.Mkdir(mnt, 0o755)
			if err := unix.Mount("overlay", mnt, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
				return 0, fmt.Errorf("kernel overlay: %w", err)
			}
			defer unix.Unmount(mnt, unix.MNT_DETACH)
			dropCaches()
			start := time.Now()
			err = os.Chmod(filepath.Join(mnt, "big"), 0o600)
			return time.Since(start), err
		}},
		{"cp", func(round int) (time.Duration, error) {
			upper, _, err := fresh("cp", round)
			if err != nil {
				return 0, err
			}
			dropCaches()
			start := time.Now()
			err = exec.Command("cp", src, filepath.Join(upper, "big")).Run()
			return time.Since(start), err
		}},
		{"cp + fsync", func(round int) (time.Duration, error) {
			upper, _, err := fresh("cpsync", round)
			if err != nil {
				return 0, err
			}
			dst := filepath.Join(upper, "big")
			dropCaches()
			start := time.Now()
			if err := exec.Command("cp", src, dst).Run(); err != nil {
				return 0, err
			}
			err = exec.Command("sync", dst).Run()
			return time.Since(start), err
		}},
	}
	results := make([][]time.Duration, len(contenders))
	for r := 0; r < rounds; r++ {
		for i, c := range contenders {
			d, err := c.run(r)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			log.Info("round", "contender", c.name, "round", r, "seconds", d.Seconds())
			results[i] = append(results[i], d)
			os.RemoveAll(filepath.Join(scratch, fmt.Sprintf("%s-%d", []string{"union", "kernel", "cp", "cpsync"}[i], r)))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Copy-up of a %d MiB lower file\n\n", sizeMiB)
	fmt.Fprintf(&b, "Measured %s on this machine (%d interleaved rounds, page cache dropped before each, medians).\n", time.Now().UTC().Format("2006-01-02"), rounds)
	fmt.Fprintf(&b, "Reproduce: `go run ./bench/copyup -mib %d -rounds %d` (root; the kernel overlay is the peer).\n\n", sizeMiB, rounds)
	b.WriteString("| contender | median | MiB/s | vs ovlnfs |\n|---|---|---|---|\n")
	base := median(results[0])
	for i, c := range contenders {
		m := median(results[i])
		fmt.Fprintf(&b, "| %s | %.2f s | %.0f | %.2fx |\n", c.name, m.Seconds(), float64(sizeMiB)/m.Seconds(), m.Seconds()/base.Seconds())
	}
	b.WriteString("\n\"vs ovlnfs\" is the contender's time over ovlnfs's: above 1 means ovlnfs is faster. " +
		"Copy-ups fsync the copy before it becomes visible (the kernel does too, unless mounted volatile); plain cp does not.\n")
	return report.UpdateSection(out, "copyup", b.String())
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
