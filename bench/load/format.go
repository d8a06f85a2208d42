package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// latencies are the durations of the calls of one connection, by procedure, in µs.
type latencies struct{ us [numProcs][]uint32 }

func newLatencies() *latencies { return &latencies{} }

func (l *latencies) add(proc uint32, d time.Duration) {
	us := d.Microseconds()
	if us > math.MaxUint32 {
		us = math.MaxUint32
	}
	l.us[proc] = append(l.us[proc], uint32(us))
}

func (l *latencies) merge(o *latencies) {
	for p := range o.us {
		l.us[p] = append(l.us[p], o.us[p]...)
	}
}

func (t *totals) sum() int {
	n := 0
	for _, x := range t.ops {
		n += x
	}
	return n
}

func percentile(sorted []uint32, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return float64(sorted[max(i, 0)])
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2f s", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.1f ms", us/1e3)
	default:
		return fmt.Sprintf("%.0f µs", us)
	}
}

func fmtVal(v float64, unit string) string {
	if unit == "MiB" {
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}

func format(r *result) string {
	c, m := r.c, r.m
	var b strings.Builder
	secs := r.elapsed.Seconds()
	fmt.Fprintf(&b, "## Load: %d client connections, mixed operations, %s\n\n", c.conns, dur(c.duration))
	fmt.Fprintf(&b, "Measured %s on this machine (%d CPUs, clients and server on the same machine), ovlnfs built from %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), r.rev)
	section := ""
	if c.section != "load" {
		section = " -section " + c.section
	}
	fmt.Fprintf(&b, "Reproduce: `go run ./bench/load -conns %d -duration %s%s` (root: the lower layers hold whiteouts and an opaque xattr).\n\n", c.conns, dur(c.duration), section)
	fmt.Fprintf(&b, "Layers: two lowers with %d visible files in %d directories (merged, lower1-only and lower2-only directories; overrides, "+
		"%d whited-out or opaque-hidden names), %d symbolic links, %d big files of %d MiB, and per client a lower directory with %d files to copy up; "+
		"an empty upper. Each client is its own TCP connection and MOUNT (go-nfs-client) and runs the mix back to back until the time is up: "+
		"reads go to the shared lower tree and are checked against the layers' content; changes happen only in the client's own directory, "+
		"which it models exactly (every write read back, listings compared, handles and fileids kept across renames and copy-up, a removed "+
		"object's handle STALE, the upper layer compared with the model on disk at the end).\n\n",
		len(m.files), len(m.dirs), len(m.hidden), len(m.links), len(m.bigs), c.bigMiB, seedFiles)

	total := r.tot.sum()
	fmt.Fprintf(&b, "**%d operations (%.0f/s), %d errors.** %.0f MiB read (%.0f MiB/s), %.0f MiB written, %d copy-ups. "+
		"CPU during the load: server %.2f cores, the clients' process %.2f cores (generating and checking data, go-nfs-client's reflective XDR). "+
		"Connecting and mounting %d clients took %s. The machine's 1-minute load average was %s when the load started and %s when it ended "+
		"(other benchmarks share this machine: throughput and latency vary from run to run, the errors and the bounds are the point).\n\n",
		total, float64(total)/secs, r.errs.total, float64(r.tot.bytesRead)/(1<<20), float64(r.tot.bytesRead)/(1<<20)/secs,
		float64(r.tot.bytesWritten)/(1<<20), r.tot.copyUps, r.cpuLoad/secs, r.cpuClients/secs, c.conns, r.setupTime.Round(time.Millisecond),
		r.loadavg[0], r.loadavg[1])

	if r.errs.total > 0 {
		b.WriteString("Errors (operation | kind: count, examples):\n\n")
		for _, k := range r.errs.keys() {
			fmt.Fprintf(&b, "- %s: %d, e.g. %s\n", k, r.errs.counts[k], strings.Join(r.errs.examples[k], "; "))
		}
		b.WriteString("\n")
	}

	// the server process
	var load int
	for _, s := range r.samples {
		if s.phase == phaseLoad {
			load++
		}
	}
	fmt.Fprintf(&b, "The server process, sampled once a second (%d samples under load; /proc/PID for RSS, descriptors and threads, "+
		"/debug/pprof/goroutine and /debug/pprof/heap?gc=1 for goroutines and heap). \"Grows\" means the second half's maximum exceeds the first half's "+
		"by more than the slack shown (goroutines: one per connection reading calls and one per call in flight, at most the idle count + 2 × %d "+
		"without a leak); \"after\" is %s after the clients unmounted and closed their connections (the open-file cache closes a file 5 to 10 s after its last use):\n\n", load, c.conns, dur(c.settle))
	b.WriteString("| | idle before | load start | load max | load end | max, 1st half | max, 2nd half | trend, 2nd half | after | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	var grows, notBack []string
	for _, mt := range metrics {
		f := analyse(mt, r.samples, c.conns)
		v := func(x float64) string { return fmtVal(x, mt.unit) }
		verdict := "bounded"
		if f.grows {
			verdict = "**grows**"
			grows = append(grows, mt.name)
		}
		if mt.back >= 0 {
			if f.notBack {
				verdict += fmt.Sprintf(", **%s above idle after**", v(f.after-f.idle))
				notBack = append(notBack, mt.name)
			} else {
				verdict += fmt.Sprintf(", back to idle within %.0f s", math.Ceil(f.backAt.Seconds()))
			}
		}
		slack := fmt.Sprintf("%.0f%% + %s", mt.rel*100, v(mt.abs))
		if mt.ceiling != nil {
			slack += fmt.Sprintf(", or at most %s", v(mt.ceiling(f.idle, c.conns)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s/min | %s | %s (slack %s) |\n", mt.name, v(f.idle), v(f.start), v(f.max), v(f.end),
			v(f.max1), v(f.max2), signed(v(f.slope)), v(f.after), verdict, slack)
	}
	kinds := func(phase int) string {
		var last *sample
		for i := range r.samples {
			if r.samples[i].phase == phase && r.samples[i].err == "" {
				last = &r.samples[i]
			}
		}
		if last == nil {
			return "?"
		}
		var ks []string
		for k := range last.kinds {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		var parts []string
		for _, k := range ks {
			parts = append(parts, fmt.Sprintf("%d %s", last.kinds[k], k))
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(&b, "\nDescriptors by kind: idle before: %s; end of the load: %s; after: %s.\n", kinds(phaseIdle), kinds(phaseLoad), kinds(phaseAfter))
	var sampleErrs []string
	for _, s := range r.samples {
		if s.err != "" {
			sampleErrs = append(sampleErrs, fmt.Sprintf("%s: %s", s.at.Round(time.Second), s.err))
		}
	}
	if len(sampleErrs) > 0 {
		fmt.Fprintf(&b, "\n%d samples failed (left out): %s\n", len(sampleErrs), strings.Join(first(sampleErrs), "; "))
	}

	// operations and calls
	b.WriteString("\n| operation of the mix | count | per second |\n|---|---|---|\n")
	for i, n := range r.tot.ops {
		fmt.Fprintf(&b, "| %s | %d | %.0f |\n", opNames[i], n, float64(n)/secs)
	}
	b.WriteString("\n| NFS procedure | calls | calls/s | p50 | p99 | max |\n|---|---|---|---|---|---|\n")
	var calls int
	for p := uint32(0); p < numProcs; p++ {
		us := slices.Clone(r.lat.us[p])
		if len(us) == 0 {
			continue
		}
		slices.Sort(us)
		calls += len(us)
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s |\n", procNames[p], len(us), float64(len(us))/secs,
			fmtUS(percentile(us, 0.50)), fmtUS(percentile(us, 0.99)), fmtUS(float64(us[len(us)-1])))
	}
	fmt.Fprintf(&b, "| all | %d | %.0f | | | |\n", calls, float64(calls)/secs)
	fmt.Fprintf(&b, "\nLatency is the client's: from sending the call to decoding its reply, through go-nfs-client, with %d client loops "+
		"and the server sharing the machine's CPUs.\n", c.conns)

	// verdict
	b.WriteString("\n")
	var problems []string
	if r.errs.total > 0 {
		problems = append(problems, fmt.Sprintf("%d errors", r.errs.total))
	}
	if len(grows) > 0 {
		problems = append(problems, "grows under load: "+strings.Join(grows, ", "))
	}
	if len(notBack) > 0 {
		problems = append(problems, "not back to the idle baseline after the clients left: "+strings.Join(notBack, ", "))
	}
	if r.exitStatus != "exit status 0" {
		problems = append(problems, "server stop: "+r.exitStatus)
	}
	if len(r.serverLog) > 0 {
		problems = append(problems, fmt.Sprintf("%d warnings/errors in the server log", len(r.serverLog)))
	}
	if len(problems) == 0 {
		fmt.Fprintf(&b, "**Verdict: pass.** No errors; RSS, heap, descriptors, goroutines and threads bounded under load; goroutines and "+
			"descriptors other than the directory cache's back to the idle baseline within %s after the clients left; the server logged no warning and exited 0 on SIGTERM.\n", dur(c.settle))
	} else {
		fmt.Fprintf(&b, "**Verdict: fail.** %s.\n", strings.Join(problems, "; "))
	}
	if len(r.serverLog) > 0 {
		b.WriteString("\nServer log (first lines at WARN or ERROR):\n\n```\n")
		for _, l := range first(r.serverLog) {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			b.WriteString(l + "\n")
		}
		b.WriteString("```\n")
	}
	if len(notBack) > 0 || len(grows) > 0 {
		b.WriteString("\nGoroutines at the end of the load, biggest groups:\n\n```\n" + strings.Join(r.groupsLoad, "\n") + "\n```\n")
		b.WriteString("\nGoroutines after the clients left, biggest groups:\n\n```\n" + strings.Join(r.groupsIdle, "\n") + "\n```\n")
	}
	return b.String()
}

func dur(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

func signed(s string) string {
	if !strings.HasPrefix(s, "-") {
		return "+" + s
	}
	return s
}
