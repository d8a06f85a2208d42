package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tools are the client programs the jobs run.
type tools struct {
	fio, client string
	runtime     time.Duration // of the time-based random I/O jobs
	m           *model
	// lastFio is set by each fio run to what fio reported (the metrics check reads it)
	lastFio *fioRun
}

// outcome is one contender's result of one job in one round.
type outcome struct {
	value float64 // in the job's unit
	moved int64   // bytes the job moved through the server (read, written or copied)
	cpu   float64 // server CPU seconds during the job
	err   error
	// check is the metrics check of an ovlnfs fio job
	check *metricsCheck
}

// job is one measurement. prep runs untimed before each run (cache state, copy-up of
// the random-write target); run is timed and returns the job's figure.
type job struct {
	key, title, unit string
	timeLike         bool // a duration: lower is better
	prep             func(t *tools, c *contender, round int) error
	run              func(t *tools, c *contender, round int) (value float64, moved int64, err error)
	note             string
}

const (
	unitMiBs = "MiB/s"
	unitIOPS = "IOPS"
	unitSec  = "s"
)

func coreJobs() []job {
	return []job{
		{key: "ls", title: "`nfs-ls -R` of the whole export", unit: unitSec, timeLike: true,
			prep: func(t *tools, c *contender, round int) error { dropCaches(); return nil },
			run:  lsJob,
			note: "libnfs `nfs-ls -R` of the export root: READDIRPLUS of every directory, cold (first listing after the server started; kernel caches dropped); the output's line count is checked against the model"},
		{key: "toolchain", title: "toolchain: walk the tree, stat, open, read whole, close each file", unit: unitSec, timeLike: true,
			prep: func(t *tools, c *contender, round int) error {
				return warm(filepath.Join(c.lower, treeName), filepath.Join(c.upper, treeName))
			},
			run:  toolchainJob(treeName),
			note: "bench/peers/client/nfsclient.c (libnfs, one connection, one call at a time) walks `tree` with opendir/readdir (READDIRPLUS) and for each regular file calls nfs_stat64, nfs_open, nfs_pread in 1 MiB calls to EOF and nfs_close; libnfs has no lookup cache, so each stat and each open walks the path from the export root: per file at depth d (2 to 7 below the export) that is 2d LOOKUPs, a GETATTR (stat), an ACCESS (open) and 2 READs (the second, at the end of file, returns 0 bytes), as ovlnfs's debug trace of the client shows; the files, bytes and an order-independent checksum of paths and contents are checked against the model; file data warm in the page cache, the server's own caches as the listing left them"},
		{key: "seqread-cold", title: "sequential 1 MiB reads of the 1 GiB lower file, cold cache", unit: unitMiBs,
			prep: func(t *tools, c *contender, round int) error { dropCaches(); return nil },
			run:  fioJob(bigName, "read", "1m", "1g", 1, ""),
			note: "fio (libnfs engine, iodepth 1) reads `big` once in 1 MiB READs after the page cache was dropped: bounded by the machine's virtual disk, whose speed depends on the host's own cache (dd read a freshly written file at 425 MB/s, this job saw 200 to 1300 MiB/s): the noisiest row. Which contender runs first in a round decides this row more than the server does: on this VM the first run after a drop_caches pays for the host faulting memory back in, and the per-round pairs below show the first of each round 2.5 to 3 times slower than the second, whichever server it is (touching 1.25 GiB of fresh memory after the drop evened this out when the cold jobs ran alone, not after the jobs before them); read the round in which ovlnfs ran second against the rounds in which it ran first"},
		{key: "seqread", title: "sequential 1 MiB reads of the 1 GiB lower file", unit: unitMiBs,
			prep: func(t *tools, c *contender, round int) error { return warm(filepath.Join(c.lower, bigName)) },
			run:  fioJob(bigName, "read", "1m", "1g", 1, ""),
			note: "the same with `big` in the page cache (read locally first): the server's own cost per byte"},
		{key: "par4", title: "4 clients each reading a quarter of the 1 GiB file", unit: unitMiBs,
			prep: func(t *tools, c *contender, round int) error { return warm(filepath.Join(c.lower, bigName)) },
			run:  fioJob(bigName, "read", "1m", "256m", 4, ""),
			note: "fio numjobs=4 (4 processes, 4 connections), offset_increment=256m, 1 MiB reads, iodepth 1 each, file warm; aggregate bandwidth"},
		{key: "randread", title: "4 KiB random reads, 64 MiB lower file", unit: unitIOPS,
			prep: func(t *tools, c *contender, round int) error { return warm(filepath.Join(c.lower, midName)) },
			run:  fioJob(midName, "randread", "4k", "64m", 1, "timed"),
			note: "fio randread of `mid`, 4 KiB, iodepth 1, time-based (-runtime), file warm"},
		{key: "seqwrite", title: "sequential 1 MiB writes, new 256 MiB file", unit: unitMiBs,
			prep: func(t *tools, c *contender, round int) error { dropCaches(); return nil },
			run:  seqWriteJob,
			note: "fio creates `seqw-rN` and writes 256 MiB in 1 MiB WRITEs (libnfs sends them UNSTABLE; fio's nfs engine sends no COMMIT); the file's size is checked afterwards (in ovlnfs's upper, in the kernel overlay's mount)"},
		{key: "randwrite", title: "4 KiB random writes after copy-up", unit: unitIOPS,
			prep: func(t *tools, c *contender, round int) error {
				// copy `rw64` up first (one 4 KiB WRITE at offset 0, COMMIT), untimed
				if _, _, err := clientRun(t, c, "write", rwName, "0", "4096"); err != nil {
					return err
				}
				return nil
			},
			run:  fioJob(rwName, "randwrite", "4k", "64m", 1, "timed"),
			note: "`rw64` (64 MiB, lower) is copied up by one untimed 4 KiB WRITE + COMMIT, then fio randwrite 4 KiB, iodepth 1, time-based, UNSTABLE, no COMMIT"},
		{key: "copyup", title: "copy-up: 4 KiB appended to the 1 GiB lower file, COMMIT", unit: unitSec, timeLike: true,
			prep: func(t *tools, c *contender, round int) error { dropCaches(); return nil },
			run:  copyUpJob,
			note: "nfsclient: LOOKUP `big`, one 4 KiB WRITE at its end (the server copies the 1 GiB file up first: ovlnfs at the WRITE, Ganesha's open for writing makes the kernel overlay copy it up), COMMIT; time from the open to the COMMIT's reply, page cache dropped before; the copy is checked (size, appended bytes, sampled blocks equal the lower's) in ovlnfs's upper and in the kernel overlay's mount (the kernel copies a file Ganesha opens by handle into its index directory). Which contender runs first in a round decides this row more than the server does: on this VM the first run after a drop_caches pays for the host faulting memory back in, and the per-round pairs below show the first of each round 2.5 to 3 times slower than the second, whichever server it is (touching 1.25 GiB of fresh memory after the drop evened this out when the cold jobs ran alone, not after the jobs before them); read the round in which ovlnfs ran second against the rounds in which it ran first"},
	}
}

// clientJobs are the client-count series: n clients each reading 1/n of `big`
// sequentially, and n clients reading `mid` at random.
func clientJobs(ns []int) []job {
	var js []job
	for _, n := range ns {
		n := n
		js = append(js, job{key: fmt.Sprintf("clients%d-seq", n), title: fmt.Sprintf("%d clients, sequential 1 MiB reads of 1/%d of `big` each", n, n), unit: unitMiBs,
			prep: func(t *tools, c *contender, round int) error { return warm(filepath.Join(c.lower, bigName)) },
			run:  fioJob(bigName, "read", "1m", fmt.Sprintf("%dm", 1024/n), n, "")})
		js = append(js, job{key: fmt.Sprintf("clients%d-rand", n), title: fmt.Sprintf("%d clients, 4 KiB random reads of `mid`", n), unit: unitIOPS,
			prep: func(t *tools, c *contender, round int) error { return warm(filepath.Join(c.lower, midName)) },
			run:  fioJob(midName, "randread", "4k", "64m", n, "timed")})
	}
	return js
}

// treeJobs are the tree-size series' jobs (over a tree-only layer set).
func treeJobs() []job {
	all := coreJobs()
	return []job{all[0], all[1]}
}

type fioResult struct {
	Jobs []struct {
		Error int    `json:"error"`
		Read  fioDir `json:"read"`
		Write fioDir `json:"write"`
	} `json:"jobs"`
}

type fioDir struct {
	IOBytes  int64   `json:"io_bytes"`
	TotalIOs int64   `json:"total_ios"`
	BW       float64 `json:"bw_bytes"`
	IOPS     float64 `json:"iops"`
}

// fioJob runs fio's libnfs engine at iodepth 1 with n processes; with n > 1 and a
// sequential pattern each process gets its own consecutive slice of size bytes.
func fioJob(file, rw, bs, size string, n int, mode string) func(t *tools, c *contender, round int) (float64, int64, error) {
	return func(t *tools, c *contender, round int) (float64, int64, error) {
		return fio(t, c, file, rw, bs, size, n, mode)
	}
}

func fio(t *tools, c *contender, file, rw, bs, size string, n int, mode string) (float64, int64, error) {
	args := []string{"--output-format=json", "--name=peers", "--ioengine=nfs", "--nfs_url=" + c.url,
		"--filename=" + file, "--rw=" + rw, "--bs=" + bs, "--size=" + size, "--iodepth=1", "--randrepeat=1"}
	if n > 1 {
		args = append(args, fmt.Sprintf("--numjobs=%d", n), "--group_reporting")
		if rw == "read" || rw == "write" {
			args = append(args, "--offset_increment="+size)
		}
	}
	if mode == "timed" {
		args = append(args, "--time_based", fmt.Sprintf("--runtime=%ds", int(t.runtime.Seconds())))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, t.fio, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.Bytes()
	if i := bytes.IndexByte(out, '{'); i >= 0 {
		out = out[i:]
	}
	var r fioResult
	if jerr := json.Unmarshal(out, &r); jerr != nil || len(r.Jobs) == 0 {
		return 0, 0, fmt.Errorf("fio %s: %v %v: %s", rw, err, jerr, firstLines(stderr.String()+stdout.String()))
	}
	if err != nil || r.Jobs[0].Error != 0 || strings.Contains(stderr.String(), "Failed NFS operation") {
		return 0, 0, fmt.Errorf("fio %s: exit %v, error %d: %s", rw, err, r.Jobs[0].Error, firstLines(stderr.String()))
	}
	run := fioRun{procs: n, bs: blockSize(bs), timed: mode == "timed"}
	for _, j := range r.Jobs {
		run.readBytes += j.Read.IOBytes
		run.writeBytes += j.Write.IOBytes
		run.readIOs += j.Read.TotalIOs
		run.writeIOs += j.Write.TotalIOs
	}
	t.lastFio = &run
	j := r.Jobs[0]
	switch rw {
	case "read":
		return j.Read.BW / (1 << 20), j.Read.IOBytes, nil
	case "randread":
		return j.Read.IOPS, j.Read.IOBytes, nil
	case "write":
		return j.Write.BW / (1 << 20), j.Write.IOBytes, nil
	default:
		return j.Write.IOPS, j.Write.IOBytes, nil
	}
}

// blockSize parses fio's "4k", "1m" block sizes.
func blockSize(bs string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(bs, "k"):
		mult, bs = 1<<10, strings.TrimSuffix(bs, "k")
	case strings.HasSuffix(bs, "m"):
		mult, bs = 1<<20, strings.TrimSuffix(bs, "m")
	}
	n, _ := strconv.ParseInt(bs, 10, 64)
	return n * mult
}

func firstLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 4 {
		lines = lines[:4]
	}
	return strings.Join(lines, " | ")
}

func seqWriteJob(t *tools, c *contender, round int) (float64, int64, error) {
	name := fmt.Sprintf("%s-r%d", writeName, round)
	v, moved, err := fio(t, c, name, "write", "1m", "256m", 1, "")
	if err != nil {
		return v, moved, err
	}
	if fi, err := os.Stat(filepath.Join(c.view, name)); err != nil || fi.Size() != 256<<20 {
		return v, moved, fmt.Errorf("after the write the upper's %s is %v (%v), want 256 MiB", name, sizeOf(fi), err)
	}
	return v, moved, nil
}

func sizeOf(fi os.FileInfo) any {
	if fi == nil {
		return "missing"
	}
	return fi.Size()
}

// clientRun runs nfsclient and parses its key=value line.
func clientRun(t *tools, c *contender, args ...string) (map[string]string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, t.client, append([]string{c.url}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("nfsclient %s: %v: %s", strings.Join(args, " "), err, firstLines(stderr.String()))
	}
	kv := map[string]string{}
	for _, f := range strings.Fields(stdout.String()) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	s, err := strconv.ParseFloat(kv["seconds"], 64)
	if err != nil {
		return nil, 0, fmt.Errorf("nfsclient output %q", stdout.String())
	}
	return kv, time.Duration(s * float64(time.Second)), nil
}

func toolchainJob(dir string) func(t *tools, c *contender, round int) (float64, int64, error) {
	return func(t *tools, c *contender, round int) (float64, int64, error) {
		kv, d, err := clientRun(t, c, "toolchain", "/"+dir)
		if err != nil {
			return 0, 0, err
		}
		want := fmt.Sprintf("files=%d bytes=%d sum=%016x", t.m.treeFiles, t.m.treeBytes, t.m.treeSum)
		got := fmt.Sprintf("files=%s bytes=%s sum=%s", kv["files"], kv["bytes"], kv["sum"])
		bytesRead, _ := strconv.ParseInt(kv["bytes"], 10, 64)
		if got != want {
			return d.Seconds(), bytesRead, fmt.Errorf("wrong data: got %s, want %s", got, want)
		}
		return d.Seconds(), bytesRead, nil
	}
}

func copyUpJob(t *tools, c *contender, round int) (float64, int64, error) {
	kv, d, err := clientRun(t, c, "write", bigName, "-1", "4096")
	if err != nil {
		return 0, 0, err
	}
	size := int64(t.m.BigMiB) << 20
	if kv["bytes"] != strconv.FormatInt(size+4096, 10) {
		return d.Seconds(), size, fmt.Errorf("after the append the file's size is %s, want %d", kv["bytes"], size+4096)
	}
	up := filepath.Join(c.view, bigName)
	f, err := os.Open(up)
	if err != nil {
		return d.Seconds(), size, fmt.Errorf("no copy: %w", err)
	}
	defer f.Close()
	tailb := make([]byte, 4096)
	if _, err := f.ReadAt(tailb, size); err != nil {
		return d.Seconds(), size, fmt.Errorf("upper copy: %w", err)
	}
	for i, b := range tailb {
		if b != byte(i*7+1) {
			return d.Seconds(), size, fmt.Errorf("upper copy: appended byte %d is %d", i, b)
		}
	}
	var offs []int64
	for k := int64(0); k < 16; k++ {
		offs = append(offs, k*size/16+k*4093)
	}
	offs = append(offs, size-64<<10)
	if err := sameBlocks(filepath.Join(c.lower, bigName), up, offs); err != nil {
		return d.Seconds(), size, fmt.Errorf("upper copy: %w", err)
	}
	return d.Seconds(), size, nil
}

func lsJob(t *tools, c *contender, round int) (float64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "nfs-ls", "-R", c.url).Output()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("nfs-ls -R: %v", err)
	}
	if got := bytes.Count(out, []byte("\n")); got != t.m.entries {
		return d.Seconds(), 0, fmt.Errorf("wrong listing: nfs-ls -R printed %d entries, want %d", got, t.m.entries)
	}
	return d.Seconds(), 0, nil
}

// check is an untimed first look at each contender: the 64 MiB file's content through
// the server equals the model's.
func check(t *tools, c *contender) error {
	kv, _, err := clientRun(t, c, "sum", midName)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	x := (t.m.Seed ^ 2) | 1
	h := uint64(fnv0)
	for left := int64(t.m.MidMiB) << 20; left > 0; left -= 1 << 20 {
		x = fill(buf, x)
		h = fnv1a(h, buf)
	}
	if kv["sum"] != fmt.Sprintf("%016x", h) || kv["bytes"] != strconv.Itoa(t.m.MidMiB<<20) {
		return fmt.Errorf("wrong data: %s read through the server: %s bytes, sum %s; want %d bytes, sum %016x", midName, kv["bytes"], kv["sum"], t.m.MidMiB<<20, h)
	}
	return nil
}
