package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
)

// summary is one contender's figures of one job over the rounds.
type summary struct {
	value, cpuPerGiB, cpu float64
	ok, n                 int
	moved                 int64
	errs                  []string
	values                []float64
}

func summarize(outs []outcome) summary {
	var s summary
	var vs, cpg, cpu []float64
	for _, o := range outs {
		s.n++
		if o.err != nil {
			s.errs = append(s.errs, o.err.Error())
			s.values = append(s.values, math.NaN())
			continue
		}
		s.ok++
		vs = append(vs, o.value)
		s.values = append(s.values, o.value)
		cpu = append(cpu, o.cpu)
		if o.moved > 0 {
			cpg = append(cpg, o.cpu/(float64(o.moved)/(1<<30)))
		}
		s.moved = o.moved
	}
	s.value, s.cpu = median(vs), median(cpu)
	if len(cpg) > 0 {
		s.cpuPerGiB = median(cpg)
	} else {
		s.cpuPerGiB = math.NaN()
	}
	return s
}

func fmtValue(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "failed"
	case unit == unitSec:
		return fmt.Sprintf("%.2f s", v)
	default:
		return fmt.Sprintf("%.0f %s", v, unit)
	}
}

func (s summary) cell(unit string) string {
	if s.ok == 0 {
		return fmt.Sprintf("**failed** (%d/%d rounds)", s.n, s.n)
	}
	c := fmtValue(s.value, unit)
	if s.ok < s.n {
		c += fmt.Sprintf(" (**failed %d/%d rounds**)", s.n-s.ok, s.n)
	}
	return c
}

// ratio is ovlnfs over Ganesha, oriented so that above 1 means ovlnfs is better.
func ratio(a, b summary, timeLike bool) string {
	if a.ok == 0 || b.ok == 0 || a.value == 0 || b.value == 0 {
		return "-"
	}
	if timeLike {
		return fmt.Sprintf("%.2f", b.value/a.value)
	}
	return fmt.Sprintf("%.2f", a.value/b.value)
}

func ratioF(a, b summary, timeLike bool) float64 {
	if a.ok == 0 || b.ok == 0 || a.value == 0 || b.value == 0 {
		return math.NaN()
	}
	if timeLike {
		return b.value / a.value
	}
	return a.value / b.value
}

func cpuCell(s summary) string {
	if s.ok == 0 || math.IsNaN(s.cpuPerGiB) {
		return "-"
	}
	return fmt.Sprintf("%.2f", s.cpuPerGiB)
}

func cpuSecCell(s summary) string {
	if s.ok == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", s.cpu)
}

type env struct {
	date, rev, machine string
	loadAtStart        string // the 1-minute load average as the run began
}

func envInfo(c *config, rev string) env {
	var u strings.Builder
	if b, err := exec.Command("uname", "-r").Output(); err == nil {
		u.WriteString("Linux " + strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, v, _ := strings.Cut(l, ":")
				fmt.Fprintf(&u, ", %d × %s", runtime.NumCPU(), strings.TrimSpace(v))
				break
			}
		}
	}
	fs := "?"
	if b, err := exec.Command("findmnt", "-n", "-o", "FSTYPE", "-T", "/var/tmp").Output(); err == nil {
		fs = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(&u, ", layers on %s (/var/tmp)", fs)
	for _, v := range [][]string{{"ganesha.nfsd", "-v"}, {c.fio, "--version"}} {
		if b, err := exec.Command(v[0], v[1]).CombinedOutput(); err == nil {
			line := strings.TrimSpace(strings.Split(string(b), "\n")[0])
			line = strings.TrimPrefix(line, "NFS-Ganesha Release = ")
			if v[0] == "ganesha.nfsd" {
				line = "NFS-Ganesha " + line
			}
			u.WriteString(", " + line)
		}
	}
	if b, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "libnfs-utils").Output(); err == nil {
		u.WriteString(", libnfs " + string(b))
	}
	return env{date: time.Now().UTC().Format("2006-01-02"), rev: rev, machine: u.String(), loadAtStart: benchenv.LoadAverage()}
}

func formatCore(c *config, e env, m *model, js []job, res results) string {
	var b strings.Builder
	b.WriteString("## Peers: ovlnfs against NFS-Ganesha over the kernel overlay\n\n")
	fmt.Fprintf(&b, "Measured %s on this machine (%s); ovlnfs built from %s. ", e.date, e.machine, e.rev)
	fmt.Fprintf(&b, "Reproduce (root): `sh bench/peers/setup.sh && go run ./bench/peers -rounds %d`", c.rounds)
	if c.runtime != 10*time.Second {
		fmt.Fprintf(&b, " with `-runtime %s`", c.runtime)
	}
	b.WriteString(".\n")
	fmt.Fprintf(&b, "Load average (1 min) %s at the start, %s at the end: above 0 means other work shared the 2 cores, and the run's figures move with it (compare ratios, not absolute figures across runs).\n\n",
		e.loadAtStart, benchenv.LoadAverage())
	fmt.Fprintf(&b, "Medians of %d interleaved rounds. Ratio = ovlnfs / Ganesha, oriented so that **above 1 means ovlnfs is better** (throughput over throughput, Ganesha's time over ovlnfs's). "+
		"CPU = user+system seconds of the server process (all threads, /proc/PID/stat) during the job, per GiB the job moved, and per run.\n\n", c.rounds)
	b.WriteString("| job | ovlnfs | Ganesha | ratio | ovlnfs CPU s/GiB | Ganesha CPU s/GiB | ovlnfs CPU s | Ganesha CPU s |\n|---|---|---|---|---|---|---|---|\n")
	var fails []string
	for _, j := range js {
		a, g := summarize(res[j.key][0]), summarize(res[j.key][1])
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", j.title, a.cell(j.unit), g.cell(j.unit), ratio(a, g, j.timeLike),
			cpuCell(a), cpuCell(g), cpuSecCell(a), cpuSecCell(g))
		for k, s := range []summary{a, g} {
			for _, e := range dedupe(s.errs) {
				fails = append(fails, fmt.Sprintf("- %s, %s: %s", j.key, []string{"ovlnfs", "Ganesha"}[k], e))
			}
		}
	}
	if len(fails) > 0 {
		b.WriteString("\n**Failures** (a failed round is left out of the median):\n\n" + strings.Join(fails, "\n") + "\n")
	}
	b.WriteString("\nPer round (ovlnfs / Ganesha; rounds alternate which contender goes first):\n\n| job | " + roundHeads(c.rounds) + "\n")
	for _, j := range js {
		a, g := summarize(res[j.key][0]), summarize(res[j.key][1])
		fmt.Fprintf(&b, "| %s |", j.key)
		for r := range a.values {
			fmt.Fprintf(&b, " %s / %s |", short(a.values[r], j.unit), short(g.values[r], j.unit))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n**Layers** (generated from seed %d by bench/peers/layers.go, written once per contender, so each has its own identical copy of the lower on the same filesystem): "+
		"one lower layer with `big` (%d MiB), `mid` and `rw64` (64 MiB each), `dir10k` (10,000 small files) and `tree`, a toolchain-like tree of %d files in %d directories "+
		"(sizes log-uniform 64 B to 64 KiB, %.0f MiB); the upper overrides %d of the tree's files, whites out %d and makes one directory opaque (hiding its lower subtree, adding 5 files): "+
		"%d files visible in the merged tree, %d entries in the whole export. ",
		m.Seed, m.BigMiB, m.TreeFiles, len(m.tree.dirs), float64(sumSizes(m.tree.lower))/(1<<20), len(m.tree.overrides), len(m.tree.whiteouts), m.treeFiles, m.entries)
	b.WriteString("Each round starts both servers afresh, each over a fresh upper and workdir of its own (so neither sees the other's writes, and every round's writes and copy-ups start from the same state): " +
		"ovlnfs is `ovlnfs serve --lowerdir=L --upperdir=U --workdir=W --listen=127.0.0.1:P`; Ganesha 4.3 runs `ganesha.nfsd -F` with FSAL VFS, NFSv3 over TCP on 127.0.0.1, " +
		"exporting `mount -t overlay -o lowerdir=L,upperdir=U,workdir=W,index=on,nfs_export=on`, with rpcbind in a network namespace of its own. " +
		"Both are reached on loopback by the same clients, one connection per client process.\n\n")
	b.WriteString("**Jobs**, in the order a round runs them:\n\n")
	for _, j := range js {
		fmt.Fprintf(&b, "- %s (`%s`): %s.\n", j.title, j.key, j.note)
	}
	b.WriteString("\n**Caches.** Where a job says the page cache was dropped, `sync; echo 3 > /proc/sys/vm/drop_caches` ran before each contender's run of it; \"warm\" means the job's files were read locally (from that contender's own lower/upper) just before. " +
		"Dropping the kernel's caches does not empty the servers' own caches (ovlnfs's handle and listing caches, Ganesha's MDCACHE): both start each round empty because both servers are restarted.\n\n")
	b.WriteString("**CPU.** Figures are the server process's own utime+stime. For Ganesha that includes the kernel overlay's work done in Ganesha's system calls (overlayfs runs in the caller's context), and for ovlnfs the layers' file systems work in its calls. " +
		"Neither includes kernel work done asynchronously elsewhere (writeback and readahead in kernel threads, part of the loopback TCP processing in softirq), nor the client's CPU, which shares the same 2 cores. " +
		"The kernel overlay's own cost can therefore not be separated from Ganesha's. The per-GiB figure of the listing job is empty (it moves no file data); of the toolchain job it is per GiB of file data read; of the copy-up job per GiB copied.\n\n")
	b.WriteString("**Noise.** Client and server share 2 cores and a virtual disk; the machine is shared (other sessions' builds, tests and servers may run at the same time); single runs vary by 10-20%, some rounds by 2x: compare the ratios of one run (see the per-round table) rather than absolute figures across runs.\n")
	return b.String()
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var r []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			r = append(r, x)
		}
	}
	return r
}

func roundHeads(n int) string {
	var h, sep strings.Builder
	for r := 0; r < n; r++ {
		fmt.Fprintf(&h, "round %d | ", r)
		sep.WriteString("---|")
	}
	return h.String() + "\n|---|" + sep.String()
}

func short(v float64, unit string) string {
	if math.IsNaN(v) {
		return "failed"
	}
	if unit == unitSec {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func sumSizes(fs []tfile) int64 {
	var n int64
	for _, f := range fs {
		n += int64(f.size)
	}
	return n
}

func formatClients(c *config, e env, js []job, res results) (string, error) {
	var b strings.Builder
	b.WriteString("## Peers: scaling with the number of clients\n\n")
	fmt.Fprintf(&b, "Measured %s (%s); ovlnfs built from %s. Reproduce (root): `go run ./bench/peers -core=false -scaling clients -clients %s -scaling-rounds %d`. "+
		"Medians of %d interleaved rounds over the core table's layers (see above); each client is one fio process (libnfs engine, iodepth 1, its own connection). "+
		"Sequential: n clients each read 1/n of the 1 GiB `big` (1 MiB reads, file warm), aggregate MiB/s. Random: n clients each read `mid` (64 MiB, warm) in 4 KiB reads at random for %s, aggregate IOPS. "+
		"Ratio above 1 means ovlnfs is better; CPU = the server process's CPU seconds per GiB moved.\n\n",
		e.date, e.machine, e.rev, joinInts(c.clients), c.scalingRounds, c.scalingRounds, c.runtime)
	b.WriteString("| clients | seq ovlnfs | seq Ganesha | ratio | CPU s/GiB ovlnfs | CPU s/GiB Ganesha | random ovlnfs | random Ganesha | ratio | CPU s/GiB ovlnfs | CPU s/GiB Ganesha |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var xs []float64
	var seqA, seqG, rndA, rndG []float64
	for _, n := range c.clients {
		sa, sg := summarize(res[fmt.Sprintf("clients%d-seq", n)][0]), summarize(res[fmt.Sprintf("clients%d-seq", n)][1])
		ra, rg := summarize(res[fmt.Sprintf("clients%d-rand", n)][0]), summarize(res[fmt.Sprintf("clients%d-rand", n)][1])
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, sa.cell(unitMiBs), sg.cell(unitMiBs), ratio(sa, sg, false), cpuCell(sa), cpuCell(sg),
			ra.cell(unitIOPS), rg.cell(unitIOPS), ratio(ra, rg, false), cpuCell(ra), cpuCell(rg))
		xs = append(xs, float64(n))
		seqA, seqG, rndA, rndG = append(seqA, okValue(sa)), append(seqG, okValue(sg)), append(rndA, okValue(ra)), append(rndG, okValue(rg))
	}
	var fails []string
	for _, j := range js {
		for k, o := range res[j.key] {
			for _, e := range dedupe(summarize(o).errs) {
				fails = append(fails, fmt.Sprintf("- %s, %s: %s", j.key, []string{"ovlnfs", "Ganesha"}[k], e))
			}
		}
	}
	if len(fails) > 0 {
		b.WriteString("\n**Failures**:\n\n" + strings.Join(fails, "\n") + "\n")
	}
	plots := []struct {
		file, title, y string
		a, g           []float64
	}{
		{"peers-clients-seq.svg", "Sequential 1 MiB reads of a 1 GiB file split over n clients", "MiB/s (aggregate)", seqA, seqG},
		{"peers-clients-rand.svg", "4 KiB random reads of a 64 MiB file, n clients", "IOPS (aggregate)", rndA, rndG},
	}
	b.WriteString("\n")
	for _, p := range plots {
		svg := plotSVG(p.title, "clients", p.y, xs, []series{{"ovlnfs", p.a}, {"NFS-Ganesha + kernel overlay", p.g}}, true)
		if err := os.WriteFile(filepath.Join(c.docs, p.file), []byte(svg), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "![%s](%s)\n", p.title, p.file)
	}
	return b.String(), nil
}

func okValue(s summary) float64 {
	if s.ok == 0 {
		return math.NaN()
	}
	return s.value
}

type treeRow struct {
	n   int
	m   *model
	res results
}

func formatTree(c *config, e env, rows []treeRow) (string, error) {
	var b strings.Builder
	b.WriteString("## Peers: scaling with the size of the tree\n\n")
	fmt.Fprintf(&b, "Measured %s (%s); ovlnfs built from %s. Reproduce (root): `go run ./bench/peers -core=false -scaling tree -tree-sizes %s -scaling-rounds %d`. "+
		"Medians of %d interleaved rounds. Each size is a layer set of its own holding only `tree`, drawn like the core table's (about 25 files per directory, 2%% overridden in the upper, 0.5%% whited out, one opaque directory). "+
		"The jobs are the core table's: `nfs-ls -R` of the export, cold (kernel caches dropped, servers just started), then the toolchain walk (stat, open, read whole, close every file through libnfs, data warm). "+
		"Ratio above 1 means ovlnfs is faster.\n\n", e.date, e.machine, e.rev, joinInts(c.treeSizes), c.scalingRounds, c.scalingRounds)
	b.WriteString("| files | entries | `nfs-ls -R` ovlnfs | Ganesha | ratio | µs/entry ovlnfs | µs/entry Ganesha | toolchain ovlnfs | Ganesha | ratio | µs/file ovlnfs | µs/file Ganesha | toolchain CPU s ovlnfs | Ganesha |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var xs, lsA, lsG, tcA, tcG []float64
	var fails []string
	for _, r := range rows {
		la, lg := summarize(r.res["ls"][0]), summarize(r.res["ls"][1])
		ta, tg := summarize(r.res["toolchain"][0]), summarize(r.res["toolchain"][1])
		per := func(s summary, n int) float64 {
			if s.ok == 0 {
				return math.NaN()
			}
			return s.value * 1e6 / float64(n)
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %.0f | %.0f | %s | %s | %s | %.0f | %.0f | %s | %s |\n", r.n, r.m.entries,
			la.cell(unitSec), lg.cell(unitSec), ratio(la, lg, true), per(la, r.m.entries), per(lg, r.m.entries),
			ta.cell(unitSec), tg.cell(unitSec), ratio(ta, tg, true), per(ta, r.m.treeFiles), per(tg, r.m.treeFiles), cpuSecCell(ta), cpuSecCell(tg))
		xs = append(xs, float64(r.n))
		lsA, lsG = append(lsA, per(la, r.m.entries)), append(lsG, per(lg, r.m.entries))
		tcA, tcG = append(tcA, per(ta, r.m.treeFiles)), append(tcG, per(tg, r.m.treeFiles))
		for _, k := range []string{"ls", "toolchain"} {
			for i, o := range r.res[k] {
				for _, e := range dedupe(summarize(o).errs) {
					fails = append(fails, fmt.Sprintf("- %d files, %s, %s: %s", r.n, k, []string{"ovlnfs", "Ganesha"}[i], e))
				}
			}
		}
	}
	if len(fails) > 0 {
		b.WriteString("\n**Failures**:\n\n" + strings.Join(fails, "\n") + "\n")
	}
	b.WriteString("\nA flat line in the plots means the cost grows linearly with the tree.\n\n")
	plots := []struct {
		file, title, y string
		a, g           []float64
	}{
		{"peers-tree-ls.svg", "nfs-ls -R of the export, cold: time per entry", "µs per entry", lsA, lsG},
		{"peers-tree-toolchain.svg", "Toolchain walk (stat, open, read, close): time per file", "µs per file", tcA, tcG},
	}
	for _, p := range plots {
		svg := plotSVG(p.title, "files in the tree", p.y, xs, []series{{"ovlnfs", p.a}, {"NFS-Ganesha + kernel overlay", p.g}}, true)
		if err := os.WriteFile(filepath.Join(c.docs, p.file), []byte(svg), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "![%s](%s)\n", p.title, p.file)
	}
	return b.String(), nil
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ",")
}
